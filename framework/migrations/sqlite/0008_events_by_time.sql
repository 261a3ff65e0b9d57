-- The events' index (0004) was led by their ids, which are hashes: every new event went to
-- another page of it, and a commit of fifty events wrote some fifty of its pages (1.5 WAL
-- frames per event at fifty events per transaction, against 0.4 led by time; modelled in
-- `bench/wal-frames.py`). Led by the event's `origin_server_ts`, new events go to its end,
-- where a commit writes a page or two. The pair names the event as before: a resent event
-- carries the same `origin_server_ts`, which its id is a hash over.
--
-- `event_ts` is that timestamp where it is an integer, else 0, as `NewInboxItem::event_ts`
-- reads it; the rows stored before are given theirs from their payloads.
ALTER TABLE inbox ADD COLUMN event_ts INTEGER;
UPDATE inbox SET event_ts = CASE
    WHEN json_valid(payload) AND json_type(payload, '$.origin_server_ts') = 'integer'
    THEN json_extract(payload, '$.origin_server_ts') ELSE 0 END
WHERE event_id IS NOT NULL;
DROP INDEX inbox_events;
CREATE UNIQUE INDEX inbox_events ON inbox (appservice_id, event_ts, event_id)
WHERE event_id IS NOT NULL;
