//! The commit script for batches of many items (transactions of many events, or a few
//! records of several items each): every value a bound parameter, the items and the records
//! written out as `VALUES` rows, without JSON. The flat script (`flat.rs`) takes batches of
//! up to eight one-event records, the JSON forms ([`super::Form`]) batches larger than the
//! largest script here, and any batch a test asks them for.

use std::{fmt::Write as _, sync::OnceLock};

use super::{Committed, Kept, Query, Upkeep, keep};
use crate::{
    Result,
    store::{inbox::TxnName, journal::Record},
};

/// The sizes of script, in records. A script is prepared once by the connection, at a cost
/// that grows with its rows, so there are a few sizes and a batch takes the smallest it fits,
/// the rows it leaves over NULL (binding a NULL and skipping its row costs far less than
/// reading a field out of JSON did: `docs/benchmarks.md`). Up to 32: under a steady load of
/// one event per transaction a batch gathers 9 to 16 records as often as fewer, too many for
/// the flat scripts, and the JSON form cost 20% more per record at 12 records and 29% at 32
/// (`docs/benchmarks.md`, "Session 38").
const RECORD_ROWS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// The sizes of script, in items (see [`RECORD_ROWS`]).
const ITEM_ROWS: [usize; 5] = [16, 32, 64, 128, 256];

/// The fields of an item's row in the insert, bound in this order by [`query`]: seq, queue,
/// index, kind, the payload's start and length in the batch's payloads, event id and time, the
/// record's place. Each text bound is copied four times on its way to SQLite (sqlx's `Any`
/// values and the SQLite driver's each hold their own), so the item's record's fields are
/// joined to it in SQL and the payloads go in one value (as in the JSON forms).
const ITEM_FIELDS: usize = 9;

/// The fields of a record's row in the insert: place, appservice, txn, digest, received at,
/// key prefix.
const INSERT_RECORD_FIELDS: usize = 6;

/// The fields of a record's row in the two statements after the insert.
const RECORD_FIELDS: usize = 4;

/// `count` rows of `fields` anonymous parameters each: `(?, ?), (?, ?)`.
fn values(count: usize, fields: usize) -> String {
    let mut sql = String::new();
    for k in 0..count {
        sql.push_str(if k == 0 { "(" } else { ", (" });
        for i in 0..fields {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
    }
    sql
}

/// The script with room for `records` records and `items` items, with the same result rows
/// as the JSON forms (`commit_records_sql`). Its parameters are anonymous (`?`), numbered in
/// the order they are written, across the statements: sqlx finds a named one (`$N`) by asking
/// SQLite its name, which SQLite looks up by walking a list, so naming them would make binding
/// grow with the square of the rows. New records are found once (`r`, materialized), and the
/// items are read in the order they are written, which is the order of their seqs (a `CROSS
/// JOIN` keeps its left table in the outer loop), so the inbox's b-tree is appended to. Rows
/// left over are NULL and skipped.
fn script(records: usize, items: usize) -> String {
    let mut sql = String::with_capacity(64 * items + 512);
    // Writing to a String cannot fail.
    let _ = write!(
        sql,
        "BEGIN IMMEDIATE; \
         {upkeep}\
         WITH v (seq, queue, idx, kind, start, length, event_id, event_ts, place) \
         AS (VALUES {items}), \
         given (place, appservice, txn, digest, received_at, prefix) AS (VALUES {inserted}), \
         r AS MATERIALIZED (SELECT place, appservice, received_at, prefix FROM given \
         WHERE place IS NOT NULL AND NOT EXISTS (SELECT 1 FROM transactions \
         WHERE appservice_id = given.appservice AND txn_id = given.txn \
         AND COALESCE(digest, '') = given.digest)) \
         INSERT INTO inbox (seq, appservice_id, queue_key, item_key, kind, payload, \
         received_at, event_id, event_ts) SELECT v.seq, r.appservice, v.queue, \
         r.prefix || '.' || v.idx, v.kind, CAST(substr(?, v.start, v.length) AS TEXT), \
         r.received_at, v.event_id, v.event_ts FROM v CROSS JOIN r ON r.place = v.place \
         WHERE v.seq IS NOT NULL \
         ON CONFLICT (appservice_id, event_ts, event_id) WHERE event_id IS NOT NULL DO NOTHING; \
         WITH r (appservice, txn, digest, number) AS (VALUES {records}), \
         i (seq) AS (VALUES {seqs}) \
         SELECT tag, number FROM (SELECT IFNULL(1 + 2 * (SELECT COALESCE(digest, '') = r.digest \
         FROM transactions WHERE appservice_id = r.appservice AND txn_id = r.txn), 0) AS tag, \
         number FROM r WHERE number IS NOT NULL) WHERE tag <> 0 \
         UNION ALL SELECT 2, i.seq FROM (SELECT changes() AS stored) AS c, i \
         WHERE c.stored < ? AND i.seq IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.seq = i.seq); \
         WITH r (appservice, txn, received_at, digest) AS (VALUES {records}) \
         INSERT OR REPLACE INTO transactions (appservice_id, txn_id, received_at, digest) \
         SELECT appservice, txn, received_at, digest FROM r WHERE txn IS NOT NULL; COMMIT;",
        upkeep = concat!(
            crate::store::inbox::settle_sql!("?"),
            crate::store::inbox::mark_done_sql!("?")
        ),
        items = values(items, ITEM_FIELDS),
        inserted = values(records, INSERT_RECORD_FIELDS),
        records = values(records, RECORD_FIELDS),
        seqs = values(items, 1),
    );
    sql
}

/// The scripts, by their sizes' places in [`RECORD_ROWS`] and [`ITEM_ROWS`], each made when
/// first needed.
static SCRIPTS: [[OnceLock<String>; ITEM_ROWS.len()]; RECORD_ROWS.len()] =
    [const { [const { OnceLock::new() }; ITEM_ROWS.len()] }; RECORD_ROWS.len()];

/// The place of the smallest size in `sizes` that holds `count`, if one does.
fn fitting(sizes: &[usize], count: usize) -> Option<usize> {
    sizes.iter().position(|&size| size >= count)
}

/// The statement that commits `records` with every value bound, with `upkeep`, and what it
/// leaves out by itself (as `commit_records_query`), or `None` if the batch is larger than the
/// largest script.
pub(super) fn query(records: &[Record], upkeep: &Upkeep) -> Option<Result<(Query, Committed)>> {
    // Told before `keep`, which the JSON forms would run again: a batch that is larger
    // before it leaves repeats out is taken to be too large.
    if records.len() > RECORD_ROWS[RECORD_ROWS.len() - 1]
        || records
            .iter()
            .map(|record| record.items.len())
            .sum::<usize>()
            > ITEM_ROWS[ITEM_ROWS.len() - 1]
    {
        return None;
    }
    let (left_out, kept) = keep(records);
    let items: usize = kept.iter().map(|kept| kept.items.len()).sum();
    let record_size = fitting(&RECORD_ROWS, kept.len())?;
    let item_size = fitting(&ITEM_ROWS, items)?;
    let script = SCRIPTS[record_size][item_size]
        .get_or_init(|| script(RECORD_ROWS[record_size], ITEM_ROWS[item_size]));
    Some(bind(
        script,
        &kept,
        (RECORD_ROWS[record_size], ITEM_ROWS[item_size]),
        upkeep,
        left_out,
    ))
}

/// `script` with the values of `kept` bound, in the order the script names them, and NULL
/// for the rows of its `size` (records, items) left over.
fn bind(
    script: &'static str,
    kept: &[Kept<'_>],
    (record_rows, item_rows): (usize, usize),
    upkeep: &Upkeep,
    left_out: Committed,
) -> Result<(Query, Committed)> {
    let nulls =
        |query: Query, count: usize| (0..count).fold(query, |query, _| query.bind(None::<i64>));
    let mut query = sqlx::query(script)
        .bind(upkeep.settle.clone())
        .bind(upkeep.marks.clone());
    let mut items = 0;
    let mut payloads = Vec::new();
    for (place, kept) in kept.iter().enumerate() {
        for &(seq, item) in &kept.items {
            items += 1;
            let start = payloads.len() + 1;
            payloads.extend_from_slice(item.payload.as_bytes());
            query = query
                .bind(seq)
                .bind(item.queue_key.clone())
                .bind(item.index as i64)
                .bind(item.kind)
                .bind(start as i64)
                .bind(item.payload.len() as i64)
                .bind(item.event_id.clone())
                .bind(item.event_ts)
                .bind(place as i64);
        }
    }
    query = nulls(query, (item_rows - items) * ITEM_FIELDS);
    for (place, kept) in kept.iter().enumerate() {
        let record = kept.record;
        let prefix = TxnName {
            id: &record.txn_id,
            digest: &record.digest,
        }
        .key_prefix()
        .into_owned();
        query = query
            .bind(place as i64)
            .bind(record.appservice_id.clone())
            .bind(record.txn_id.clone())
            .bind(record.digest.clone())
            .bind(record.received_at)
            .bind(prefix);
    }
    query = nulls(query, (record_rows - kept.len()) * INSERT_RECORD_FIELDS).bind(payloads);
    for kept in kept {
        let record = kept.record;
        query = query
            .bind(record.appservice_id.clone())
            .bind(record.txn_id.clone())
            .bind(record.digest.clone())
            .bind(record.number as i64);
    }
    query = nulls(query, (record_rows - kept.len()) * RECORD_FIELDS);
    for kept in kept {
        for &(seq, _) in &kept.items {
            query = query.bind(seq);
        }
    }
    query = nulls(query, item_rows - items).bind(items as i64);
    for kept in kept {
        let record = kept.record;
        query = query
            .bind(record.appservice_id.clone())
            .bind(record.txn_id.clone())
            .bind(record.received_at)
            .bind(record.digest.clone());
    }
    query = nulls(query, (record_rows - kept.len()) * RECORD_FIELDS);
    Ok((query, left_out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use sqlx::Execute;

    use super::*;
    use crate::store::NewInboxItem;

    /// A record numbered `number` of `items` events, its first seq `first_seq`.
    fn record(number: u64, first_seq: i64, items: usize) -> Record {
        Record {
            number,
            appservice_id: "as".into(),
            txn_id: format!("t{number}"),
            digest: "d".into(),
            received_at: 1,
            first_seq,
            items: (0..items)
                .map(|index| NewInboxItem {
                    queue_key: "!r:x".into(),
                    index,
                    kind: "timeline",
                    payload: "{}".into(),
                    event_id: Some(format!("$e{number}.{index}")),
                    event_ts: 1,
                })
                .collect(),
            parsed: None,
        }
    }

    /// The SQL the commit takes for `records`.
    fn sql_for(records: &[Record]) -> String {
        let (query, _) = super::super::commit_records_query(records, &[7], &[], None).unwrap();
        query.sql().as_str().to_owned()
    }

    /// Batches of many items take a script of the smallest sizes they fit, with no JSON but
    /// the done marks' and the settled items'; a batch too large for the largest takes a JSON
    /// form.
    #[test]
    fn batches_of_many_items_are_bound_in_scripts_of_a_few_sizes() {
        let one_of_33 = sql_for(&[record(1, 1, 33)]);
        assert_eq!(one_of_33, script(1, 64));
        assert_eq!(
            one_of_33.matches("json_each").count(),
            2,
            "the settled items and the marks only"
        );
        assert_eq!(
            sql_for(&[record(1, 1, 2), record(2, 3, 1), record(3, 4, 50)]),
            script(4, 64)
        );
        assert_eq!(sql_for(&[record(1, 1, 16)]), script(1, 16));
        let too_many = sql_for(&[record(1, 1, 200), record(2, 201, 57)]);
        assert!(too_many.contains("jsonb("), "{too_many}");
        let nine: Vec<_> = (0..9).map(|n| record(n, 2 * n as i64, 2)).collect();
        assert_eq!(sql_for(&nine), script(16, 32));
        // One-event records past the flat scripts' room, as batches gathered under a steady
        // load of one event per transaction are.
        let twelve_of_one: Vec<_> = (0..12).map(|n| record(n, n as i64, 1)).collect();
        assert_eq!(sql_for(&twelve_of_one), script(16, 16));
        let too_many_records: Vec<_> = (0..33).map(|n| record(n, 2 * n as i64, 2)).collect();
        assert!(sql_for(&too_many_records).contains("jsonb("));
    }

    /// Every placeholder of a script gets one value, whatever rows are left over: a value too
    /// many shifts every later one onto the wrong placeholder (sqlx binds them in order and
    /// drops the surplus), which once left a batch of three records with no count of its
    /// items, and so with no repeated events told.
    #[test]
    fn each_placeholder_gets_one_value() {
        for records in (1..=9).chain([16, 17, 32]) {
            // Records of one item go flat up to eight, and more than 256 items to a JSON form.
            let one = if records > 8 { &[1][..] } else { &[][..] };
            for items in one.iter().copied().chain([2, 3, 7]) {
                let batch: Vec<_> = (0..records)
                    .map(|n| record(n, 1 + (n * 64) as i64, items))
                    .collect();
                for (done, settle) in [(&[][..], &[][..]), (&[7][..], &[3][..])] {
                    let (mut query, _) =
                        super::super::commit_records_query(&batch, done, settle, None).unwrap();
                    let values = query
                        .take_arguments()
                        .unwrap()
                        .map_or(0, |a| sqlx::Arguments::len(&a));
                    let sql = query.sql().as_str().to_owned();
                    assert_eq!(
                        values,
                        sql.matches('?').count(),
                        "{records} records of {items} items, marks {done:?}"
                    );
                }
            }
        }
    }
}
