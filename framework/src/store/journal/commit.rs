//! Committing the journal's records to the inbox: one script per batch, which stores each new
//! transaction id once and skips the ones seen before.

use sqlx::Row;

use super::{Batch, Record};
use crate::{
    Result,
    store::{
        InboxItem, NewInboxItem, Store,
        conn::{Conn, script_on},
        inbox::stored_items,
        now_ms,
    },
};

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

/// Commits journal records on `conn` in one transaction, with the done marks `done`, and
/// returns the numbers of those whose items were stored: a transaction id seen before stores
/// nothing.
pub(in crate::store) async fn commit_records(
    conn: &mut Conn<'_>,
    records: &[Record],
    done: &[i64],
) -> Result<std::collections::HashSet<u64>> {
    let query = commit_records_query(records, done)?;
    Ok(fresh_records(script_on(conn, query).await?))
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

    /// Waits while the journal holds [`MAX_WAITING_ITEMS`](super::MAX_WAITING_ITEMS)
    /// items or more, until the commit catches up, or gives up (a stall: the append is then
    /// refused).
    pub(crate) async fn journal_room(&self) {
        let Some(journal) = &self.journal else { return };
        let max = super::MAX_WAITING_ITEMS;
        while journal.waiting_items() >= max && journal.stalled().is_none() {
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
        let fresh = commit_records(&mut self.conn().await?, &batch.records, done).await?;
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
