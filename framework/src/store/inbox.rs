use sqlx::Row;

use super::{Store, now_ms};
use crate::Result;

/// An item to put in the inbox.
#[derive(Clone, Debug)]
pub struct NewInboxItem {
    /// The queue: a room id, or `""` for items that belong to no room.
    pub queue_key: String,
    /// Its position in the transaction.
    pub index: usize,
    /// What kind of item (`timeline`, `ephemeral`, `to_device`, `device_lists`).
    pub kind: &'static str,
    /// The item's JSON.
    pub payload: String,
}

/// An item read back from the inbox.
#[derive(Clone, Debug)]
pub struct InboxItem {
    /// Its position: items of one queue are handled in this order.
    pub seq: i64,
    /// The queue.
    pub queue_key: String,
    /// `<txn id>.<position>`, the same however often the item is handled.
    pub item_key: String,
    /// The kind.
    pub kind: String,
    /// The JSON.
    pub payload: String,
}

/// Rows per multi-row insert; SQLite allows 32,766 bound parameters and each row binds six.
const INSERT_CHUNK: usize = 200;

impl Store {
    /// Stores a transaction's items and its id in one database transaction, before the
    /// homeserver is answered. Returns `false`, storing nothing, when the id was seen before.
    pub async fn receive_transaction(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: &[NewInboxItem],
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO transactions (appservice_id, txn_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(appservice_id)
        .bind(txn_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        for chunk in items.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO inbox (appservice_id, queue_key, item_key, kind, payload, received_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for item in chunk {
                query = query
                    .bind(appservice_id)
                    .bind(&item.queue_key)
                    .bind(format!("{txn_id}.{}", item.index))
                    .bind(item.kind)
                    .bind(&item.payload)
                    .bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` unhandled items of one queue after `after_seq`, in order.
    pub async fn inbox_next(
        &self,
        appservice_id: &str,
        queue_key: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<InboxItem>> {
        // A bound LIMIT makes SQLite re-prepare the statement on every call (seen in a
        // profile as a fifth of the work); an integer spliced in is safe.
        let sql = format!(
            "SELECT seq, queue_key, item_key, kind, payload FROM inbox
             WHERE appservice_id = $1 AND queue_key = $2 AND done_at IS NULL AND seq > $3
             ORDER BY seq LIMIT {limit}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(appservice_id)
            .bind(queue_key)
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| InboxItem {
                seq: r.get(0),
                queue_key: r.get(1),
                item_key: r.get(2),
                kind: r.get(3),
                payload: r.get(4),
            })
            .collect())
    }

    /// Marks an item handled.
    pub async fn inbox_done(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE inbox SET done_at = $1 WHERE seq = $2")
            .bind(now_ms())
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks several items handled, in one statement.
    pub async fn inbox_done_many(&self, seqs: &[i64]) -> Result<()> {
        for chunk in seqs.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE inbox SET done_at = $1 WHERE seq IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Queues that have unhandled items, oldest first.
    pub async fn inbox_pending_queues(
        &self,
        appservice_id: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT queue_key FROM inbox WHERE appservice_id = $1 AND done_at IS NULL
             GROUP BY queue_key ORDER BY MIN(seq) LIMIT $2",
        )
        .bind(appservice_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// How many items wait to be handled.
    pub async fn inbox_depth(&self, appservice_id: &str) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM inbox WHERE appservice_id = $1 AND done_at IS NULL")
                .bind(appservice_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.get(0))
    }
}
