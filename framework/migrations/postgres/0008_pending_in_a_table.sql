-- PostgreSQL dialect of migrations/sqlite/0009_pending_in_a_table.sql: the items waiting to be
-- handled are rows of a table of their own rather than a column of the items' rows, so that
-- both backends keep one shape and the store one set of queries. Processes sharing the database
-- each have their work in flight there, so a queue's items are found through an index rather
-- than by reading the table through. Handled items are pruned by when they were received,
-- hence the index on that time in place of the one on `done_at`.
DROP INDEX inbox_pending;
DROP INDEX inbox_done;
CREATE TABLE inbox_pending (
    seq BIGINT PRIMARY KEY,
    appservice_id TEXT NOT NULL,
    queue_key TEXT NOT NULL
);
CREATE INDEX inbox_pending_by_queue ON inbox_pending (appservice_id, queue_key, seq);
INSERT INTO inbox_pending (seq, appservice_id, queue_key)
SELECT seq, appservice_id, queue_key FROM inbox WHERE done_at IS NULL;
ALTER TABLE inbox DROP COLUMN done_at;
CREATE INDEX inbox_received ON inbox (received_at);
CREATE FUNCTION inbox_pending_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_pending (seq, appservice_id, queue_key)
    VALUES (NEW.seq, NEW.appservice_id, NEW.queue_key);
    RETURN NULL;
END
$$;
CREATE TRIGGER inbox_pending_on_insert AFTER INSERT ON inbox
FOR EACH ROW EXECUTE FUNCTION inbox_pending_on_insert();
