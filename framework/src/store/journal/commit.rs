//! Committing the journal's records to the inbox: one script per batch, which stores each new
//! transaction once and skips resends and events stored before (`store/inbox/receive.rs` says
//! how a transaction is named).

use std::collections::HashSet;

use sqlx::Row;

use super::{Batch, Journal, Record};

mod bound;
mod flat;
use crate::{
    Result,
    store::{
        InboxItem, NewInboxItem, Store,
        conn::{Conn, Held, script_on},
        inbox::{TxnName, stored_items},
        now_ms,
    },
};

/// The journal's records to the inbox, in one transaction: the items of new records but those
/// whose event the inbox holds already (`$items`, by [`Form`]), but no waiting rows (they are
/// written late: `store/journal.rs`); then, in one statement (each
/// statement has a cost of its own, a few percent of a one-event commit), a tagged row per
/// record whose id is not new, `(1, number)` if the id was seen with other contents
/// (a new transaction all the same), `(3, number)` if seen with these (a resend: nothing
/// stored), from one lookup of the id (the ids are not written yet), and `(2, seq)` for each
/// item not stored (looked up only when the insert stored fewer than it was given, so the
/// common batch pays no lookup per item); then the
/// ids, each replacing the row of its earlier use (so that rows stay in the order they came,
/// for pruning; a resend's row is only moved to the end).
///
/// The records go in `$1` as `[appservice, txn, received_at, number, digest, key prefix,
/// first seq, last seq]`, the
/// items in `$3` as `[record, queue, index, kind, start, length, seq, event id, event time, …]`, where
/// `record` is the record's place in `$1` and the rest is the form's, with their payloads one
/// after another in `$2` (as in the receive script), and the number of items in `$4`.
///
/// Each item's fields are read from a JSONB copy of its row made once (the `items` table):
/// `json_each` gives an array element's `value` as JSON text, made again from its parse each
/// time the column is read, so reading each field straight from `value` converts and parses
/// the row once per field. `MATERIALIZED` keeps SQLite from folding the copy back into each
/// reference. IMMEDIATE, as in the receive script: it reads before it writes.
macro_rules! commit_records_sql {
    ($marks:expr, $items:expr) => {
        concat!(
            "BEGIN IMMEDIATE; ",
            $marks,
            $items,
            " ON CONFLICT (appservice_id, event_ts, event_id) WHERE event_id IS NOT NULL DO NOTHING; \
             SELECT tag, number FROM (SELECT IFNULL(1 + 2 * (SELECT COALESCE(digest, '') = t.value ->> 4 \
             FROM transactions WHERE appservice_id = t.value ->> 0 \
             AND txn_id = t.value ->> 1), 0) AS tag, t.value ->> 3 AS number FROM json_each($1) AS t) \
             WHERE tag <> 0 UNION ALL SELECT 2, i.value ->> 6 FROM (SELECT changes() AS stored) AS c, \
             json_each($3) AS i WHERE c.stored < $4 \
             AND NOT EXISTS (SELECT 1 FROM inbox WHERE seq = i.value ->> 6); \
             INSERT OR REPLACE INTO transactions (appservice_id, txn_id, received_at, digest) \
             SELECT t.value ->> 0, t.value ->> 1, t.value ->> 2, t.value ->> 4 \
             FROM json_each($1) AS t; COMMIT;"
        )
    };
}

/// The insert of [`Form::PerRecord`]: new records found once each (a table of their own),
/// their items joined to them.
macro_rules! items_per_record {
    () => {
        "WITH records AS MATERIALIZED (SELECT t.key AS place, t.value ->> 0 AS appservice, \
         t.value ->> 2 AS received_at, t.value ->> 5 AS prefix FROM json_each($1) AS t \
         WHERE NOT EXISTS (SELECT 1 FROM transactions WHERE appservice_id = t.value ->> 0 \
         AND txn_id = t.value ->> 1 AND COALESCE(digest, '') = t.value ->> 4)), \
         items AS MATERIALIZED (SELECT key AS place, jsonb(value) AS v FROM json_each($3)) \
         INSERT INTO inbox (seq, appservice_id, queue_key, item_key, kind, payload, \
         received_at, event_id, event_ts) SELECT i.v ->> 6, r.appservice, i.v ->> 1, \
         r.prefix || '.' || (i.v ->> 2), i.v ->> 3, \
         CAST(substr($2, i.v ->> 4, i.v ->> 5) AS TEXT), r.received_at, i.v ->> 7, i.v ->> 8 \
         FROM items AS i, records AS r WHERE r.place = i.v ->> 0 ORDER BY i.place"
    };
}

/// The insert of [`Form::PerItem`]: each item carries its record's `[appservice, txn, digest,
/// received_at, key prefix]` after the common fields, and looks its record's id up itself.
macro_rules! items_per_item {
    () => {
        "WITH items AS MATERIALIZED (SELECT key AS place, jsonb(value) AS v FROM json_each($3)) \
         INSERT INTO inbox (seq, appservice_id, queue_key, item_key, kind, payload, \
         received_at, event_id, event_ts) SELECT i.v ->> 6, i.v ->> 9, i.v ->> 1, \
         (i.v ->> 13) || '.' || (i.v ->> 2), i.v ->> 3, \
         CAST(substr($2, i.v ->> 4, i.v ->> 5) AS TEXT), i.v ->> 12, i.v ->> 7, i.v ->> 8 \
         FROM items AS i WHERE NOT EXISTS (SELECT 1 FROM transactions \
         WHERE appservice_id = i.v ->> 9 AND txn_id = i.v ->> 10 \
         AND COALESCE(digest, '') = i.v ->> 11) ORDER BY i.place"
    };
}

/// What rides along with a commit: the waiting rows of the kept batches it settles (`$6`),
/// and the done marks written behind (`$5`).
macro_rules! upkeep {
    () => {
        concat!(
            crate::store::inbox::settle_sql!("$6"),
            crate::store::inbox::mark_done_sql!("$5")
        )
    };
}

/// How a batch's items are told which are new: the same result, at costs that suit different
/// batches. Finding the new records once costs a second table per commit (about as much as
/// storing a few items: `docs/benchmarks.md`), which pays when records have many items
/// (transactions of 50 events); when they have one or two (one event per transaction, several
/// gathered in a batch), each item looking its record up is cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::store) enum Form {
    /// New records found once, their items joined to them.
    PerRecord,
    /// Each item looks its record up.
    PerItem,
}

impl Form {
    /// The cheaper form for a batch of `records` records holding `items` items.
    fn for_batch(records: usize, items: usize) -> Form {
        if items >= 3 * records {
            Form::PerRecord
        } else {
            Form::PerItem
        }
    }

    fn script(self, upkeep: bool) -> &'static str {
        match (self, upkeep) {
            (Form::PerRecord, false) => commit_records_sql!("", items_per_record!()),
            (Form::PerRecord, true) => commit_records_sql!(upkeep!(), items_per_record!()),
            (Form::PerItem, false) => commit_records_sql!("", items_per_item!()),
            (Form::PerItem, true) => commit_records_sql!(upkeep!(), items_per_item!()),
        }
    }
}

/// A statement with its arguments.
type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// What committing records did.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The numbers of the records whose items were stored; the others were resends.
    pub(crate) fresh: HashSet<u64>,
    /// The numbers of records whose id was seen before with other contents.
    pub(crate) reused: HashSet<u64>,
    /// The seqs of items not stored: their events were in the inbox already (or their record
    /// was a resend, which is not handed over anyway).
    pub(crate) repeated_events: HashSet<i64>,
}

/// The done marks and the waiting rows a commit writes besides its records, each a JSON array
/// of seqs (`None` for none).
struct Upkeep {
    marks: Option<String>,
    settle: Option<String>,
}

impl Upkeep {
    fn of(done: &[i64], settle: &[i64]) -> Result<Upkeep> {
        let json = |seqs: &[i64]| match seqs {
            [] => Ok(None),
            seqs => serde_json::to_string(seqs).map(Some),
        };
        Ok(Upkeep {
            marks: json(done)?,
            settle: json(settle)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.marks.is_none() && self.settle.is_none()
    }
}

/// The statement that commits `records` (see [`commit_records_sql`]), with the done marks
/// `done` and the waiting rows of the items `settle`, and what it tells by itself: a
/// transaction twice in `records` (the homeserver sent it again before the first was
/// committed) is kept once, and an event twice only the first time; every record kept is
/// fresh unless the script's rows say otherwise ([`committed`]).
fn commit_records_query(
    records: &[Record],
    done: &[i64],
    settle: &[i64],
    form: Option<Form>,
) -> Result<(Query, Committed)> {
    let upkeep = Upkeep::of(done, settle)?;
    // Batches of one-event transactions are written out flat (`flat.rs`), and others up to
    // a size with every value bound (`bound.rs`), unless a form is asked for.
    if form.is_none() {
        if let Some(query) = flat::query(records, &upkeep) {
            return query;
        }
        if let Some(query) = bound::query(records, &upkeep) {
            return query;
        }
    }
    let form = form.unwrap_or_else(|| {
        Form::for_batch(
            records.len(),
            records.iter().map(|record| record.items.len()).sum(),
        )
    });
    let (left_out, kept) = keep(records);
    // Each record's key prefix once, for all its rows to borrow.
    let prefixes: Vec<_> = kept
        .iter()
        .map(|kept| {
            TxnName {
                id: &kept.record.txn_id,
                digest: &kept.record.digest,
            }
            .key_prefix()
        })
        .collect();
    let mut txns = Vec::with_capacity(kept.len());
    let mut rows = Vec::new();
    let mut payloads = Vec::new();
    for (place, (kept, prefix)) in kept.iter().zip(&prefixes).enumerate() {
        let record = kept.record;
        txns.push((
            &record.appservice_id,
            &record.txn_id,
            record.received_at,
            record.number,
            &record.digest,
            prefix.as_ref(),
            record.first_seq,
            record.last_seq(),
        ));
        for &(seq, item) in &kept.items {
            let start = payloads.len() + 1;
            payloads.extend_from_slice(item.payload.as_bytes());
            rows.push(ItemRow {
                place,
                item,
                start,
                seq,
                record: (form == Form::PerItem).then_some((record, prefix.as_ref())),
            });
        }
    }
    let query = sqlx::query(form.script(!upkeep.is_empty()))
        .bind(serde_json::to_string(&txns)?)
        .bind(payloads)
        .bind(serde_json::to_string(&rows)?)
        .bind(rows.len() as i64);
    let query = if upkeep.is_empty() {
        query
    } else {
        query.bind(upkeep.marks).bind(upkeep.settle)
    };
    Ok((query, left_out))
}

/// A record a commit writes, with the items it stores: each with its seq.
struct Kept<'a> {
    record: &'a Record,
    items: Vec<(i64, &'a NewInboxItem)>,
}

/// The records of a batch that a commit writes, and what it tells by itself: a
/// transaction twice (the homeserver sent it again before the first was committed) is kept
/// once, and an event twice only the first time; the records kept are fresh until the
/// script's rows say otherwise ([`committed`]).
fn keep(records: &[Record]) -> (Committed, Vec<Kept<'_>>) {
    let mut left_out = Committed::default();
    let mut seen = HashSet::new();
    let mut digests = std::collections::HashMap::new();
    let mut events = HashSet::new();
    let mut kept = Vec::with_capacity(records.len());
    for record in records {
        let id = (record.appservice_id.as_str(), record.txn_id.as_str());
        if !seen.insert((id, record.digest.as_str())) {
            continue;
        }
        if digests.insert(id, record.digest.as_str()).is_some() {
            left_out.reused.insert(record.number);
        }
        let mut items = Vec::with_capacity(record.items.len());
        for (seq, item) in (record.first_seq..).zip(&record.items) {
            if let Some(event_id) = &item.event_id
                && !events.insert((event_id.as_str(), item.event_ts))
            {
                left_out.repeated_events.insert(seq);
                continue;
            }
            items.push((seq, item));
        }
        left_out.fresh.insert(record.number);
        kept.push(Kept { record, items });
    }
    (left_out, kept)
}

/// An item's row in `$3` (see [`commit_records_sql`]), with its record's fields after the
/// common ones in [`Form::PerItem`].
struct ItemRow<'a> {
    place: usize,
    item: &'a NewInboxItem,
    start: usize,
    seq: i64,
    record: Option<(&'a Record, &'a str)>,
}

impl serde::Serialize for ItemRow<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut row = serializer.serialize_tuple(if self.record.is_some() { 14 } else { 9 })?;
        row.serialize_element(&self.place)?;
        row.serialize_element(&self.item.queue_key)?;
        row.serialize_element(&self.item.index)?;
        row.serialize_element(self.item.kind)?;
        row.serialize_element(&self.start)?;
        row.serialize_element(&self.item.payload.len())?;
        row.serialize_element(&self.seq)?;
        row.serialize_element(&self.item.event_id)?;
        row.serialize_element(&self.item.event_ts)?;
        if let Some((record, prefix)) = self.record {
            row.serialize_element(&record.appservice_id)?;
            row.serialize_element(&record.txn_id)?;
            row.serialize_element(&record.digest)?;
            row.serialize_element(&record.received_at)?;
            row.serialize_element(prefix)?;
        }
        row.end()
    }
}

/// What the results of [`commit_records_query`] tell, added to what it told itself: every
/// record it gave the script is fresh unless a row says it was a resend. The script returns
/// rows for the exceptions only (`(1, number)`, `(3, number)`, `(2, seq)`), so that the common
/// batch, all new, costs no row per record (each row crosses from SQLite's thread on its own).
fn committed(
    results: Vec<sqlx::Either<sqlx::any::AnyQueryResult, sqlx::any::AnyRow>>,
    mut committed: Committed,
) -> Committed {
    for row in results.into_iter().filter_map(|result| result.right()) {
        let value: i64 = row.get(1);
        match row.get::<i64, _>(0) {
            1 => {
                committed.reused.insert(value as u64);
            }
            2 => {
                committed.repeated_events.insert(value);
            }
            3 => {
                committed.fresh.remove(&(value as u64));
            }
            _ => {}
        }
    }
    committed
}

/// Commits journal records on `conn` in one transaction, with the done marks `done`. It writes
/// no waiting rows for their items: see [`settle_records`].
pub(in crate::store) async fn commit_records(
    conn: &mut Conn<'_>,
    records: &[Record],
    done: &[i64],
) -> Result<Committed> {
    commit_records_as(conn, records, done, &[], None).await
}

/// As [`commit_records`], with the waiting rows of the items `settle`, in the form given (the
/// cheaper one for the batch if `None`).
pub(in crate::store) async fn commit_records_as(
    conn: &mut Conn<'_>,
    records: &[Record],
    done: &[i64],
    settle: &[i64],
    form: Option<Form>,
) -> Result<Committed> {
    let (query, left_out) = commit_records_query(records, done, settle, form)?;
    Ok(committed(script_on(conn, query).await?, left_out))
}

/// Writes the waiting rows of every item `records` stored, whether a commit just now or an
/// earlier one did, unless it has one: the records a start finds in the journal, whose items
/// may have been handled or not.
pub(in crate::store) async fn settle_records(
    conn: &mut Conn<'_>,
    records: &[Record],
) -> Result<()> {
    let seqs: Vec<i64> = records
        .iter()
        .flat_map(|record| record.first_seq..=record.last_seq())
        .collect();
    sqlx::query(crate::store::inbox::settle_sql!("$1"))
        .bind(serde_json::to_string(&seqs)?)
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// The seqs of the items a commit stored for `records`: those of the fresh records, but for
/// events the inbox held already.
fn stored_seqs(records: &[Record], committed: &Committed) -> HashSet<i64> {
    records
        .iter()
        .filter(|record| committed.fresh.contains(&record.number))
        .flat_map(|record| record.first_seq..=record.last_seq())
        .filter(|seq| !committed.repeated_events.contains(seq))
        .collect()
}

/// Takes `conn` for the framework, opens the journal beside its file, and commits what a
/// previous run left in the journal before anything else reads the inbox.
pub(in crate::store) async fn open_beside(
    mut conn: sqlx::AnyConnection,
    durability: crate::store::Durability,
) -> Result<(tokio::sync::Mutex<Held>, Journal)> {
    let path: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&mut conn)
            .await?;
    let (journal, left) = Journal::open(std::path::Path::new(&path), durability)?;
    let held = tokio::sync::Mutex::new(Held { conn, clean: true });
    let mut conn = Conn::Held(held.lock().await);
    if !left.is_empty() {
        let committed = commit_records(&mut conn, &left, &[]).await?;
        // Their items may lack their waiting rows, handled or not: handled again if they were.
        settle_records(&mut conn, &left).await?;
        tracing::info!(
            records = left.len(),
            fresh = committed.fresh.len(),
            reused_ids = committed.reused.len(),
            "committed the transactions a previous run left in the inbox journal"
        );
    }
    let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM inbox")
        .fetch_one(&mut *conn)
        .await?;
    journal.start(max + 1)?;
    drop(conn);
    Ok((held, journal))
}

impl Store {
    /// Whether received transactions go to the journal; the first caller to ask gets it, and
    /// must then commit what it appends ([`Store::take_journal`], [`Store::commit_journal`]).
    pub(crate) fn claim_journal(&self) -> bool {
        self.journal.as_ref().is_some_and(|journal| journal.claim())
    }

    /// Appends a received transaction to the journal (see [`Store::claim_journal`]). Once this
    /// returns the transaction may be answered; whether it was seen before is known when it is
    /// committed.
    pub(crate) fn append_to_journal(
        &self,
        appservice_id: &str,
        txn: TxnName<'_>,
        items: Vec<NewInboxItem>,
        parsed: super::Parsed,
    ) -> Result<()> {
        let journal = self
            .journal
            .as_ref()
            .ok_or_else(|| crate::Error::Other("this store keeps no journal".into()))?;
        journal.append(appservice_id, txn, now_ms(), items, Some(parsed))?;
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
    /// and settles the kept batches that are due; the batch's file is kept until its items
    /// are handled or settled (`journal.rs`). On an error nothing was written: call again with
    /// the same batch.
    pub(crate) async fn commit_journal(&self, batch: &Batch, done: &[i64]) -> Result<Committed> {
        self.commit_journal_as(batch, done, None).await
    }

    /// As [`Store::commit_journal`], in the form given (the cheaper one for the batch if
    /// `None`): tests commit the same batches in each.
    pub(in crate::store) async fn commit_journal_as(
        &self,
        batch: &Batch,
        done: &[i64],
        form: Option<Form>,
    ) -> Result<Committed> {
        let conn = &mut self.conn().await?;
        let settle = match &self.journal {
            Some(journal) => journal.settle(false),
            None => Vec::new(),
        };
        let committed = commit_records_as(conn, &batch.records, done, &settle, form).await;
        if let Some(journal) = &self.journal {
            journal.settled(committed.is_ok());
            if let Ok(committed) = &committed {
                journal.finish(batch, stored_seqs(&batch.records, committed));
            }
        }
        committed
    }

    /// Writes the waiting rows of the items of every kept batch not yet handled, and empties
    /// the batches' files: before the inbox is read or counted, and after a lull.
    pub(crate) async fn settle_journal(&self) -> Result<()> {
        self.settle_journal_batches(true).await
    }

    /// As [`Store::settle_journal`], for the kept batches that are due only
    /// ([`SETTLE_AFTER`](super::SETTLE_AFTER) old).
    pub(crate) async fn settle_journal_due(&self) -> Result<()> {
        self.settle_journal_batches(false).await
    }

    async fn settle_journal_batches(&self, all: bool) -> Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        if !journal.keeps_batches() {
            return Ok(());
        }
        let conn = &mut self.conn().await?;
        let seqs = journal.settle(all);
        let written = match seqs.as_slice() {
            [] => Ok(()),
            seqs => sqlx::query(crate::store::inbox::settle_sql!("$1"))
                .bind(serde_json::to_string(seqs)?)
                .execute(&mut **conn)
                .await
                .map(drop)
                .map_err(Into::into),
        };
        journal.settled(written.is_ok());
        written
    }

    /// Whether records wait for a journal file to be freed: settling the kept batches frees
    /// theirs ([`Store::settle_journal`]).
    pub(crate) fn journal_out_of_files(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|journal| journal.out_of_files())
    }

    /// Whether committed batches wait to be settled ([`Store::settle_journal_due`]).
    pub(crate) fn journal_keeps_batches(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|journal| journal.keeps_batches())
    }

    /// Of the inbox items `seqs`, just handled, those that need a done mark: the items of a
    /// kept batch have no waiting row yet, and need none now (`journal.rs`).
    pub(crate) fn journal_handled(&self, seqs: Vec<i64>) -> Vec<i64> {
        match &self.journal {
            Some(journal) => journal.handled(seqs),
            None => seqs,
        }
    }
}

/// The items of a committed record, as the inbox holds them, in their order: `None` for those
/// whose events it held already (`repeated_events`).
pub(crate) fn record_items(
    record: Record,
    repeated_events: &HashSet<i64>,
) -> Vec<Option<InboxItem>> {
    let seqs = (record.first_seq..)
        .take(record.items.len())
        .map(|seq| Some(seq).filter(|seq| !repeated_events.contains(seq)))
        .collect();
    let txn = TxnName {
        id: &record.txn_id,
        digest: &record.digest,
    };
    stored_items(&txn.key_prefix(), record.items, seqs)
}
