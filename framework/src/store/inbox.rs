use sqlx::Row;

use super::{
    Store,
    conn::{Conn, script_on},
    now_ms,
};
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

/// The receive script on SQLite after its first statements (see `Store::receive_in_one_trip`):
/// either the store numbers the items and names them back (`RETURNING`), or they come
/// numbered from `$6` on (by the journal, `journal.rs`, which numbers every inbox item on a
/// file). Marks to write go in `$7`.
macro_rules! receive_items {
    ($seq_column:literal, $seq:literal, $returning:literal) => {
        concat!(
            "INSERT INTO transactions (appservice_id, txn_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING; \
             INSERT INTO inbox (",
            $seq_column,
            "appservice_id, queue_key, item_key, kind, payload, received_at) \
             SELECT ",
            $seq,
            "$1, value ->> 0, $2 || '.' || (value ->> 1), value ->> 2, \
             CAST(substr($5, value ->> 3, value ->> 4) AS TEXT), $3 \
             FROM json_each($4) WHERE changes() = 1 ORDER BY key",
            $returning,
            "; COMMIT;"
        )
    };
}

const RECEIVE: &str = concat!(
    "BEGIN; ",
    receive_items!("", "", " RETURNING seq, item_key")
);

/// The same, first marking handled the items whose `seq` is in the JSON array `$7`.
const RECEIVE_MARKING_DONE: &str = concat!(
    "BEGIN; UPDATE inbox SET done_at = $3 WHERE seq IN (SELECT value FROM json_each($7)); ",
    receive_items!("", "", " RETURNING seq, item_key")
);

/// The items numbered from `$6`.
const RECEIVE_NUMBERED: &str = concat!("BEGIN; ", receive_items!("seq, ", "$6 + key, ", ""));

/// The same, first marking handled the items whose `seq` is in the JSON array `$7`.
const RECEIVE_NUMBERED_MARKING_DONE: &str = concat!(
    "BEGIN; UPDATE inbox SET done_at = $3 WHERE seq IN (SELECT value FROM json_each($7)); ",
    receive_items!("seq, ", "$6 + key, ", "")
);

impl Store {
    /// Stores a transaction's items and its id in one database transaction, before the
    /// homeserver is answered. Returns `false`, storing nothing, when the id was seen before.
    pub async fn receive_transaction(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: &[NewInboxItem],
    ) -> Result<bool> {
        Ok(self
            .receive_transaction_items(appservice_id, txn_id, items.to_vec())
            .await?
            .is_some())
    }

    /// As [`Store::receive_transaction`], giving back the stored items with their sequence
    /// numbers, in the order given (`None` for a transaction seen before), so they can be
    /// handled without being read back.
    pub async fn receive_transaction_items(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: Vec<NewInboxItem>,
    ) -> Result<Option<Vec<InboxItem>>> {
        self.receive_and_mark_done(appservice_id, txn_id, items, &[])
            .await
    }

    /// As [`Store::receive_transaction_items`], marking the items `done` handled in the same
    /// database transaction (also when the transaction id was seen before).
    pub(crate) async fn receive_and_mark_done(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: Vec<NewInboxItem>,
        done: &[i64],
    ) -> Result<Option<Vec<InboxItem>>> {
        let now = now_ms();
        if self.backend == super::Backend::Sqlite && !items.is_empty() {
            let seqs = self
                .receive_in_one_trip(appservice_id, txn_id, &items, done, now)
                .await?;
            if seqs.is_empty() {
                return Ok(None);
            }
            return Ok(Some(stored_items(txn_id, items, seqs)));
        }
        let mut tx = self.begin().await?;
        mark_done(&mut tx, done).await?;
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
            tx.commit().await?;
            return Ok(None);
        }
        let mut seqs = Vec::with_capacity(items.len());
        for chunk in items.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO inbox (appservice_id, queue_key, item_key, kind, payload, received_at) VALUES ",
            );
            push_rows(&mut sql, chunk.len(), 0);
            // The item key names the row, since neither dialect promises the order of
            // RETURNING rows.
            sql.push_str(" RETURNING seq, item_key");
            let query = bind_rows(
                sqlx::query(sqlx::AssertSqlSafe(sql)),
                appservice_id,
                txn_id,
                chunk,
                now,
            );
            for row in query.fetch_all(&mut *tx).await? {
                let seq: i64 = row.get(0);
                let key: String = row.get(1);
                seqs.push((key, seq));
            }
        }
        tx.commit().await?;
        let seqs = in_item_order(txn_id, &items, seqs)?;
        Ok(Some(stored_items(txn_id, items, seqs)))
    }

    /// The same on SQLite, in one trip to the database: the transaction id and the items in
    /// one script, the items inserted only if the id was new (`changes()` still counts the
    /// statement before). Each statement through sqlx is a round trip to its connection
    /// thread, and at one event per transaction those trips were most of the cost. Returns
    /// the items' sequence numbers in their order, none for a transaction seen before.
    async fn receive_in_one_trip(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: &[NewInboxItem],
        done: &[i64],
        now: i64,
    ) -> Result<Vec<i64>> {
        // The items travel as one JSON array, so that one statement, prepared once, serves
        // every transaction size: preparing a statement of 50 rows of parameters cost more
        // than inserting them (a sixth of all the work in a profile). Their payloads travel
        // apart, one after another in a blob cut with `substr` (by bytes, on a blob): as
        // strings inside the array they were escaped here and unescaped by SQLite, a tenth of
        // the receive path at 50 events per transaction.
        let mut payloads = Vec::with_capacity(items.iter().map(|i| i.payload.len()).sum());
        let rows: Vec<(&str, usize, &str, usize, usize)> = items
            .iter()
            .map(|i| {
                let start = payloads.len() + 1;
                payloads.extend_from_slice(i.payload.as_bytes());
                (
                    i.queue_key.as_str(),
                    i.index,
                    i.kind,
                    start,
                    i.payload.len(),
                )
            })
            .collect();
        let rows = serde_json::to_string(&rows)?;
        let done = if done.is_empty() {
            None
        } else {
            Some(serde_json::to_string(done)?)
        };
        let mut conn = self.conn().await?;
        // Where the journal numbers the inbox's items (this process is the file's one writer),
        // the store sends back one result per statement instead of one more per item.
        let first = match (&conn, &self.journal) {
            (Conn::Held(_), Some(journal)) => Some(journal.reserve(items.len())),
            _ => None,
        };
        // Fixed texts, so that each stays prepared. The marks go first: `changes()` must count
        // the transaction id's insert.
        let script = match (first.is_some(), done.is_some()) {
            (true, true) => RECEIVE_NUMBERED_MARKING_DONE,
            (true, false) => RECEIVE_NUMBERED,
            (false, true) => RECEIVE_MARKING_DONE,
            (false, false) => RECEIVE,
        };
        let query = sqlx::query(script)
            .bind(appservice_id)
            .bind(txn_id)
            .bind(now)
            .bind(rows)
            .bind(payloads)
            .bind(first)
            .bind(done);
        let results = script_on(&mut conn, query).await?;
        let Some(first) = first else {
            let returned: Vec<(String, i64)> = results
                .into_iter()
                .filter_map(|result| result.right())
                .map(|row| (row.get(1), row.get(0)))
                .collect();
            // No rows: the id was seen before.
            if returned.is_empty() {
                return Ok(Vec::new());
            }
            return in_item_order(txn_id, items, returned);
        };
        // The statement before COMMIT inserted the items, or nothing for an id seen before.
        let inserted = results
            .iter()
            .rev()
            .filter_map(|result| result.as_ref().left())
            .nth(1)
            .map_or(0, |result| result.rows_affected());
        if inserted == 0 {
            return Ok(Vec::new());
        }
        Ok((first..).take(items.len()).collect())
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
            .fetch_all(&mut *self.conn().await?)
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
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Marks several items handled, in one statement.
    pub async fn inbox_done_many(&self, seqs: &[i64]) -> Result<()> {
        mark_done(&mut *self.conn().await?, seqs).await
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
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// How many items wait to be handled.
    pub async fn inbox_depth(&self, appservice_id: &str) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM inbox WHERE appservice_id = $1 AND done_at IS NULL")
                .bind(appservice_id)
                .fetch_one(&mut *self.conn().await?)
                .await?;
        Ok(row.get(0))
    }
}

/// Appends `rows` tuples of six parameters, numbered from `$(before + 1)`.
fn push_rows(sql: &mut String, rows: usize, before: usize) {
    for i in 0..rows {
        let b = before + i * 6;
        if i > 0 {
            sql.push(',');
        }
        let params: Vec<String> = (1..=6).map(|k| format!("${}", b + k)).collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds the six values of each item's row, as `push_rows` numbered them.
fn bind_rows<'q>(
    mut query: AnyQuery<'q>,
    appservice_id: &'q str,
    txn_id: &str,
    items: &'q [NewInboxItem],
    now: i64,
) -> AnyQuery<'q> {
    for item in items {
        query = query
            .bind(appservice_id)
            .bind(&item.queue_key)
            .bind(format!("{txn_id}.{}", item.index))
            .bind(item.kind)
            .bind(&item.payload)
            .bind(now);
    }
    query
}

/// The sequence numbers `RETURNING` gave, as `(item key, seq)` in no promised order, put in
/// the items' order.
fn in_item_order(
    txn_id: &str,
    items: &[NewInboxItem],
    returned: Vec<(String, i64)>,
) -> Result<Vec<i64>> {
    let returned: std::collections::HashMap<String, i64> = returned.into_iter().collect();
    items
        .iter()
        .map(|item| {
            let item_key = format!("{txn_id}.{}", item.index);
            returned.get(&item_key).copied().ok_or_else(|| {
                crate::Error::Other(format!(
                    "the store returned no sequence number for {item_key}"
                ))
            })
        })
        .collect()
}

/// The stored items, given their sequence numbers in the items' order, in that order.
pub(super) fn stored_items(
    txn_id: &str,
    items: Vec<NewInboxItem>,
    seqs: Vec<i64>,
) -> Vec<InboxItem> {
    items
        .into_iter()
        .zip(seqs)
        .map(|(item, seq)| InboxItem {
            seq,
            item_key: format!("{txn_id}.{}", item.index),
            queue_key: item.queue_key,
            kind: item.kind.to_owned(),
            payload: item.payload,
        })
        .collect()
}

/// Marks items handled on `conn`, 500 to a statement.
pub(super) async fn mark_done(conn: &mut sqlx::AnyConnection, seqs: &[i64]) -> Result<()> {
    let now = now_ms();
    for chunk in seqs.chunks(500) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE inbox SET done_at = $1 WHERE seq IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for seq in chunk {
            query = query.bind(*seq);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn payloads_are_stored_byte_for_byte_whatever_their_characters() {
        let store = Store::in_memory().await.unwrap();
        let payloads = [
            r#"{"body":"héllo 🎉 \"quoted\" \\ \u0000"}"#,
            "{}",
            r#"{"body":"日本語","n":1.50}"#,
        ];
        let items = payloads
            .iter()
            .enumerate()
            .map(|(index, payload)| NewInboxItem {
                queue_key: "!r:x".into(),
                index,
                kind: "timeline",
                payload: (*payload).to_owned(),
            })
            .collect();
        let stored = store
            .receive_transaction_items("as", "t1", items)
            .await
            .unwrap()
            .unwrap();
        let read = store.inbox_next("as", "!r:x", 0, 10).await.unwrap();
        for (i, payload) in payloads.iter().enumerate() {
            assert_eq!(stored[i].payload, *payload);
            assert_eq!(read[i].payload, *payload);
            assert_eq!(read[i].item_key, format!("t1.{i}"));
        }
    }
}
