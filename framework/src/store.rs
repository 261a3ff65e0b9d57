//! Durable state: which transactions were seen, which ghosts exist, who is in which room.
//!
//! SQLite is the embedded default. Queries are plain runtime queries (no compile-time database),
//! and the schema is brought up to date by migrations at start.

use std::str::FromStr;

use sqlx::{
    Row,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use crate::Result;

/// The store behind an appservice.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// What the store remembers about a ghost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GhostRecord {
    /// Whether the user was registered on the homeserver.
    pub registered: bool,
    /// The display name last set.
    pub display_name: Option<String>,
    /// The avatar URL last set.
    pub avatar_url: Option<String>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs migrations. `url` is a
    /// `sqlite://path` URL; `sqlite::memory:` gives a private in-memory database.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers proceed while a writer commits; NORMAL sync is durable across
            // process crashes, which is what a transaction acknowledgement promises.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 4 })
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    /// An in-memory store, for tests and benchmarks.
    pub async fn in_memory() -> Result<Self> {
        Self::connect("sqlite::memory:").await
    }

    /// Records a transaction id. Returns `false` when it was already recorded, so the caller
    /// knows the transaction is a resend.
    pub async fn record_transaction(&self, appservice_id: &str, txn_id: &str) -> Result<bool> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let result = sqlx::query(
            "INSERT INTO transactions (appservice_id, txn_id, received_at) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(appservice_id)
        .bind(txn_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// What is known about a ghost.
    pub async fn ghost(&self, user_id: &str) -> Result<Option<GhostRecord>> {
        let row = sqlx::query(
            "SELECT registered, display_name, avatar_url FROM ghosts WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| GhostRecord {
            registered: row.get::<i64, _>(0) != 0,
            display_name: row.get(1),
            avatar_url: row.get(2),
        }))
    }

    /// Remembers that a ghost is registered.
    pub async fn set_ghost_registered(&self, user_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO ghosts (user_id, registered) VALUES (?, 1)
             ON CONFLICT (user_id) DO UPDATE SET registered = 1",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers a ghost's display name.
    pub async fn set_ghost_display_name(&self, user_id: &str, name: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO ghosts (user_id, display_name) VALUES (?, ?)
             ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(user_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers a ghost's avatar.
    pub async fn set_ghost_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO ghosts (user_id, avatar_url) VALUES (?, ?)
             ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url",
        )
        .bind(user_id)
        .bind(url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The membership we last saw or made for `user_id` in `room_id`.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT membership FROM memberships WHERE room_id = ? AND user_id = ?")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records a membership.
    pub async fn set_membership(
        &self,
        room_id: &str,
        user_id: &str,
        membership: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, membership) VALUES (?, ?, ?)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(membership)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The connection pool, for plugins that keep tables of their own.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transactions_are_recorded_once_per_appservice() {
        let store = Store::in_memory().await.unwrap();
        assert!(store.record_transaction("a", "1").await.unwrap());
        assert!(!store.record_transaction("a", "1").await.unwrap());
        assert!(store.record_transaction("b", "1").await.unwrap());
    }

    #[tokio::test]
    async fn ghosts_and_memberships_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        {
            let store = Store::connect(&url).await.unwrap();
            store.set_ghost_registered("@g:x").await.unwrap();
            store
                .set_ghost_display_name("@g:x", Some("G"))
                .await
                .unwrap();
            store.set_membership("!r", "@g:x", "join").await.unwrap();
            assert!(store.record_transaction("a", "7").await.unwrap());
        }
        let store = Store::connect(&url).await.unwrap();
        let ghost = store.ghost("@g:x").await.unwrap().unwrap();
        assert!(ghost.registered);
        assert_eq!(ghost.display_name.as_deref(), Some("G"));
        assert_eq!(ghost.avatar_url, None);
        assert_eq!(
            store.membership("!r", "@g:x").await.unwrap().as_deref(),
            Some("join")
        );
        assert!(!store.record_transaction("a", "7").await.unwrap());
        assert_eq!(store.ghost("@nobody:x").await.unwrap(), None);
    }
}
