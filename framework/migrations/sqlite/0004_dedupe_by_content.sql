-- Synapse on SQLite starts its appservice transaction ids again from the highest one still
-- pending after a restart (element-hq/synapse#14556), so an id names a transaction only together
-- with what it carried. `digest` is that content's (see `transaction::Parsed::digest`): the same
-- id and digest is a resend, the same id with another digest a new transaction. NULL for rows
-- from before: their next use is taken as new.
ALTER TABLE transactions ADD COLUMN digest TEXT;

-- Events are unique, so an event already in the inbox is not stored (nor handled) again, in
-- whatever transaction it comes back. NULL for items that are not timeline events.
ALTER TABLE inbox ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX inbox_events ON inbox (appservice_id, event_id) WHERE event_id IS NOT NULL;
