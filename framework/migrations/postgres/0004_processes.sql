-- The processes sharing this store (docs/scaling.md): each writes its row when it starts and
-- at every renewal of its leases, and deletes it when it stops cleanly. `trestle status` reads
-- them beside the leases; `owner` is what the process's leases name.
CREATE TABLE processes (
    appservice_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Whether it runs end-to-end encryption, whose state is per process: a second is refused.
    encryption BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (appservice_id, owner)
);
