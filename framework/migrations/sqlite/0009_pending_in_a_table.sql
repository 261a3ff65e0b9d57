-- Which inbox items wait to be handled was a column of their rows, `done_at`, and a partial
-- index over the rows where it was NULL. Marking an item done rewrote its row, and so the
-- b-tree page that held it: rows are a few hundred bytes, so the marks of a commit rewrote about
-- as many pages as its new rows wrote, once more, to the WAL (`bench/wal-frames.py`); and the
-- index took an insert and a delete of a text key per item. With both taken out (an
-- experiment), echo B=50 used 17% less CPU (`docs/benchmarks.md`, "Session 36").
--
-- Now the items waiting are rows of their own, in a table that holds only them, keyed by their
-- seqs: a row goes in at the table's end with its item (the trigger, for every path that stores
-- items) and out, found by its seq, when the item is handled. The table stays as small as the
-- work in flight (`max_in_flight`, 256 items by default), so the few pages a commit writes there
-- are the same few each time, and a queue's items are found by reading it through.
--
-- Handled items are pruned by when they were received (there is no time they were handled).
DROP INDEX inbox_pending;
CREATE TABLE inbox_pending (
    seq INTEGER PRIMARY KEY,
    appservice_id TEXT NOT NULL,
    queue_key TEXT NOT NULL
);
INSERT INTO inbox_pending (seq, appservice_id, queue_key)
SELECT seq, appservice_id, queue_key FROM inbox WHERE done_at IS NULL;
ALTER TABLE inbox DROP COLUMN done_at;
CREATE TRIGGER inbox_pending_on_insert AFTER INSERT ON inbox BEGIN
    INSERT INTO inbox_pending (seq, appservice_id, queue_key)
    VALUES (new.seq, new.appservice_id, new.queue_key);
END;
