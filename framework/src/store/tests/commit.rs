//! The journal's commit of batches of many items: with every value bound (the form the commit
//! takes for them) as in the JSON forms.

use super::*;

/// The events `$<prefix><i>` for `i` in `range`.
fn events(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("${prefix}{i}")).collect()
}

/// Each form a commit can take: the one it picks for the batch, and both JSON forms.
const FORMS: [Option<journal::Form>; 3] = [
    None,
    Some(journal::Form::PerRecord),
    Some(journal::Form::PerItem),
];

/// Appends a transaction of the events `ids`.
fn append(store: &Store, txn_id: &str, digest: &str, ids: &[String]) {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    append_events(store, txn_id, digest, &ids);
}

/// Each inbox row, in the order of seqs: seq, event id, item key, done or not (once the
/// journal's kept batches are settled). Each event's time is checked to be stored with it.
async fn inbox_rows(store: &Store) -> Vec<(i64, String, String, String, i64)> {
    store.settle_journal().await.unwrap();
    let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT seq, event_id, item_key, payload, NOT EXISTS (SELECT 1 FROM inbox_pending AS p WHERE p.seq = inbox.seq), event_ts FROM inbox \
         ORDER BY seq",
    )
    .fetch_all(&mut *store.conn().await.unwrap())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(seq, event, key, payload, done, time)| {
            assert_eq!(time, event_time(&event), "{event}'s time");
            (seq, event, key, payload, done)
        })
        .collect()
}

/// Batches of many items, in each form: a record of 33 events, one repeating one of them, a
/// resend in the same batch and later, an id reused, and batches too large for the bound
/// scripts; the same transactions new, reused and resent, the same events stored in the
/// order of their seqs, the same done marks.
#[tokio::test]
async fn a_batch_of_many_items_commits_as_the_json_forms_do() {
    let mut outcomes = Vec::new();
    for form in FORMS {
        let (_dir, store) = on_file().await;
        assert!(store.claim_journal());
        append(&store, "t0", "0000", &events("a", 0..1));
        let batch = store.take_journal().unwrap();
        let first = batch.records[0].first_seq;
        store.commit_journal_as(&batch, &[], form).await.unwrap();

        let many = events("e", 0..33);
        append(&store, "t1", "aaaa", &many);
        append(&store, "t2", "bbbb", &["$e5".into(), "$n".into()]);
        append(&store, "t1", "aaaa", &many);
        let batch = store.take_journal().unwrap();
        let numbers: Vec<u64> = batch.records.iter().map(|r| r.number).collect();
        let seq = |record: usize| batch.records[record].first_seq;
        // The first batch's item handled: kept, its batch needs no mark.
        let done = store.journal_handled(vec![first]);
        let committed = store.commit_journal_as(&batch, &done, form).await.unwrap();
        let mut fresh: Vec<_> = committed.fresh.iter().copied().collect();
        fresh.sort();
        assert_eq!(fresh, [numbers[0], numbers[1]], "{form:?}");
        assert!(committed.reused.is_empty(), "{form:?}");
        assert!(committed.repeated_events.contains(&seq(1)), "{form:?}");
        assert!(
            !committed.repeated_events.contains(&(seq(1) + 1)),
            "{form:?}"
        );
        assert!(
            !committed.repeated_events.contains(&(seq(0) + 32)),
            "{form:?}"
        );

        // A resend, a transaction of 40 new events, an id reused with an event stored before.
        append(&store, "t1", "aaaa", &many);
        append(&store, "t3", "cccc", &events("f", 0..40));
        append(&store, "t1", "dddd", &["$e0".into(), "$m".into()]);
        let batch = store.take_journal().unwrap();
        let numbers: Vec<u64> = batch.records.iter().map(|r| r.number).collect();
        let seq = |record: usize| batch.records[record].first_seq;
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        let mut fresh: Vec<_> = committed.fresh.iter().copied().collect();
        fresh.sort();
        assert_eq!(fresh, [numbers[1], numbers[2]], "{form:?}");
        assert_eq!(
            committed.reused.iter().collect::<Vec<_>>(),
            [&numbers[2]],
            "{form:?}"
        );
        assert!(committed.repeated_events.contains(&seq(2)), "{form:?}");
        assert!(!committed.repeated_events.contains(&seq(1)), "{form:?}");

        // Larger than the largest bound script, in items and in records.
        append(&store, "t4", "eeee", &events("g", 0..200));
        append(&store, "t5", "ffff", &events("h", 0..100));
        let batch = store.take_journal().unwrap();
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        assert_eq!(committed.fresh.len(), 2, "{form:?}");
        for n in 0..33 {
            append(
                &store,
                &format!("u{n}"),
                "1111",
                &events(&format!("u{n}."), 0..2),
            );
        }
        let batch = store.take_journal().unwrap();
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        assert_eq!(committed.fresh.len(), 33, "{form:?}");
        outcomes.push((form, inbox_rows(&store).await));
    }
    let (_, bound) = &outcomes[0];
    let expected: Vec<String> = ["$a0"]
        .into_iter()
        .map(String::from)
        .chain(events("e", 0..33))
        .chain(["$n".into()])
        .chain(events("f", 0..40))
        .chain(["$m".into()])
        .chain(events("g", 0..200))
        .chain(events("h", 0..100))
        .chain((0..33).flat_map(|n| events(&format!("u{n}."), 0..2)))
        .collect();
    assert_eq!(
        bound.iter().map(|row| row.1.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(bound[1].2, "t1~aaaa.0");
    assert_eq!(bound[34].2, "t2~bbbb.1");
    assert_eq!(bound[75].2, "t1~dddd.1");
    assert_eq!(
        bound.iter().map(|row| row.4).collect::<Vec<_>>()[..2],
        [1, 0],
        "the first marked done with the batch after it"
    );
    for (form, rows) in &outcomes[1..] {
        assert_eq!(rows, bound, "{form:?} against the bound form");
    }
}

/// A batch of three records, which the bound script holds in its room for four: an event
/// stored by an earlier batch, and in no other record of this one, is told as repeated (so
/// that it is not handled again), in every form.
#[tokio::test]
async fn an_event_stored_before_is_told_in_a_batch_of_three_records() {
    for form in FORMS {
        let (_dir, store) = on_file().await;
        assert!(store.claim_journal());
        append(&store, "t0", "0000", &events("a", 0..1));
        let batch = store.take_journal().unwrap();
        store.commit_journal_as(&batch, &[], form).await.unwrap();

        append(&store, "t1", "1111", &events("x", 0..2));
        append(&store, "t2", "2222", &events("y", 0..2));
        append(&store, "t3", "3333", &["$a0".into(), "$z".into()]);
        let batch = store.take_journal().unwrap();
        let stored_before = batch.records[2].first_seq;
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        assert_eq!(committed.fresh.len(), 3, "{form:?}");
        assert_eq!(
            committed.repeated_events.iter().collect::<Vec<_>>(),
            [&stored_before],
            "{form:?}"
        );
        let events: Vec<String> = inbox_rows(&store)
            .await
            .into_iter()
            .map(|row| row.1)
            .collect();
        assert_eq!(
            events,
            ["$a0", "$x0", "$x1", "$y0", "$y1", "$z"],
            "{form:?}"
        );
    }
}

/// A batch committed a second time: nothing is stored again, and an item handled in between
/// does not wait again (a commit writes no waiting rows: the batch's items get theirs when it
/// is settled, and only those not handled), in every form and for a batch of one-event records
/// (the flat script). A start writes the rows of what it finds in the journal itself
/// (`a_start_has_the_items_of_the_batches_the_journal_kept_handled_again`).
#[tokio::test]
async fn a_batch_committed_again_leaves_its_handled_items_handled() {
    let shapes = FORMS.iter().map(|&form| (form, 3)).chain([(None, 1)]);
    for (form, per_record) in shapes {
        let (_dir, store) = on_file().await;
        assert!(store.claim_journal());
        for n in 0..3 {
            let ids = events(&format!("r{n}."), 0..per_record);
            append(&store, &format!("t{n}"), "aaaa", &ids);
        }
        let batch = store.take_journal().unwrap();
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        assert_eq!(committed.fresh.len(), 3, "{form:?}");
        let handled = batch.records[1].first_seq;
        for seq in store.journal_handled(vec![handled]) {
            store.inbox_done(seq).await.unwrap();
        }

        let again = store.commit_journal_as(&batch, &[], form).await.unwrap();
        assert!(again.fresh.is_empty(), "{form:?}: resends all");
        let rows = inbox_rows(&store).await;
        assert_eq!(rows.len(), 3 * per_record, "{form:?}: nothing stored twice");
        let handled_rows: Vec<i64> = rows
            .iter()
            .filter(|row| row.4 == 1)
            .map(|row| row.0)
            .collect();
        assert_eq!(handled_rows, [handled], "{form:?}: the handled item only");
    }
}
