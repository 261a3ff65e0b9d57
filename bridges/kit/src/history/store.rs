//! The history table: per chat, where a catch-up starts and whether its portal was told of a
//! gap. A namespace of its own (`bridge_history`), so its versions never meet the kit's
//! other tables'.

use sqlx::Row;
use trestle::store::{Migration, now_ms};

use super::super::{NetworkResult, store::BridgeStore};

/// Version 1: `newest_id` is the newest remote message bridged in the chat (the anchor of
/// the next catch-up); `gap_told` is set when the portal was told it may miss messages, and
/// cleared when a message is bridged there again (one notice per gap, not per reconnect).
const SCHEMA_V1: &str = "
    CREATE TABLE bridge_history (
        appservice TEXT NOT NULL, chat_id TEXT NOT NULL, newest_id TEXT,
        gap_told BIGINT NOT NULL DEFAULT 0, updated_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, chat_id))";

/// The history table's schema, applied under the namespace `bridge_history`.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sqlite: SCHEMA_V1,
    postgres: SCHEMA_V1,
}];

impl BridgeStore {
    /// The newest remote message bridged in a chat, if any, and whether its gap was told.
    pub(crate) async fn history_mark(
        &self,
        chat_id: &str,
    ) -> NetworkResult<(Option<String>, bool)> {
        let row = sqlx::query(
            "SELECT newest_id, gap_told FROM bridge_history WHERE appservice = $1 AND chat_id = $2",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row
            .map(|r| (r.get::<Option<String>, _>(0), r.get::<i64, _>(1) != 0))
            .unwrap_or((None, false)))
    }

    /// A remote message was bridged in a chat: the next catch-up starts after it, and a gap
    /// after it is news again.
    pub(crate) async fn history_bridged(
        &self,
        chat_id: &str,
        remote_id: &str,
    ) -> NetworkResult<()> {
        sqlx::query(
            "INSERT INTO bridge_history (appservice, chat_id, newest_id, gap_told, updated_at)
             VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (appservice, chat_id) DO UPDATE SET
               newest_id = excluded.newest_id, gap_told = 0, updated_at = excluded.updated_at",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .bind(remote_id)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// The chat's portal was told it may miss messages.
    pub(crate) async fn history_gap_told(&self, chat_id: &str) -> NetworkResult<()> {
        sqlx::query(
            "INSERT INTO bridge_history (appservice, chat_id, newest_id, gap_told, updated_at)
             VALUES ($1, $2, NULL, 1, $3)
             ON CONFLICT (appservice, chat_id) DO UPDATE SET
               gap_told = 1, updated_at = excluded.updated_at",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Forgets a chat's history marks (its portal was unlinked).
    pub(crate) async fn forget_history(&self, chat_id: &str) -> NetworkResult<()> {
        sqlx::query("DELETE FROM bridge_history WHERE appservice = $1 AND chat_id = $2")
            .bind(&self.appservice)
            .bind(chat_id)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// When a chat's portal was made (milliseconds since the Unix epoch), if it has one.
    pub(crate) async fn portal_created_at(&self, chat_id: &str) -> NetworkResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT created_at FROM bridge_portals WHERE appservice = $1 AND chat_id = $2",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .fetch_optional(self.store.pool())
        .await?)
    }
}
