//! What a journal commit costs per record, by batch size and form: a measurement to run by
//! hand (`docs/benchmarks.md`, "Session 38"), not a test of any speed. Pinned to one core, as
//! the benchmark's appservice is:
//!
//! ```text
//! cargo test --release -p trestle --lib --no-run
//! taskset -c 0 target/release/deps/trestle-<hash> commit_costs --ignored --nocapture
//! ```
//!
//! `COMMIT_COSTS_SIZES=8,16` picks the batch sizes (records of one event each).

use super::*;

/// The CPU time this process's threads (the test's and SQLite's) have used, in ns.
fn cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(stat) = std::fs::read_to_string(path) {
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// CPU µs per record of `batches` commits of `size` one-event transactions each, in `form`,
/// on a fresh store, after 200 commits not counted; the batch before is handled before each
/// commit, as under load, and that is counted with it (its journal file emptied, or the done
/// marks that ride along with the commit). Reading the CPU time costs some µs itself, the same in every
/// commit: the figures compare forms and sizes, they are not a commit's absolute cost.
async fn per_record(form: Option<journal::Form>, size: usize, batches: usize) -> f64 {
    per_record_after(form, size, batches, 200).await
}

/// As [`per_record`], after `warm` commits not counted.
async fn per_record_after(
    form: Option<journal::Form>,
    size: usize,
    batches: usize,
    warm: usize,
) -> f64 {
    let (_dir, store) = on_file().await;
    assert!(store.claim_journal());
    let body = "x".repeat(160);
    let mut handled: Vec<i64> = Vec::new();
    let mut counted = 0;
    for batch in 0..warm + batches {
        for i in 0..size {
            let n = batch * size + i;
            let payload = format!(
                r#"{{"type":"m.room.message","room_id":"!room{}:bench","sender":"@u:bench","content":{{"msgtype":"m.text","body":"{body}"}},"origin_server_ts":{},"event_id":"$e{n:043}"}}"#,
                n % 20,
                1_700_000_000_000 + n
            );
            let items = vec![NewInboxItem {
                queue_key: format!("!room{}:bench", n % 20),
                index: 0,
                kind: "timeline",
                payload,
                event_id: Some(format!("$e{n:043}")),
                event_ts: 1_700_000_000_000 + n as i64,
            }];
            let txn = TxnName {
                id: &n.to_string(),
                digest: "0123456789abcdef0123456789abcdef0123456789a",
            };
            store
                .append_to_journal("bench", txn, items, nothing_parsed())
                .unwrap();
        }
        let taken = store.take_journal().unwrap();
        let before = cpu_ns();
        let done = store.journal_handled(std::mem::take(&mut handled));
        let committed = store.commit_journal_as(&taken, &done, form).await.unwrap();
        // What is measured is a commit that stores every record.
        assert_eq!(committed.fresh.len(), size, "{form:?}, {size} records");
        assert!(
            committed.repeated_events.is_empty(),
            "{form:?}, {size} records"
        );
        let after = cpu_ns();
        handled = taken
            .records
            .iter()
            .map(|record| record.first_seq)
            .collect();
        if batch >= warm {
            // Other tests' threads come and go when tests run together: a measurement is run alone.
            counted += after.saturating_sub(before);
        }
    }
    counted as f64 / 1000.0 / (batches * size) as f64
}

#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn commit_costs() {
    let sizes: Vec<usize> = std::env::var("COMMIT_COSTS_SIZES")
        .unwrap_or_else(|_| "1,2,4,8,12,16,24,32".into())
        .split(',')
        .map(|size| size.trim().parse().unwrap())
        .collect();
    println!(
        "records | form the commit picks: µs per record (median of 3, least) | JSON, per item"
    );
    for size in sizes {
        let mut line = format!("{size:7}");
        for form in [None, Some(journal::Form::PerItem)] {
            let mut runs = Vec::new();
            for _ in 0..3 {
                runs.push(per_record(form, size, 4000 / size).await);
            }
            runs.sort_by(f64::total_cmp);
            line += &format!(" | {:.1} ({:.1})", runs[1], runs[0]);
        }
        println!("{line}");
    }
}

/// The measurement's own path, run in CI so that it keeps working: a few commits of each
/// shape it measures (flat, bound, JSON), each storing every record it is given.
#[tokio::test]
async fn the_measured_commits_store_every_record() {
    for size in [1, 9, 33] {
        for form in [None, Some(journal::Form::PerItem)] {
            per_record_after(form, size, 3, 2).await;
        }
    }
}
