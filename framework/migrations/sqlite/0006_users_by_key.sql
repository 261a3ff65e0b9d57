-- Ghosts and memberships are found only by their keys, so, as transaction names (0005), they
-- are kept in the b-tree of that key: a table with a primary key that is not its rowid is two
-- b-trees, and every ghost registered, and every join, wrote to both.
CREATE TABLE ghosts_by_key (
    user_id TEXT PRIMARY KEY NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0,
    display_name TEXT,
    avatar_url TEXT
) WITHOUT ROWID;
INSERT INTO ghosts_by_key (user_id, registered, display_name, avatar_url)
SELECT user_id, registered, display_name, avatar_url FROM ghosts;
DROP TABLE ghosts;
ALTER TABLE ghosts_by_key RENAME TO ghosts;

CREATE TABLE memberships_by_key (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
INSERT INTO memberships_by_key (room_id, user_id, membership)
SELECT room_id, user_id, membership FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_by_key RENAME TO memberships;
