-- The items waiting (0009) were written to `inbox_pending` by a trigger on `inbox`. A trigger
-- runs a program of its own for every row, and with the rows it wrote it cost about a twentieth
-- of echo B=50's CPU (`docs/benchmarks.md`, "Session 37"). Every SQLite script that stores items
-- now writes their waiting rows itself, in one statement after its insert: the rows of the
-- inbox in the seqs its new transactions were given, which no other transaction's items take
-- (the journal hands each its own). PostgreSQL keeps its trigger.
DROP TRIGGER inbox_pending_on_insert;
