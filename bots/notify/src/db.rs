//! The bot's tables: webhooks, forwarding targets and their queue, feeds and the entries seen.
//!
//! Timestamps are milliseconds since the Unix epoch; flags are 0/1 integers, which read the
//! same through sqlx's `Any` driver on SQLite and PostgreSQL.

use rand::Rng;
use sha2::{Digest, Sha256};
use trestle::{Appservice, store::Migration};

use crate::Result;

/// The first schema; `$seq` is the dialect's auto-increment key column type.
macro_rules! schema_v1 {
    ($seq:literal) => {
        concat!(
            "
CREATE TABLE notify_hooks (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    name TEXT NOT NULL,
    avatar_url TEXT,
    template TEXT,
    secret TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, name)
);
CREATE TABLE notify_dms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
CREATE TABLE notify_forwards (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (room_id, url)
);
CREATE TABLE notify_deliveries (
    seq ",
            $seq,
            ",
    forward_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (forward_id, event_id)
);
CREATE TABLE notify_feeds (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    interval_secs BIGINT NOT NULL,
    etag TEXT,
    last_modified TEXT,
    next_poll_at BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    failing_since BIGINT,
    failure_notified BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, url)
);
CREATE TABLE notify_feed_items (
    feed_id TEXT NOT NULL,
    item_key TEXT NOT NULL,
    state BIGINT NOT NULL,
    content TEXT,
    txn_id TEXT,
    position BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (feed_id, item_key)
)"
        )
    };
}

/// A webhook's recent calls (`hooks/calls.rs`); `$seq` as in `schema_v1`.
macro_rules! hook_calls {
    ($seq:literal) => {
        concat!(
            "
CREATE TABLE notify_hook_calls (
    seq ",
            $seq,
            ",
    hook_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    status BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    request TEXT NOT NULL,
    message TEXT
);
CREATE INDEX notify_hook_calls_by_hook ON notify_hook_calls (hook_id, seq)"
        )
    };
}

/// A feed entry's digest of what its message shows, and the event that message became: an
/// entry changed after it was posted is edited in place (`feeds/poll.rs`).
const FEED_EDITS: &str = "
ALTER TABLE notify_feed_items ADD COLUMN entry_digest TEXT;
ALTER TABLE notify_feed_items ADD COLUMN event_id TEXT";

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: schema_v1!("INTEGER PRIMARY KEY AUTOINCREMENT"),
        postgres: schema_v1!("BIGSERIAL PRIMARY KEY"),
    },
    Migration {
        version: 2,
        sqlite: FEED_EDITS,
        postgres: FEED_EDITS,
    },
    Migration {
        version: 3,
        sqlite: hook_calls!("INTEGER PRIMARY KEY AUTOINCREMENT"),
        postgres: hook_calls!("BIGSERIAL PRIMARY KEY"),
    },
];

/// Serialises this process's migrations: the web routes, the handlers and the services may
/// all be first to touch the tables.
static MIGRATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Brings the bot's tables up to date; cheap once done.
pub(crate) async fn ready(app: &Appservice) -> Result<()> {
    let _guard = MIGRATING.lock().await;
    app.store().migrate("notify", MIGRATIONS).await?;
    Ok(())
}

/// The store's timestamp unit, so this bot's columns agree with the framework's.
pub(crate) use trestle::store::now_ms;

/// A random string of `len` lowercase letters and digits: ids in ghost localparts.
pub(crate) fn random_id(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A secret nobody can guess: 32 random bytes, hex.
pub(crate) fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// SHA-256 of `text`, hex: a fixed-size key for anything a remote server chose.
pub(crate) fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// How to find and delete one kind of a room's subscriptions (a feed, a forward) with what
/// hangs off it.
pub(crate) struct Removal {
    /// Selects the id (and a label) by `room_id = $1 AND url = $2`.
    pub find: &'static str,
    /// Deletes the dependent rows by `$1` = the id.
    pub children: &'static str,
    /// Deletes the subscription by `id = $1`.
    pub parent: &'static str,
}

/// Deletes the subscription of `room` to `url` and its dependent rows in one transaction;
/// returns its label (the second column of `find`), or `None` if there was none.
pub(crate) async fn remove(
    app: &Appservice,
    removal: &Removal,
    room: &str,
    url: &str,
) -> Result<Option<String>> {
    use sqlx::Row;
    let Some(row) = sqlx::query(removal.find)
        .bind(room)
        .bind(url)
        .fetch_optional(app.store().pool())
        .await?
    else {
        return Ok(None);
    };
    let (id, label): (String, String) = (row.get(0), row.get(1));
    let mut tx = app.store().begin().await?;
    for sql in [removal.children, removal.parent] {
        sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Some(label))
}

/// The rows `sql` selects for `room` (bound as `$1`).
pub(crate) async fn rows_of_room(
    app: &Appservice,
    sql: &'static str,
    room: &str,
) -> Result<Vec<sqlx::any::AnyRow>> {
    Ok(sqlx::query(sql)
        .bind(room)
        .fetch_all(app.store().pool())
        .await?)
}
