-- Which process awaits a request's outcome (see the PostgreSQL migration of the same name).
-- One process writes a SQLite file, so it stays NULL here; the column keeps the queries the
-- same for both.
ALTER TABLE outbox ADD COLUMN waiter TEXT;
