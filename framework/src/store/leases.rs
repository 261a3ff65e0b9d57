use std::time::Duration;

use super::{Backend, Store, now_ms};
use crate::Result;

impl Store {
    /// Takes or renews the lease on a queue for `owner`, for `ttl`. Returns whether `owner`
    /// holds it now. On SQLite, where one process owns the database, it is always granted.
    pub async fn lease(
        &self,
        scope: &str,
        queue_key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool> {
        if self.backend == Backend::Sqlite {
            return Ok(true);
        }
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO queue_leases (appservice_id, queue_key, owner, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (appservice_id, queue_key) DO UPDATE
             SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE queue_leases.owner = excluded.owner OR queue_leases.expires_at < $5",
        )
        .bind(scope)
        .bind(queue_key)
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives a lease back.
    pub async fn release(&self, scope: &str, queue_key: &str, owner: &str) -> Result<()> {
        if self.backend == Backend::Sqlite {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM queue_leases WHERE appservice_id = $1 AND queue_key = $2 AND owner = $3",
        )
        .bind(scope)
        .bind(queue_key)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
