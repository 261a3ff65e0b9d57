//! The commit script of [`Form::Flat`]: a batch of records of one item each (transactions of one
//! event) written out as `VALUES`, without JSON.

use super::Form;
use crate::{
    Result,
    store::{NewInboxItem, journal::Record, now_ms},
};

/// The most records a [`Form::Flat`] batch holds: each count is a script of its own, prepared
/// and kept by the connection.
pub(super) const MAX_FLAT: usize = 8;

/// The fields of a record's row in a [`Form::Flat`] script, `$(k * FLAT_FIELDS + field)` for the
/// `k`th record, bound in this order by [`flat_query`].
const FLAT_FIELDS: usize = 11;
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

/// The script of [`Form::Flat`] for `records` records (marking done if `marks`), with the
/// same result rows as [`commit_records_sql`]: the records' rows written out as `VALUES`, each
/// value a parameter (the fields above, then the marks' time and seqs). Reading the fields out
/// of JSON (a table for the items, a parse per row) cost more than the rest of a one-event
/// commit's SQL (`docs/benchmarks.md`). Events repeated within the batch are left to the
/// insert's conflict clause, which sees the rows it inserted before, since an item left out
/// would leave its record out too. The rows go in as written, in the order of their seqs
/// (SQLite reads `VALUES` in order; an `ORDER BY` would sort them in a table of its own).
/// Were they not, an event repeated in the batch would be stored for a later transaction than
/// its first, and still once.
fn flat_script(records: usize, marks: bool) -> String {
    let values = |fields: &[usize]| {
        let rows: Vec<String> = (0..records)
            .map(|k| {
                let params: Vec<String> = fields
                    .iter()
                    .map(|field| format!("${}", k * FLAT_FIELDS + field))
                    .collect();
                format!("({})", params.join(", "))
            })
            .collect();
        rows.join(", ")
    };
    let marks = if marks {
        let time = records * FLAT_FIELDS + 1;
        format!(
            "UPDATE inbox SET done_at = ${time} WHERE seq IN (SELECT value FROM json_each(${})); ",
            time + 1
        )
    } else {
        String::new()
    };
    format!(
        "BEGIN IMMEDIATE; {marks}\
         WITH v (seq, appservice, queue, item_key, kind, payload, received_at, event_id, txn, \
         digest) AS (VALUES {items}) \
         INSERT INTO inbox (seq, appservice_id, queue_key, item_key, kind, payload, received_at, \
         event_id) SELECT seq, appservice, queue, item_key, kind, payload, received_at, \
         event_id FROM v WHERE NOT EXISTS (SELECT 1 FROM transactions \
         WHERE appservice_id = v.appservice AND txn_id = v.txn \
         AND COALESCE(digest, '') = v.digest) \
         ON CONFLICT (appservice_id, event_id) WHERE event_id IS NOT NULL DO NOTHING; \
         WITH v (appservice, txn, digest, number, seq) AS (VALUES {records}) \
         SELECT IFNULL(1 + 2 * (SELECT COALESCE(digest, '') = v.digest FROM transactions \
         WHERE appservice_id = v.appservice AND txn_id = v.txn), 0), number FROM v \
         UNION ALL SELECT 2, seq FROM v WHERE changes() < {count} \
         AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.seq = v.seq); \
         INSERT OR REPLACE INTO transactions (appservice_id, txn_id, received_at, digest) \
         VALUES {ids}; COMMIT;",
        items = values(&[
            SEQ,
            APPSERVICE,
            QUEUE,
            KEY,
            KIND,
            PAYLOAD,
            RECEIVED_AT,
            EVENT,
            TXN,
            DIGEST
        ]),
        records = values(&[APPSERVICE, TXN, DIGEST, NUMBER, SEQ]),
        count = records,
        ids = values(&[APPSERVICE, TXN, RECEIVED_AT, DIGEST]),
    )
}

/// The [`Form::Flat`] scripts, by number of records less one, without and with marks.
pub(super) static FLAT_SCRIPTS: std::sync::LazyLock<Vec<[String; 2]>> = std::sync::LazyLock::new(|| {
    (1..=MAX_FLAT)
        .map(|records| [flat_script(records, false), flat_script(records, true)])
        .collect()
});

/// The statement of [`Form::Flat`] for the records kept, each with its item and key prefix.
pub(super) fn flat_query(
    records: &[(&Record, &NewInboxItem, &str)],
    done: &[i64],
) -> Result<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>> {
    let mut query = sqlx::query(Form::Flat.script(records.len(), !done.is_empty())?);
    for &(record, item, prefix) in records {
        // In the order of the fields (`FLAT_FIELDS`).
        query = query
            .bind(record.appservice_id.clone())
            .bind(record.txn_id.clone())
            .bind(record.received_at)
            .bind(record.number as i64)
            .bind(record.digest.clone())
            .bind(record.first_seq)
            .bind(item.queue_key.clone())
            .bind(format!("{prefix}.{}", item.index))
            .bind(item.kind)
            .bind(item.payload.clone())
            .bind(item.event_id.clone());
    }
    Ok(if done.is_empty() {
        query
    } else {
        query.bind(now_ms()).bind(serde_json::to_string(done)?)
    })
}

