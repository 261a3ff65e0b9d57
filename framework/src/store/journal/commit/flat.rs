//! The commit script for a batch of a few records of one item each (transactions of one
//! event): the records written out as `VALUES`, without JSON. Larger batches go to the bound
//! scripts (`bound.rs`) or the JSON forms ([`super::Form`]), as does any batch a test asks
//! them for.

use std::{fmt::Write as _, sync::OnceLock};

use super::{Committed, Upkeep};
use crate::{
    Result,
    store::{inbox::TxnName, journal::Record},
};

/// The most records a flat batch holds. Each script is prepared once by the
/// connection, at a cost that grows with its rows (a one-row script about as much as a commit,
/// under callgrind), so there are a few sizes, 1, 2, 4 and 8 rows, and a batch takes the
/// smallest it fits, the rows it leaves over NULL.
pub(super) const MAX_FLAT: usize = 8;

/// The parameters before the rows: the marks' seqs (a JSON array, or NULL for none), the
/// number of rows that are records, and the seqs of the items whose waiting rows it writes
/// (as the marks').
const LEADING: usize = 3;

/// The fields of a record's row, `$(LEADING + k * FIELDS + field)` for the `k`th row, bound in
/// this order by [`query`].
const FIELDS: usize = 12;
const APPSERVICE: usize = 1;
const TXN: usize = 2;
const RECEIVED_AT: usize = 3;
const NUMBER: usize = 4;
const DIGEST: usize = 5;
const SEQ: usize = 6;
const QUEUE: usize = 7;
const KEY: usize = 8;
const KIND: usize = 9;
const PAYLOAD: usize = 10;
const EVENT: usize = 11;
const EVENT_TS: usize = 12;

/// The flat script with `rows` rows, with the same result rows as the JSON forms
/// (`commit_records_sql`): the records written out as `VALUES`, each value a parameter. Reading
/// the fields out of JSON (a table for the items, a parse per row) cost more than the rest of
/// a one-event commit's SQL (`docs/benchmarks.md`). Rows left over are NULL and skipped.
/// Events repeated within the batch are left to the insert's conflict clause, which sees the
/// rows it inserted before, since an item left out would leave its record out too. The rows go
/// in as written, in the order of their seqs (SQLite reads `VALUES` in order; an `ORDER BY`
/// would sort them in a table of its own); were they not, an event repeated in the batch would
/// be stored for a later transaction than its first, and still once.
fn script(rows: usize) -> String {
    let values = |fields: &[usize]| {
        let mut sql = String::new();
        for k in 0..rows {
            sql.push_str(if k == 0 { "(" } else { ", (" });
            for (i, field) in fields.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                // Writing to a String cannot fail.
                let _ = write!(sql, "{sep}${}", LEADING + k * FIELDS + field);
            }
            sql.push(')');
        }
        sql
    };
    format!(
        "BEGIN IMMEDIATE; \
         {upkeep}\
         WITH v (seq, appservice, queue, item_key, kind, payload, received_at, event_id, \
         event_ts, txn, digest) AS (VALUES {items}) \
         INSERT INTO inbox (seq, appservice_id, queue_key, item_key, kind, payload, received_at, \
         event_id, event_ts) SELECT seq, appservice, queue, item_key, kind, payload, \
         received_at, event_id, event_ts FROM v WHERE seq IS NOT NULL AND NOT EXISTS (SELECT 1 FROM transactions \
         WHERE appservice_id = v.appservice AND txn_id = v.txn \
         AND COALESCE(digest, '') = v.digest) \
         ON CONFLICT (appservice_id, event_ts, event_id) WHERE event_id IS NOT NULL DO NOTHING; \
         WITH v (appservice, txn, digest, number, seq) AS (VALUES {records}) \
         SELECT tag, number FROM (SELECT IFNULL(1 + 2 * (SELECT COALESCE(digest, '') = v.digest \
         FROM transactions WHERE appservice_id = v.appservice AND txn_id = v.txn), 0) AS tag, \
         number FROM v WHERE seq IS NOT NULL) WHERE tag <> 0 \
         UNION ALL SELECT 2, seq FROM v WHERE seq IS NOT NULL AND changes() < $2 \
         AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.seq = v.seq); \
         WITH v (appservice, txn, received_at, digest) AS (VALUES {ids}) \
         INSERT OR REPLACE INTO transactions (appservice_id, txn_id, received_at, digest) \
         SELECT appservice, txn, received_at, digest FROM v WHERE txn IS NOT NULL; COMMIT;",
        upkeep = concat!(
            crate::store::inbox::settle_sql!("$3"),
            crate::store::inbox::mark_done_sql!("$1")
        ),
        items = values(&[
            SEQ,
            APPSERVICE,
            QUEUE,
            KEY,
            KIND,
            PAYLOAD,
            RECEIVED_AT,
            EVENT,
            EVENT_TS,
            TXN,
            DIGEST
        ]),
        records = values(&[APPSERVICE, TXN, DIGEST, NUMBER, SEQ]),
        ids = values(&[APPSERVICE, TXN, RECEIVED_AT, DIGEST]),
    )
}

/// The scripts of 1, 2, 4 and 8 rows, each made when first needed.
static SCRIPTS: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];

/// The statement that commits `records` flat, with `upkeep`, and what it leaves out by itself
/// (as `commit_records_query`), or `None` if the batch is not of that shape.
pub(super) fn query(
    records: &[Record],
    upkeep: &Upkeep,
) -> Option<Result<(super::Query, Committed)>> {
    if records.is_empty()
        || records.len() > MAX_FLAT
        || records.iter().any(|record| record.items.len() != 1)
    {
        return None;
    }
    Some(query_of_shape(records, upkeep))
}

fn query_of_shape(records: &[Record], upkeep: &Upkeep) -> Result<(super::Query, Committed)> {
    let mut left_out = Committed::default();
    // A batch holds a few records: they are compared with the ones before them.
    let mut kept: Vec<&Record> = Vec::with_capacity(records.len());
    for record in records {
        let same_id = |other: &&Record| {
            other.appservice_id == record.appservice_id && other.txn_id == record.txn_id
        };
        if kept
            .iter()
            .any(|other| same_id(other) && other.digest == record.digest)
        {
            // Sent again before the first was committed: kept once.
            continue;
        }
        if kept.iter().any(same_id) {
            left_out.reused.insert(record.number);
        }
        // Fresh until the script's rows say otherwise.
        left_out.fresh.insert(record.number);
        kept.push(record);
    }
    let rows = kept.len().next_power_of_two();
    let script = SCRIPTS[rows.trailing_zeros() as usize].get_or_init(|| script(rows));
    let mut query = sqlx::query(script.as_str())
        .bind(upkeep.marks.clone())
        .bind(kept.len() as i64)
        .bind(upkeep.settle.clone());
    for record in kept.iter().copied() {
        let item = record.items.first();
        let txn = TxnName {
            id: &record.txn_id,
            digest: &record.digest,
        };
        // In the order of the fields above.
        query = query
            .bind(record.appservice_id.clone())
            .bind(record.txn_id.clone())
            .bind(record.received_at)
            .bind(record.number as i64)
            .bind(record.digest.clone())
            .bind(record.first_seq)
            .bind(item.map(|i| i.queue_key.clone()))
            .bind(txn.item_key(item.map_or(0, |i| i.index)))
            .bind(item.map(|i| i.kind))
            .bind(item.map(|i| i.payload.clone()))
            .bind(item.and_then(|i| i.event_id.clone()))
            .bind(item.map(|i| i.event_ts));
    }
    for _ in kept.len() * FIELDS..rows * FIELDS {
        query = query.bind(None::<i64>);
    }
    Ok((query, left_out))
}
