-- Transaction ids the homeserver has sent us. Synapse resends a transaction with the same id
-- after a timeout or error, so remembering ids is what makes handling exactly-once.
-- Scoped by appservice id: the ids are one sequence shared by all appservices of a homeserver.
CREATE TABLE transactions (
    appservice_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (appservice_id, txn_id)
);
CREATE INDEX transactions_received ON transactions (received_at);

-- The durable inbox: every item of a transaction, committed before the transaction is
-- answered, and marked done once its handlers finished. Items of one queue (a room) are handled
-- in `seq` order.
CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    appservice_id TEXT NOT NULL,
    queue_key TEXT NOT NULL,
    -- `<txn id>.<position>`: stable across re-handling, so it keys idempotent effects.
    item_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    done_at INTEGER
);
CREATE INDEX inbox_pending ON inbox (appservice_id, queue_key, seq) WHERE done_at IS NULL;
CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;

-- The durable outbox: every request to the homeserver, in order per queue (a room, or a user
-- for profile changes), kept until it succeeded or failed for good.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    appservice_id TEXT NOT NULL,
    queue_key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT,
    op TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    event_id TEXT,
    error TEXT,
    finished_at INTEGER
);
CREATE INDEX outbox_pending ON outbox (appservice_id, queue_key, seq) WHERE state = 'pending';
CREATE INDEX outbox_finished ON outbox (finished_at) WHERE state <> 'pending';

-- Which process handles which queue, so that several processes sharing one database never
-- handle a room at the same time. A lease that is not renewed expires.
CREATE TABLE queue_leases (
    appservice_id TEXT NOT NULL,
    queue_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (appservice_id, queue_key)
);

-- Users we have registered on the homeserver, and the profile we last set for each, so that
-- registration happens once and profile updates only when something changed.
CREATE TABLE ghosts (
    user_id TEXT PRIMARY KEY NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0,
    display_name TEXT,
    avatar_url TEXT
);

-- Rooms each of our users is in as far as we know, so sends do not re-join every time.
CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
