use sqlx::Row;

use super::{Backlog, Store, now_ms};
use crate::Result;

/// Where an outbox item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxState {
    /// Not yet accepted by the homeserver.
    Pending,
    /// Accepted.
    Sent,
    /// Refused for good.
    Failed,
}

/// A request waiting in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    /// Its position: requests of one queue are sent in this order.
    pub seq: i64,
    /// The queue: a room id, or `user:<user id>` for profile changes.
    pub queue_key: String,
    /// Who sends it.
    pub user_id: String,
    /// Which of the user's devices, if any.
    pub device_id: Option<String>,
    /// The request, as JSON.
    pub op: String,
    /// How often it was tried.
    pub attempts: i64,
}

impl Store {
    /// Adds a request to the outbox, which the process `waiter` awaits, if any (where
    /// processes share the store): another process that sends it tells that one its outcome
    /// (see [`Store::outbox_finish`]). Returns its sequence number.
    pub(crate) async fn outbox_push(
        &self,
        appservice_id: &str,
        queue_key: &str,
        user_id: &str,
        device_id: Option<&str>,
        op: &str,
        waiter: Option<&str>,
    ) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO outbox (appservice_id, queue_key, user_id, device_id, op, created_at, waiter)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(appservice_id)
        .bind(queue_key)
        .bind(user_id)
        .bind(device_id)
        .bind(op)
        .bind(now_ms())
        .bind(waiter)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(row.get(0))
    }

    /// Up to `limit` pending requests of one queue after `after_seq`, in order.
    pub(crate) async fn outbox_next(
        &self,
        appservice_id: &str,
        queue_key: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>> {
        // A bound LIMIT makes SQLite re-prepare the statement on every call (seen in a
        // profile as a fifth of the work); an integer spliced in is safe.
        let sql = format!(
            "SELECT seq, queue_key, user_id, device_id, op, attempts FROM outbox
             WHERE appservice_id = $1 AND queue_key = $2 AND state = 'pending' AND seq > $3
             ORDER BY seq LIMIT {limit}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(appservice_id)
            .bind(queue_key)
            .bind(after_seq)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| OutboxItem {
                seq: r.get(0),
                queue_key: r.get(1),
                user_id: r.get(2),
                device_id: r.get(3),
                op: r.get(4),
                attempts: r.get(5),
            })
            .collect())
    }

    /// Counts one more try.
    pub(crate) async fn outbox_attempted(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1 WHERE seq = $1")
            .bind(seq)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Records the outcome of a request. Returns the process that awaits it, if one said so
    /// ([`Store::outbox_push`], [`Store::outbox_await`]): read in the same statement,
    /// so a waiter that registers concurrently either is returned here or finds the outcome
    /// already recorded.
    pub(crate) async fn outbox_finish(
        &self,
        seq: i64,
        state: OutboxState,
        event_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<Option<String>> {
        let state = match state {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        };
        let row = sqlx::query(
            "UPDATE outbox SET state = $1, event_id = $2, error = $3, finished_at = $4 WHERE seq = $5
             RETURNING waiter",
        )
        .bind(state)
        .bind(event_id)
        .bind(error)
        .bind(now_ms())
        .bind(seq)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Says that the process `waiter` awaits the outcome of request `seq`, when it is still
    /// pending; whether it was (otherwise its outcome is recorded already, or it is gone).
    pub(crate) async fn outbox_await(&self, seq: i64, waiter: &str) -> Result<bool> {
        let updated =
            sqlx::query("UPDATE outbox SET waiter = $1 WHERE seq = $2 AND state = 'pending'")
                .bind(waiter)
                .bind(seq)
                .execute(&mut *self.conn().await?)
                .await?
                .rows_affected();
        Ok(updated > 0)
    }

    /// Where a request stands, the event id it produced, and the error that ended it.
    pub(crate) async fn outbox_state(
        &self,
        seq: i64,
    ) -> Result<Option<(OutboxState, Option<String>, Option<String>)>> {
        let row = sqlx::query("SELECT state, event_id, error FROM outbox WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| {
            let state = match r.get::<String, _>(0).as_str() {
                "sent" => OutboxState::Sent,
                "failed" => OutboxState::Failed,
                _ => OutboxState::Pending,
            };
            (state, r.get(1), r.get(2))
        }))
    }

    /// Queues that have pending requests, oldest first.
    pub(crate) async fn outbox_pending_queues(
        &self,
        appservice_id: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT queue_key FROM outbox WHERE appservice_id = $1 AND state = 'pending'
             GROUP BY queue_key ORDER BY MIN(seq) LIMIT $2",
        )
        .bind(appservice_id)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// How many requests wait to be sent.
    pub async fn outbox_depth(&self, appservice_id: &str) -> Result<i64> {
        Ok(self.outbox_backlog(appservice_id).await?.depth)
    }

    /// How many requests wait to be sent, and since when the oldest has.
    pub async fn outbox_backlog(&self, appservice_id: &str) -> Result<Backlog> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(created_at) FROM outbox
             WHERE appservice_id = $1 AND state = 'pending'",
        )
        .bind(appservice_id)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(Backlog::from_row(&row))
    }
}
