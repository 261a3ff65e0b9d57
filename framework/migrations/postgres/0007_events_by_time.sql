-- PostgreSQL dialect of migrations/sqlite/0008_events_by_time.sql: the events' index led by
-- the event's `origin_server_ts`, so that new events go to its end rather than each to a page
-- of its own. The pair names the event as the id alone did: a resent event carries the same
-- `origin_server_ts`, which its id is a hash over.
--
-- `event_ts` is that timestamp where it is an integer, else 0, as `NewInboxItem::event_ts`
-- reads it. The rows stored before are given theirs from their payloads. PostgreSQL reads no
-- JSON holding `\u0000` into text, even to reach another key, so those escapes are made
-- spaces first (the timestamp is a number, never a string); a payload it cannot read at all
-- (a lone surrogate escape) is given 0, which matters only if that very event comes back.
CREATE FUNCTION pg_temp.trestle_event_ts(payload TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    ts JSON;
BEGIN
    ts := replace(payload, '\u0000', '\u0020')::json -> 'origin_server_ts';
    IF json_typeof(ts) = 'number' AND ts::text ~ '^-?[0-9]{1,19}$' THEN
        RETURN ts::text::bigint;
    END IF;
    RETURN 0;
EXCEPTION WHEN OTHERS THEN
    -- Out of range for a BIGINT, or not JSON that PostgreSQL reads.
    RETURN 0;
END $$;

ALTER TABLE inbox ADD COLUMN event_ts BIGINT;
UPDATE inbox SET event_ts = pg_temp.trestle_event_ts(payload) WHERE event_id IS NOT NULL;
DROP INDEX inbox_events;
CREATE UNIQUE INDEX inbox_events ON inbox (appservice_id, event_ts, event_id)
WHERE event_id IS NOT NULL;
