-- Which process awaits a request's outcome, where processes share the database: the one that
-- records the outcome tells it with a `NOTIFY` when it is another (docs/scaling.md), instead
-- of the waiter looking in the table for it. NULL: nobody said it waits.
ALTER TABLE outbox ADD COLUMN waiter TEXT;
