use sqlx::Row;

use super::{Backend, Backlog, Store};
use crate::{Result, transaction::Incoming};

mod grouped;
mod receive;

pub(crate) use grouped::GroupedMarks;
pub(crate) use receive::{TxnName, digest, stored_items};

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
    /// A timeline event's id. An event the inbox already holds is not stored again, in
    /// whatever transaction it comes back; `None` for other items (and for redeliveries, which
    /// bring an event back on purpose).
    pub event_id: Option<String>,
    /// With `event_id`, what names the event in the inbox: its `origin_server_ts` where that is
    /// an integer, else 0 (as [`Incoming::from_stored`] reads it from the payload). An event
    /// comes back with the same one, and an index led by it takes new events at its end
    /// (migration 0008), where one led by the random ids wrote a page per event.
    pub event_ts: i64,
}

impl NewInboxItem {
    /// `item`, the `index`th of its transaction, as an inbox row.
    pub(crate) fn from_incoming(item: &Incoming, index: usize) -> Self {
        let kind = item.kind();
        let payload = match item.json() {
            Some(json) => json.get().to_owned(),
            // Device lists: serialising maps of strings and numbers cannot fail.
            None => match item {
                Incoming::DeviceLists(d) => serde_json::to_string(d).unwrap_or_default(),
                _ => String::new(),
            },
        };
        NewInboxItem {
            queue_key: item
                .queue_key()
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            index,
            kind,
            payload,
            event_id: match item {
                Incoming::Timeline(e) => Some(e.event_id.as_str().to_owned()),
                _ => None,
            },
            event_ts: match item {
                Incoming::Timeline(e) => e.origin_ts,
                _ => 0,
            },
        }
    }
}

/// An item read back from the inbox.
#[derive(Clone, Debug)]
pub struct InboxItem {
    /// Its position: items of one queue are handled in this order.
    pub seq: i64,
    /// The queue.
    pub queue_key: String,
    /// `<txn id>.<position>`, or `<txn id>~<digest>.<position>` for a homeserver's
    /// transaction (a `TxnName`: see `docs/durability.md`): the same however often the item is handled, and never
    /// the same for two items.
    pub item_key: String,
    /// The kind.
    pub kind: String,
    /// The JSON.
    pub payload: String,
}

impl Store {
    /// Up to `limit` unhandled items of one queue after `after_seq`, in order.
    pub(crate) async fn inbox_next(
        &self,
        appservice_id: &str,
        queue_key: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<InboxItem>> {
        // Items of the journal's kept batches are waiting too: their rows first.
        self.settle_journal().await?;
        // A bound LIMIT makes SQLite re-prepare the statement on every call (seen in a
        // profile as a fifth of the work); an integer spliced in is safe.
        let sql = format!(
            "SELECT i.seq, i.queue_key, i.item_key, i.kind, i.payload FROM inbox_pending AS p
             JOIN inbox AS i ON i.seq = p.seq
             WHERE p.appservice_id = $1 AND p.queue_key = $2 AND p.seq > $3
             ORDER BY p.seq LIMIT {limit}"
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
    #[cfg(test)]
    pub(crate) async fn inbox_done(&self, seq: i64) -> Result<()> {
        mark_done(&mut *self.conn().await?, self.backend, &[seq]).await
    }

    /// Marks several items handled, in one statement with what other workers mark at the
    /// same moment ([`GroupedMarks`]).
    pub(crate) async fn inbox_done_many(&self, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.marks.mark(self, seqs).await
    }

    /// Queues that have unhandled items, oldest first.
    pub(crate) async fn inbox_pending_queues(
        &self,
        appservice_id: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        self.settle_journal().await?;
        let rows = sqlx::query(
            "SELECT queue_key FROM inbox_pending WHERE appservice_id = $1
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
        Ok(self.inbox_backlog(appservice_id).await?.depth)
    }

    /// How many items wait to be handled, and since when the oldest has.
    pub async fn inbox_backlog(&self, appservice_id: &str) -> Result<Backlog> {
        self.settle_journal().await?;
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(i.received_at) FROM inbox_pending AS p
             JOIN inbox AS i ON i.seq = p.seq WHERE p.appservice_id = $1",
        )
        .bind(appservice_id)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(Backlog::from_row(&row))
    }
}

/// The statement that marks handled, on SQLite, the inbox items whose seqs are in the JSON
/// array `$seqs` (a parameter's name): their rows leave `inbox_pending` (migration 0009). Every
/// script that marks items takes it from here.
macro_rules! mark_done_sql {
    ($seqs:literal) => {
        concat!(
            "DELETE FROM inbox_pending WHERE seq IN (SELECT value FROM json_each(",
            $seqs,
            ")); "
        )
    };
}
pub(crate) use mark_done_sql;

/// The statement that writes, on SQLite, the waiting rows of the inbox items whose seqs are in
/// the JSON array `$seqs`: the items of committed journal batches not yet handled when their
/// batch is settled (`store/journal.rs`). A row there already stays as it is.
macro_rules! settle_sql {
    ($seqs:literal) => {
        concat!(
            "INSERT OR IGNORE INTO inbox_pending (seq, appservice_id, queue_key) \
             SELECT seq, appservice_id, queue_key FROM inbox \
             WHERE seq IN (SELECT value FROM json_each(",
            $seqs,
            ")); "
        )
    };
}
pub(crate) use settle_sql;

/// The statement by which a SQLite script that stored items writes their rows in
/// `inbox_pending` (migration 0010), in one statement after its insert: the inbox's rows whose
/// seqs lie in a range `lo..=hi` of the relation `$new` (a subquery). `$new` has one range per
/// transaction the script stored, and none for a resend, whose rows (if the journal gave a
/// record to a second commit) an earlier commit stored and a handler may have marked since.
/// Each transaction's seqs are its own (the journal hands them out, or the store numbers the
/// rows it inserts), so the rows in its range are the items the script stored for it, but for
/// those left out because their events were in the inbox. Every script that stores items on
/// SQLite takes it from here; PostgreSQL fills the table by a trigger.
macro_rules! waiting_sql {
    ($new:expr) => {
        concat!(
            "INSERT INTO inbox_pending (seq, appservice_id, queue_key) \
             SELECT i.seq, i.appservice_id, i.queue_key FROM ",
            $new,
            " AS r CROSS JOIN inbox AS i ON i.seq BETWEEN r.lo AND r.hi; "
        )
    };
}
pub(crate) use waiting_sql;

/// Marks items handled on `conn`, in one statement whose text never changes: the seqs come as
/// one JSON array. A statement written out per number of seqs was prepared again (on
/// PostgreSQL, parsed and planned by the server) for nearly every flush of the write-behind.
pub(super) async fn mark_done(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    seqs: &[i64],
) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let sql = match backend {
        Backend::Sqlite => mark_done_sql!("$1"),
        Backend::Postgres => {
            "DELETE FROM inbox_pending \
             WHERE seq IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint)"
        }
    };
    sqlx::query(sql)
        .bind(serde_json::to_string(seqs)?)
        .execute(&mut *conn)
        .await?;
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
                event_id: None,
                event_ts: 0,
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
