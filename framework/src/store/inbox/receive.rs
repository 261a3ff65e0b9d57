//! Storing a received transaction in the inbox, before the homeserver is answered, through sqlx
//! (the journal's batches have their own script: `journal/commit.rs`).
//!
//! Two things keep an event from being handled twice, and neither may lose one:
//! - a transaction is named by its id *and* a digest of its contents ([`TxnName`]): the same
//!   id with the same digest is a resend and stores nothing, the same id with another digest is
//!   a new transaction (Synapse on SQLite reuses ids after a restart, element-hq/synapse#14556);
//! - an event the inbox already holds is not stored again (the unique index `inbox_events`, on
//!   the event's id and `origin_server_ts`: [`NewInboxItem::event_ts`]), whatever transaction
//!   brings it back.

use std::borrow::Cow;

use sqlx::Row;

use super::{InboxItem, NewInboxItem, mark_done};
use crate::{
    Result,
    store::{
        Backend, Store,
        conn::{Conn, script_on},
        now_ms,
    },
};

/// A transaction as the inbox names it: the homeserver's id and a digest of what it carried
/// ([`digest`]), or `""` where the id alone names it (redeliveries, and callers of
/// [`Store::receive_transaction`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxnName<'a> {
    pub(crate) id: &'a str,
    pub(crate) digest: &'a str,
}

impl<'a> TxnName<'a> {
    /// What the keys of its items start with. The digest is part of it so that a reused id's
    /// items get keys of their own: sends derive their transaction ids from item keys, and the
    /// homeserver would take a second send under the same one as a repeat of the first.
    pub(crate) fn key_prefix(&self) -> Cow<'a, str> {
        match self.digest {
            "" => Cow::Borrowed(self.id),
            digest => Cow::Owned(format!("{}~{digest}", self.id)),
        }
    }

    /// The key of its `index`th item: the [key prefix](Self::key_prefix), a dot, the index.
    pub(crate) fn item_key(&self, index: usize) -> String {
        use std::fmt::Write as _;
        let mut key = String::with_capacity(self.id.len() + self.digest.len() + 5);
        key.push_str(self.id);
        if !self.digest.is_empty() {
            key.push('~');
            key.push_str(self.digest);
        }
        // Writing to a String cannot fail.
        let _ = write!(key, ".{index}");
        key
    }
}

/// The key of the `index`th item of the transaction whose [key prefix](TxnName::key_prefix)
/// is `prefix`. Written out rather than `format!`ed: it is made for every item received.
pub(crate) fn item_key(prefix: &str, index: usize) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(prefix.len() + 4);
    key.push_str(prefix);
    // Writing to a String cannot fail.
    let _ = write!(key, ".{index}");
    key
}

/// What names a homeserver's transaction together with its id: a digest of the items it
/// carried, so that a resend (same id, same items) can be told from a new transaction that
/// reuses an id, as Synapse on SQLite does after a restart (element-hq/synapse#14556).
///
/// Where there are timeline events, their ids alone: a resend carries the same events, but
/// serialised again (`unsigned.age` differs), and without the ephemeral and to-device data,
/// which Synapse does not keep for a retry. Otherwise the items' JSON. Sixteen hex digits of
/// SHA-256.
pub(crate) fn digest(items: &[NewInboxItem]) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    let events = items.iter().filter_map(|item| item.event_id.as_deref());
    let mut any = false;
    for event_id in events {
        hash.update(event_id.as_bytes());
        hash.update(b"\n");
        any = true;
    }
    if !any {
        for item in items {
            hash.update(item.payload.as_bytes());
            hash.update(b"\n");
        }
    }
    hex::encode(&hash.finalize()[..8])
}

/// What storing a new transaction did.
#[derive(Debug)]
pub(crate) struct Received {
    /// The stored items in the order given: `None` where the event was in the inbox already.
    pub(crate) items: Vec<Option<InboxItem>>,
    /// The id was seen before with other contents: the homeserver reused it.
    pub(crate) reused: bool,
}

/// Rows per multi-row insert; SQLite allows 32,766 bound parameters and each row binds eight.
const INSERT_CHUNK: usize = 200;

/// The receive script on SQLite after its first statements (see `Store::receive_in_one_trip`).
/// A row `(-1, NULL)` first if the id was seen with other contents; then the id goes in
/// (replacing the row of an earlier use, so that rows stay in the order they came for
/// pruning); then the items, only if the id was new (`changes()`), each unless its event is in
/// the inbox already, numbered by the store or from `$6` on (by the journal, `journal.rs`,
/// which numbers every inbox item on a file), and named back; then their rows in
/// `inbox_pending`, from `$new`, the range of seqs they were given. Marks to write go in `$7`.
macro_rules! receive_items {
    ($seq_column:literal, $seq:literal, $new:expr) => {
        concat!(
            "SELECT -1, NULL FROM transactions WHERE appservice_id = $1 AND txn_id = $2 \
             AND COALESCE(digest, '') <> $8; \
             INSERT OR REPLACE INTO transactions (appservice_id, txn_id, received_at, digest) \
             SELECT $1, $2, $3, $8 WHERE NOT EXISTS (SELECT 1 FROM transactions \
             WHERE appservice_id = $1 AND txn_id = $2 AND COALESCE(digest, '') = $8); \
             INSERT INTO inbox (",
            $seq_column,
            "appservice_id, queue_key, item_key, kind, payload, received_at, event_id, \
             event_ts) SELECT ",
            $seq,
            "$1, value ->> 0, $9 || '.' || (value ->> 1), value ->> 2, \
             CAST(substr($5, value ->> 3, value ->> 4) AS TEXT), $3, value ->> 5, value ->> 6 \
             FROM json_each($4) WHERE changes() = 1 ORDER BY key \
             ON CONFLICT (appservice_id, event_ts, event_id) WHERE event_id IS NOT NULL DO NOTHING \
             RETURNING seq, item_key; ",
            super::waiting_sql!($new),
            "COMMIT;"
        )
    };
}

/// The seqs the store gave the rows it just inserted (`waiting_sql`'s `$new`): each one more than
/// the largest before it, so the last `changes()` up to `last_insert_rowid()`, none if it
/// inserted none. `LIMIT` keeps SQLite from folding the subquery into the join, where the
/// bounds would be read again after the first waiting row changed `last_insert_rowid()`.
macro_rules! numbered_by_the_store {
    () => {
        "(SELECT last_insert_rowid() - changes() + 1 AS lo, last_insert_rowid() AS hi \
         WHERE changes() > 0 LIMIT 1)"
    };
}

/// The seqs the journal gave the items (`$6` on), its own to this transaction.
macro_rules! numbered_by_the_journal {
    () => {
        "(SELECT $6 AS lo, $6 + json_array_length($4) - 1 AS hi)"
    };
}

// Each script reads before it writes, so it takes the write lock at BEGIN: a deferred
// transaction whose first read a plugin's commit then made stale could not write at all
// (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
const RECEIVE: &str = concat!(
    "BEGIN IMMEDIATE; ",
    receive_items!("", "", numbered_by_the_store!())
);

/// The same, first marking handled the items whose `seq` is in the JSON array `$7`.
const RECEIVE_MARKING_DONE: &str = concat!(
    "BEGIN IMMEDIATE; ",
    super::mark_done_sql!("$7"),
    receive_items!("", "", numbered_by_the_store!())
);

/// The items numbered from `$6`.
const RECEIVE_NUMBERED: &str = concat!(
    "BEGIN IMMEDIATE; ",
    receive_items!("seq, ", "$6 + key, ", numbered_by_the_journal!())
);

/// The same, first marking handled the items whose `seq` is in the JSON array `$7`.
const RECEIVE_NUMBERED_MARKING_DONE: &str = concat!(
    "BEGIN IMMEDIATE; ",
    super::mark_done_sql!("$7"),
    receive_items!("seq, ", "$6 + key, ", numbered_by_the_journal!())
);

impl Store {
    /// Stores a transaction's items and its id in one database transaction, before the
    /// homeserver is answered. Returns `false`, storing nothing, when the id was seen before.
    /// An item whose event the inbox holds already is not stored again.
    #[cfg(test)]
    pub(crate) async fn receive_transaction(
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
    #[cfg(test)]
    pub(crate) async fn receive_transaction_items(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: Vec<NewInboxItem>,
    ) -> Result<Option<Vec<InboxItem>>> {
        let txn = TxnName {
            id: txn_id,
            digest: "",
        };
        let received = self.receive_and_mark_done(appservice_id, txn, items, &[]);
        Ok(received
            .await?
            .map(|received| received.items.into_iter().flatten().collect()))
    }

    /// Stores a transaction named `txn`, marking the items `done` handled in the same
    /// database transaction (also when it was seen before). `None` for a resend.
    pub(crate) async fn receive_and_mark_done(
        &self,
        appservice_id: &str,
        txn: TxnName<'_>,
        items: Vec<NewInboxItem>,
        done: &[i64],
    ) -> Result<Option<Received>> {
        let now = now_ms();
        if self.backend == Backend::Sqlite {
            return self
                .receive_in_one_trip(appservice_id, txn, items, done, now)
                .await;
        }
        let mut tx = self.begin().await?;
        mark_done(&mut tx, self.backend, done).await?;
        // A new id is inserted; a known one is updated only if its digest differs, and then
        // `xmax` (the updating transaction) is set: a resend returns no row. One statement, so
        // that two processes given the same transaction store it once.
        let row = sqlx::query(
            "INSERT INTO transactions (appservice_id, txn_id, received_at, digest)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (appservice_id, txn_id) DO UPDATE
             SET received_at = excluded.received_at, digest = excluded.digest
             WHERE COALESCE(transactions.digest, '') <> excluded.digest
             RETURNING xmax::text <> '0'",
        )
        .bind(appservice_id)
        .bind(txn.id)
        .bind(now)
        .bind(txn.digest)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let reused: bool = row.get(0);
        let prefix = txn.key_prefix();
        let mut returned = Vec::with_capacity(items.len());
        for chunk in items.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO inbox (appservice_id, queue_key, item_key, kind, payload, received_at, event_id, event_ts) VALUES ",
            );
            push_rows(&mut sql, chunk.len());
            // The item key names the row, since neither dialect promises the order of
            // RETURNING rows.
            sql.push_str(
                " ON CONFLICT (appservice_id, event_ts, event_id) WHERE event_id IS NOT NULL DO NOTHING \
                 RETURNING seq, item_key",
            );
            let query = bind_rows(
                sqlx::query(sqlx::AssertSqlSafe(sql)),
                appservice_id,
                &prefix,
                chunk,
                now,
            );
            for row in query.fetch_all(&mut *tx).await? {
                returned.push((row.get(1), row.get(0)));
            }
        }
        tx.commit().await?;
        let seqs = in_item_order(&prefix, &items, returned);
        Ok(Some(Received {
            items: stored_items(&prefix, items, seqs),
            reused,
        }))
    }

    /// The same on SQLite, in one trip to the database: the transaction id and the items in
    /// one script, the items inserted only if the id was new (`changes()` still counts the
    /// statement before). Each statement through sqlx is a round trip to its connection
    /// thread, and at one event per transaction those trips were most of the cost.
    async fn receive_in_one_trip(
        &self,
        appservice_id: &str,
        txn: TxnName<'_>,
        items: Vec<NewInboxItem>,
        done: &[i64],
        now: i64,
    ) -> Result<Option<Received>> {
        // The items travel as one JSON array, so that one statement, prepared once, serves
        // every transaction size: preparing a statement of 50 rows of parameters cost more
        // than inserting them (a sixth of all the work in a profile). Their payloads travel
        // apart, one after another in a blob cut with `substr` (by bytes, on a blob): as
        // strings inside the array they were escaped here and unescaped by SQLite, a tenth of
        // the receive path at 50 events per transaction.
        let mut payloads = Vec::with_capacity(items.iter().map(|i| i.payload.len()).sum());
        let rows: Vec<_> = items
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
                    i.event_id.as_deref(),
                    i.event_ts,
                )
            })
            .collect();
        let rows = serde_json::to_string(&rows)?;
        let done = if done.is_empty() {
            None
        } else {
            Some(serde_json::to_string(done)?)
        };
        let prefix = txn.key_prefix();
        let mut conn = self.conn().await?;
        // Where the journal numbers the inbox's items (this process is the file's one writer),
        // the items take their numbers from it.
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
            .bind(txn.id)
            .bind(now)
            .bind(rows)
            .bind(payloads)
            .bind(first)
            .bind(done)
            .bind(txn.digest)
            .bind(prefix.as_ref());
        let results = script_on(&mut conn, query).await?;
        drop(conn);
        // The id's insert, fourth from the end (the items', their waiting rows' and the
        // COMMIT after it), changed a row, or this was a resend.
        let inserted = results
            .iter()
            .rev()
            .filter_map(|result| result.as_ref().left())
            .nth(3)
            .is_some_and(|result| result.rows_affected() == 1);
        if !inserted {
            return Ok(None);
        }
        let mut reused = false;
        let mut returned = Vec::with_capacity(items.len());
        for row in results.into_iter().filter_map(|result| result.right()) {
            let seq: i64 = row.get(0);
            if seq < 0 {
                reused = true;
            } else {
                returned.push((row.get(1), seq));
            }
        }
        let seqs = in_item_order(&prefix, &items, returned);
        Ok(Some(Received {
            items: stored_items(&prefix, items, seqs),
            reused,
        }))
    }
}

/// Appends `rows` tuples of eight parameters, numbered from `$1`.
fn push_rows(sql: &mut String, rows: usize) {
    for i in 0..rows {
        let b = i * 8;
        if i > 0 {
            sql.push(',');
        }
        let params: Vec<String> = (1..=8).map(|k| format!("${}", b + k)).collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds the eight values of each item's row, as `push_rows` numbered them.
fn bind_rows<'q>(
    mut query: AnyQuery<'q>,
    appservice_id: &'q str,
    prefix: &str,
    items: &'q [NewInboxItem],
    now: i64,
) -> AnyQuery<'q> {
    for item in items {
        query = query
            .bind(appservice_id)
            .bind(&item.queue_key)
            .bind(item_key(prefix, item.index))
            .bind(item.kind)
            .bind(&item.payload)
            .bind(now)
            .bind(item.event_id.as_deref())
            .bind(item.event_ts);
    }
    query
}

/// The sequence numbers `RETURNING` gave, as `(item key, seq)` in no promised order, put in
/// the items' order: `None` for an item that was not stored (its event was in the inbox).
fn in_item_order(
    prefix: &str,
    items: &[NewInboxItem],
    returned: Vec<(String, i64)>,
) -> Vec<Option<i64>> {
    let returned: std::collections::HashMap<String, i64> = returned.into_iter().collect();
    items
        .iter()
        .map(|item| returned.get(&item_key(prefix, item.index)).copied())
        .collect()
}

/// The stored items, given their sequence numbers in the items' order (`None`: not stored),
/// in that order.
pub(crate) fn stored_items(
    prefix: &str,
    items: Vec<NewInboxItem>,
    seqs: Vec<Option<i64>>,
) -> Vec<Option<InboxItem>> {
    items
        .into_iter()
        .zip(seqs)
        .map(|(item, seq)| {
            Some(InboxItem {
                seq: seq?,
                item_key: item_key(prefix, item.index),
                queue_key: item.queue_key,
                kind: item.kind.to_owned(),
                payload: item.payload,
            })
        })
        .collect()
}
