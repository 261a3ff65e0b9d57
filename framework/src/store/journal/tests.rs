//! The journal's file format and turns.

use super::*;

fn item(payload: &str) -> NewInboxItem {
    NewInboxItem {
        queue_key: "!r:x".into(),
        index: 0,
        kind: "timeline",
        payload: payload.into(),
        event_id: None,
    }
}

/// A journal beside `store.db` in a fresh directory, started, numbering from `first_seq`.
fn started(first_seq: i64) -> (tempfile::TempDir, PathBuf, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let (journal, left) = Journal::open(&db).unwrap();
    assert!(left.is_empty());
    journal.start(first_seq).unwrap();
    (dir, db, journal)
}

/// Appends a transaction of one empty event.
fn append(journal: &Journal, txn_id: &str) -> i64 {
    journal
        .append(
            "as",
            TxnName {
                id: txn_id,
                digest: "",
            },
            5,
            vec![item("{}")],
            None,
        )
        .unwrap()
}

fn txn_ids(db: &Path) -> Vec<String> {
    let (_, records) = Journal::open(db).unwrap();
    records.into_iter().map(|r| r.txn_id).collect()
}

#[test]
fn records_come_back_in_order_across_both_files() {
    let (_dir, db, journal) = started(10);
    assert_eq!(append(&journal, "t1"), 10);
    let batch = journal.take().unwrap();
    assert!(journal.take().is_none(), "one batch at a time");
    assert_eq!(
        journal
            .append(
                "as",
                TxnName {
                    id: "t2",
                    digest: ""
                },
                6,
                vec![item("{\"a\":1}"), item("[]")],
                None
            )
            .unwrap(),
        11
    );
    assert_eq!(append(&journal, "t3"), 13);
    assert_eq!(journal.backlog(), 3);
    // Stopped before the first batch was committed: everything comes back, in order.
    drop(journal);
    let (journal, left) = Journal::open(&db).unwrap();
    let txns: Vec<_> = left.iter().map(|r| r.txn_id.as_str()).collect();
    assert_eq!(txns, ["t1", "t2", "t3"]);
    assert_eq!(left[1].first_seq, 11);
    assert_eq!(left[1].items[0].payload, "{\"a\":1}");
    assert_eq!(left[1].received_at, 6);
    journal.start(14).unwrap();
    drop(journal);
    let _ = batch;
    assert!(txn_ids(&db).is_empty(), "start empties the files");
}

#[test]
fn a_finished_batch_is_not_read_back() {
    let (_dir, db, journal) = started(1);
    append(&journal, "t1");
    let batch = journal.take().unwrap();
    append(&journal, "t2");
    journal.finish(&batch).unwrap();
    assert_eq!(journal.backlog(), 1);
    let second = journal.take().unwrap();
    assert_eq!(second.records[0].txn_id, "t2");
    // The next turn goes to the emptied file again.
    append(&journal, "t3");
    drop(journal);
    assert_eq!(txn_ids(&db), ["t2", "t3"]);
}

#[test]
fn a_record_cut_short_is_dropped_and_a_damaged_one_stops_the_start() {
    let (_dir, db, journal) = started(1);
    append(&journal, "t1");
    append(&journal, "t2");
    drop(journal);
    let mut path = db.clone().into_os_string();
    path.push("-inbox-0");
    let whole = std::fs::read(&path).unwrap();

    std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
    assert_eq!(txn_ids(&db), ["t1"]);

    let mut flipped = whole.clone();
    flipped[HEADER + 2] ^= 0xff;
    std::fs::write(&path, &flipped).unwrap();
    let error = Journal::open(&db).unwrap_err().to_string();
    assert!(
        error.contains("store.db-inbox-0") && error.contains("damaged record at byte 0"),
        "{error}"
    );
}

/// A record keeps its digest and its items' event ids; one written before there were
/// either (no trailer) still reads, named by its id alone.
#[test]
fn a_record_keeps_its_digest_and_event_ids_and_old_records_still_read() {
    let record = Record {
        number: 7,
        appservice_id: "as".into(),
        txn_id: "t1".into(),
        digest: "00ff".into(),
        received_at: 5,
        first_seq: 3,
        items: vec![
            NewInboxItem {
                event_id: Some("$e".into()),
                ..item("{}")
            },
            item("[]"),
        ],
        attachment: None,
    };
    let bytes = encode(&record);
    let read = decode(&bytes[HEADER..]).unwrap();
    assert_eq!(read.digest, "00ff");
    let ids: Vec<_> = read.items.iter().map(|i| i.event_id.as_deref()).collect();
    assert_eq!(ids, [Some("$e"), None]);
    // The trailer: the digest, then an id (or "") for each item, each a length and bytes.
    let trailer = 4 + 4 + 4 + 2 + 4;
    let old = decode(&bytes[HEADER..bytes.len() - trailer]).unwrap();
    assert_eq!((old.txn_id.as_str(), old.digest.as_str()), ("t1", ""));
    assert!(old.items.iter().all(|i| i.event_id.is_none()));
    assert_eq!(old.items.len(), 2);
}
