//! The journal's commit of batches of one-event transactions: flat (the form the commit takes
//! for them) as in the JSON forms.

use super::*;

/// Batches of one record of one event, the shape a transaction of one event committed alone
/// has, flat (the form the commit takes for them) and in a JSON form: the same transactions new, reused and
/// resent, the same events stored, the same done marks written.
#[tokio::test]
async fn a_batch_of_one_event_commits_as_the_general_form_does() {
    for form in [None, Some(journal::Form::PerItem)] {
        let (_dir, store) = on_file().await;
        assert!(store.claim_journal());
        let mut told = Vec::new();
        let mut first = None;
        for (txn, digest, event) in [
            ("t1", "aaaa", "$x"),
            ("t1", "aaaa", "$x"),
            ("t1", "bbbb", "$y"),
            ("t2", "cccc", "$x"),
            ("t1", "aaaa", "$x"),
        ] {
            append_events(&store, txn, digest, &[event]);
            let batch = store.take_journal().unwrap();
            let (number, seq) = (batch.records[0].number, batch.records[0].first_seq);
            // The first item is marked done with the third commit.
            let done: Vec<i64> = first.filter(|_| told.len() == 2).into_iter().collect();
            let done = store.journal_handled(done);
            first.get_or_insert(seq);
            let committed = store.commit_journal_as(&batch, &done, form).await.unwrap();
            told.push((
                committed.fresh.contains(&number),
                committed.reused.contains(&number),
                committed.repeated_events.contains(&seq),
            ));
        }
        assert_eq!(
            told,
            [
                (true, false, false),
                (false, false, true),
                (true, true, false),
                (true, false, true),
                (true, true, true),
            ],
            "{form:?}: (new, id reused, event not stored) for each"
        );
        store.settle_journal().await.unwrap();
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT event_id, item_key, NOT EXISTS (SELECT 1 FROM inbox_pending AS p WHERE p.seq = inbox.seq) FROM inbox ORDER BY seq",
        )
        .fetch_all(&mut *store.conn().await.unwrap())
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                ("$x".to_owned(), "t1~aaaa.0".to_owned(), 1),
                ("$y".to_owned(), "t1~bbbb.0".to_owned(), 0),
            ],
            "{form:?}"
        );
    }
}

/// A gathered batch of one-event transactions, flat and in a JSON form:
/// an id again with its digest is kept once, with another it is new and reused, and an event
/// twice in the batch is stored for its first transaction only.
#[tokio::test]
async fn a_batch_of_one_event_transactions_commits_as_the_general_form_does() {
    one_event_transactions_commit_as_the_general_form_does(0).await;
}

/// The same batch after ten more one-event transactions: too many records for the flat
/// scripts, so bound (`bound.rs`), as gathered batches under a steady load of one event per
/// transaction often are.
#[tokio::test]
async fn a_batch_of_more_one_event_transactions_than_the_flat_scripts_hold_commits_as_the_general_form_does()
 {
    one_event_transactions_commit_as_the_general_form_does(10).await;
}

/// The batch of the two tests above, after `before` one-event transactions of their own.
async fn one_event_transactions_commit_as_the_general_form_does(before: usize) {
    for form in [None, Some(journal::Form::PerItem)] {
        let (_dir, store) = on_file().await;
        assert!(store.claim_journal());
        let earlier: Vec<String> = (0..before).map(|n| format!("$b{n}")).collect();
        for (n, event) in earlier.iter().enumerate() {
            append_events(&store, &format!("b{n}"), "0000", &[event]);
        }
        for (txn, digest, event) in [
            ("t1", "aaaa", "$x"),
            ("t1", "bbbb", "$y"),
            ("t1", "aaaa", "$x"),
            ("t2", "cccc", "$x"),
        ] {
            append_events(&store, txn, digest, &[event]);
        }
        let batch = store.take_journal().unwrap();
        assert_eq!(batch.records.len(), before + 4);
        let numbers: Vec<u64> = batch.records[before..].iter().map(|r| r.number).collect();
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        let mut fresh: Vec<_> = committed.fresh.iter().copied().collect();
        fresh.sort();
        let mut expected: Vec<u64> = batch.records[..before].iter().map(|r| r.number).collect();
        expected.extend([numbers[0], numbers[1], numbers[3]]);
        assert_eq!(fresh, expected, "{form:?}");
        assert_eq!(
            committed.reused.iter().collect::<Vec<_>>(),
            [&numbers[1]],
            "{form:?}"
        );
        let seq = |i: usize| batch.records[before + i].first_seq;
        assert!(committed.repeated_events.contains(&seq(3)), "{form:?}");
        assert!(!committed.repeated_events.contains(&seq(0)), "{form:?}");
        assert!(!committed.repeated_events.contains(&seq(1)), "{form:?}");
        // A resend of the second (t1 now names it), and a new one.
        append_events(&store, "t1", "bbbb", &["$y"]);
        append_events(&store, "t3", "dddd", &["$z"]);
        let batch = store.take_journal().unwrap();
        let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
        assert_eq!(
            committed.fresh.iter().collect::<Vec<_>>(),
            [&batch.records[1].number],
            "{form:?}"
        );
        assert!(committed.reused.is_empty(), "{form:?}");
        let keys: Vec<String> = (0..before).map(|n| format!("b{n}~0000.0")).collect();
        let mut expected: Vec<(&str, &str)> = earlier
            .iter()
            .zip(&keys)
            .map(|(event, key)| (event.as_str(), key.as_str()))
            .collect();
        expected.extend([
            ("$x", "t1~aaaa.0"),
            ("$y", "t1~bbbb.0"),
            ("$z", "t3~dddd.0"),
        ]);
        assert_eq!(
            stored_events(&store).await,
            events_with_times(&expected),
            "{form:?}"
        );
    }
}
