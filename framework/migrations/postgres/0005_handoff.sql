-- Work one process hands to whichever process holds a lease (docs/scaling.md): a bridge's
-- Matrix events handled where its logins' connections are not, sent by the process that holds
-- them. Taken in `seq` order per `order_key`, deleted once done; `item_key` keeps an item
-- handed twice (its handler ran again after a crash) once. Only processes that share the store
-- hand work over, so SQLite has no such table.
CREATE TABLE handoff (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    appservice_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    order_key TEXT NOT NULL,
    item_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX handoff_order ON handoff (appservice_id, queue, order_key, seq);
CREATE UNIQUE INDEX handoff_item ON handoff (appservice_id, queue, item_key);
