-- Every b-tree a commit touches is one more 4 KiB page written to the WAL, and receiving a
-- transaction of one event wrote eight. These three earned their pages only when pruning:
-- - `inbox` loses AUTOINCREMENT, whose counter row in `sqlite_sequence` is rewritten by every
--   insert. A seq is still never handed out twice: `Store::prune` keeps the newest row, so the
--   largest seq stays in the table.
-- - `inbox_done` and `transactions_received` go: rows are inserted in the order they arrive, so
--   pruning walks from the oldest row instead of looking times up in an index.
CREATE TABLE inbox_lean (
    seq INTEGER PRIMARY KEY,
    appservice_id TEXT NOT NULL,
    queue_key TEXT NOT NULL,
    item_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    done_at INTEGER
);
INSERT INTO inbox_lean (seq, appservice_id, queue_key, item_key, kind, payload, received_at, done_at)
SELECT seq, appservice_id, queue_key, item_key, kind, payload, received_at, done_at FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_lean RENAME TO inbox;
CREATE INDEX inbox_pending ON inbox (appservice_id, queue_key, seq) WHERE done_at IS NULL;
DROP INDEX transactions_received;
