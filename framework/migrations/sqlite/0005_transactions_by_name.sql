-- Naming events by id (0004) added a b-tree to every commit. This takes one away: a table with
-- a primary key that is not its rowid is two b-trees, the rows and the key's index, and every
-- received transaction wrote a page of each. Without a rowid the rows live in the key's b-tree,
-- which is what every lookup uses. Pruning, which walked the rows in the order they came, now
-- reads the table through (`Store::prune`): once every ten minutes, against a page fewer in
-- every commit.
CREATE TABLE transactions_by_name (
    appservice_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    digest TEXT,
    PRIMARY KEY (appservice_id, txn_id)
) WITHOUT ROWID;
INSERT INTO transactions_by_name (appservice_id, txn_id, received_at, digest)
SELECT appservice_id, txn_id, received_at, digest FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_by_name RENAME TO transactions;
