use sqlx::{Executor, Row};

use super::{
    Store,
    conn::{Conn, script_on},
    journal::{Batch, Record},
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
/// numbered from `$6` on (by the journal, `journal.rs`, which numbers every inbox item on a file).
/// Marks to write go in `$7`.
macro_rules! mark_done_sql {
    () => {
        "UPDATE inbox SET done_at = $3 WHERE seq IN (SELECT value FROM json_each($7))"
    };
}

macro_rules! transaction_sql {
    () => {
        "INSERT INTO transactions (appservice_id, txn_id, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING"
    };
}

macro_rules! items_sql {
    ($seq_column:literal, $seq:literal, $returning:literal) => {
        concat!(
            "INSERT INTO inbox (",
            $seq_column,
            "appservice_id, queue_key, item_key, kind, payload, received_at) \
             SELECT ",
            $seq,
            "$1, value ->> 0, $2 || '.' || (value ->> 1), value ->> 2, \
             CAST(substr($5, value ->> 3, value ->> 4) AS TEXT), $3 \
             FROM json_each($4) WHERE changes() = 1 ORDER BY key",
            $returning
        )
    };
}

macro_rules! receive_items {
    ($seq_column:literal, $seq:literal, $returning:literal) => {
        concat!(
            transaction_sql!(),
            "; ",
            items_sql!($seq_column, $seq, $returning),
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
    "BEGIN; ",
    mark_done_sql!(),
    "; ",
    receive_items!("", "", " RETURNING seq, item_key")
);

/// The items numbered from `$6`.
const RECEIVE_NUMBERED: &str = concat!("BEGIN; ", receive_items!("seq, ", "$6 + key, ", ""));

/// The same, first marking handled the items whose `seq` is in the JSON array `$7`.
const RECEIVE_NUMBERED_MARKING_DONE: &str = concat!(
    "BEGIN; ",
    mark_done_sql!(),
    "; ",
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
        let mut tx = self.pool.begin().await?;
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
/// The journal's records to the inbox: which records are new (rows of their numbers), then
/// their items, then their transaction ids, in one transaction. The ids go in `$1` as
/// `[appservice, txn, received_at, number]`, the items in `$3` as `[appservice, queue, txn,
/// index, kind, start, length, received_at, seq]` with their payloads one after another in
/// `$2` (as in the receive script).
macro_rules! commit_records_sql {
    ($marks:literal) => {
        concat!(
            "BEGIN; ",
            $marks,
            "SELECT t.value ->> 3 FROM json_each($1) AS t WHERE NOT EXISTS (SELECT 1 FROM \
             transactions WHERE appservice_id = t.value ->> 0 AND txn_id = t.value ->> 1); \
             INSERT INTO inbox (seq, appservice_id, queue_key, item_key, kind, payload, \
             received_at) SELECT i.value ->> 8, i.value ->> 0, i.value ->> 1, \
             (i.value ->> 2) || '.' || (i.value ->> 3), i.value ->> 4, \
             CAST(substr($2, i.value ->> 5, i.value ->> 6) AS TEXT), i.value ->> 7 \
             FROM json_each($3) AS i WHERE NOT EXISTS (SELECT 1 FROM transactions WHERE \
             appservice_id = i.value ->> 0 AND txn_id = i.value ->> 2) ORDER BY i.key; \
             INSERT INTO transactions (appservice_id, txn_id, received_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1) WHERE true \
             ON CONFLICT DO NOTHING; COMMIT;"
        )
    };
}

const COMMIT_RECORDS: &str = commit_records_sql!("");
const COMMIT_RECORDS_MARKING_DONE: &str = commit_records_sql!(
    "UPDATE inbox SET done_at = $4 WHERE seq IN (SELECT value FROM json_each($5)); "
);

/// The statement that commits `records` (see [`commit_records_sql`]). A transaction id twice
/// in `records` (the homeserver sent it again before the first was committed) is kept once.
fn commit_records_query(
    records: &[Record],
    done: &[i64],
) -> Result<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>> {
    let mut seen = std::collections::HashSet::new();
    let mut txns = Vec::with_capacity(records.len());
    let mut rows = Vec::new();
    let mut payloads = Vec::new();
    for record in records {
        if !seen.insert((record.appservice_id.as_str(), record.txn_id.as_str())) {
            continue;
        }
        txns.push((
            &record.appservice_id,
            &record.txn_id,
            record.received_at,
            record.number,
        ));
        for (seq, item) in (record.first_seq..).zip(&record.items) {
            let start = payloads.len() + 1;
            payloads.extend_from_slice(item.payload.as_bytes());
            rows.push((
                &record.appservice_id,
                &item.queue_key,
                &record.txn_id,
                item.index,
                item.kind,
                start,
                item.payload.len(),
                record.received_at,
                seq,
            ));
        }
    }
    let script = if done.is_empty() {
        COMMIT_RECORDS
    } else {
        COMMIT_RECORDS_MARKING_DONE
    };
    let query = sqlx::query(script)
        .bind(serde_json::to_string(&txns)?)
        .bind(payloads)
        .bind(serde_json::to_string(&rows)?);
    Ok(if done.is_empty() {
        query
    } else {
        query.bind(now_ms()).bind(serde_json::to_string(done)?)
    })
}

#[cfg(test)]
pub(super) fn commit_records_query_for_tests(
    records: &[Record],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    commit_records_query(records, &[]).unwrap()
}

/// The numbers of the new records, from the results of [`commit_records_query`].
fn fresh_records(
    results: Vec<sqlx::Either<sqlx::any::AnyQueryResult, sqlx::any::AnyRow>>,
) -> std::collections::HashSet<u64> {
    results
        .into_iter()
        .filter_map(|result| result.right())
        .map(|row| row.get::<i64, _>(0) as u64)
        .collect()
}

/// Commits records of the receive journal on a connection not yet shared (at connect), and
/// returns the numbers of those whose items were stored: a transaction id seen before stores
/// nothing.
pub(super) async fn commit_records(
    conn: &mut sqlx::AnyConnection,
    records: &[Record],
    done: &[i64],
) -> Result<std::collections::HashSet<u64>> {
    use futures_util::TryStreamExt;
    let query = commit_records_query(records, done)?;
    let results: std::result::Result<Vec<_>, _> = conn.fetch_many(query).try_collect().await;
    if results.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    Ok(fresh_records(results?))
}

impl Store {
    /// Whether received transactions go to the journal; the first caller to ask gets it, and
    /// must then commit what it appends ([`Store::take_journal`], [`Store::commit_journal`]).
    pub(crate) fn claim_journal(&self) -> bool {
        self.journal.as_ref().is_some_and(|journal| journal.claim())
    }

    /// Appends a received transaction to the journal (see [`Store::claim_journal`]). Once this
    /// returns the transaction may be answered; whether its id was seen before is known when
    /// it is committed.
    pub(crate) fn append_to_journal(
        &self,
        appservice_id: &str,
        txn_id: &str,
        items: Vec<NewInboxItem>,
        attachment: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<()> {
        let journal = self
            .journal
            .as_ref()
            .ok_or_else(|| crate::Error::Other("this store keeps no journal".into()))?;
        journal.append(appservice_id, txn_id, now_ms(), items, Some(attachment))?;
        Ok(())
    }

    /// Waits while the journal holds [`MAX_WAITING_ITEMS`](super::journal::MAX_WAITING_ITEMS)
    /// items or more, until the commit catches up.
    pub(crate) async fn journal_room(&self) {
        let Some(journal) = &self.journal else { return };
        let max = super::journal::MAX_WAITING_ITEMS;
        while journal.waiting_items() >= max {
            let committed = journal.committed.notified();
            if journal.waiting_items() < max {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), committed).await;
        }
    }

    /// Waits until something was appended to the journal, for at most `timeout`; false if
    /// nothing was.
    pub(crate) async fn journal_appended(&self, timeout: std::time::Duration) -> bool {
        match &self.journal {
            Some(journal) => tokio::time::timeout(timeout, journal.notify.notified())
                .await
                .is_ok(),
            None => false,
        }
    }

    /// Has the commit task stop gathering: a receiver waits for the commit.
    pub(crate) fn journal_hurry(&self) {
        if let Some(journal) = &self.journal {
            journal.hurry.notify_one();
        }
    }

    /// Waits for `gather`, or less if a receiver waits for the commit.
    pub(crate) async fn journal_gather(&self, gather: std::time::Duration) {
        if let Some(journal) = &self.journal {
            let _ = tokio::time::timeout(gather, journal.hurry.notified()).await;
        }
    }

    /// The records appended and not yet committed, if there are any and none are being
    /// committed.
    pub(crate) fn take_journal(&self) -> Option<Batch> {
        self.journal.as_ref()?.take()
    }

    /// Journal records not yet committed.
    pub(crate) fn journal_backlog(&self) -> usize {
        self.journal.as_ref().map_or(0, |journal| journal.backlog())
    }

    /// Commits a batch from [`Store::take_journal`] to the inbox, with the done marks `done`,
    /// and empties its file. Returns the numbers of the records whose items were stored (the
    /// others' ids were seen before). On an error nothing was written: call again with the
    /// same batch.
    pub(crate) async fn commit_journal(
        &self,
        batch: &Batch,
        done: &[i64],
    ) -> Result<std::collections::HashSet<u64>> {
        let query = commit_records_query(&batch.records, done)?;
        let fresh = fresh_records(script_on(&mut self.conn().await?, query).await?);
        if let Some(journal) = &self.journal
            && let Err(error) = journal.finish(batch)
        {
            // The records are committed; found again at the next start, they store nothing.
            tracing::warn!(%error, "could not empty the inbox journal");
        }
        Ok(fresh)
    }
}

/// The items of a committed record, as the inbox holds them.
pub(crate) fn record_items(record: Record) -> Vec<InboxItem> {
    let seqs = (record.first_seq..).take(record.items.len()).collect();
    stored_items(&record.txn_id, record.items, seqs)
}

fn stored_items(txn_id: &str, items: Vec<NewInboxItem>, seqs: Vec<i64>) -> Vec<InboxItem> {
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
