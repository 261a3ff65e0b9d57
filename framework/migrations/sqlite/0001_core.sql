-- Transaction ids the homeserver has sent us. Synapse resends a transaction with the same id
-- after a timeout or error, so remembering ids is what makes handling exactly-once.
-- The id is scoped by the appservice id: transaction ids are a sequence shared by all
-- appservices of a homeserver, and a regenerated registration must not collide with old ids.
CREATE TABLE transactions (
    appservice_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (appservice_id, txn_id)
);

-- Users we have registered on the homeserver, and the profile we last set for each, so that
-- registration happens once and profile updates only when something changed.
CREATE TABLE ghosts (
    user_id TEXT PRIMARY KEY NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0,
    display_name TEXT,
    avatar_url TEXT
);

-- Rooms each user has joined as far as we know, so sends do not re-join every time.
CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
