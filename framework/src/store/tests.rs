use std::time::Duration;

use sqlx::{Executor, Row};

use super::*;

fn item(index: usize) -> NewInboxItem {
    NewInboxItem {
        queue_key: "!r:x".into(),
        index,
        kind: "timeline",
        payload: "{}".into(),
        event_id: None,
        event_ts: 0,
    }
}

async fn receive(store: &Store, txn_id: &str) -> Option<i64> {
    store
        .receive_transaction_items("as", txn_id, vec![item(0)])
        .await
        .unwrap()
        .map(|items| items[0].seq)
}

async fn seqs(store: &Store) -> Vec<i64> {
    sqlx::query("SELECT seq FROM inbox ORDER BY seq")
        .fetch_all(&mut *store.conn().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A store on a file, where the framework has a connection of its own beside the pool's.
pub(super) async fn on_file() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url).await.unwrap();
    assert!(store.held.is_some());
    (dir, store)
}

async fn pruning_forgets_what_is_old_and_done_and_keeps_the_rest(store: Store) {
    let a = receive(&store, "t1").await.unwrap();
    let b = receive(&store, "t2").await.unwrap();
    store.inbox_done_many(&[a, b]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pending = receive(&store, "t3").await.unwrap();
    let recent = receive(&store, "t4").await.unwrap();
    store.inbox_done(recent).await.unwrap();

    let keep = Duration::from_millis(500);
    // Two items and two transaction ids; nothing from the outbox.
    assert_eq!(store.prune(keep, keep).await.unwrap(), 4);
    assert_eq!(seqs(&store).await, [pending, recent]);
    assert!(
        receive(&store, "t1").await.is_some(),
        "an id older than keep_txn_ids is forgotten"
    );
    assert!(receive(&store, "t3").await.is_none(), "a recent id is not");

    // With everything done and old, the newest row stays, so no seq is handed out twice.
    let newest = receive(&store, "t5").await.unwrap();
    store.inbox_done_many(&seqs(&store).await).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.prune(Duration::ZERO, keep).await.unwrap();
    assert_eq!(store.inbox_depth("as").await.unwrap(), 0);
    let after = receive(&store, "t6").await.unwrap();
    assert!(after > newest, "seq {after} after {newest}");
}

#[tokio::test]
async fn transaction_names_are_kept_in_the_one_b_tree_of_their_key() {
    let (_dir, store) = on_file().await;
    // A rowid table with another primary key is two b-trees, and every received transaction
    // wrote a page of each (migration 0005).
    assert!(
        sqlx::query("SELECT rowid FROM transactions")
            .fetch_all(store.pool())
            .await
            .is_err()
    );
    pruning_forgets_what_is_old_and_done_and_keeps_the_rest(store).await;
}

#[tokio::test]
async fn ghosts_and_memberships_are_kept_in_the_one_b_tree_of_their_key() {
    let (_dir, store) = on_file().await;
    // Each registration and each join wrote to two b-trees before migration 0006.
    for table in ["ghosts", "memberships"] {
        assert!(
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT rowid FROM {table}")))
                .fetch_all(store.pool())
                .await
                .is_err(),
            "{table}"
        );
    }
    store.set_ghost_registered("@g:x").await.unwrap();
    store
        .set_membership("!r:x", "@g:x", Membership::Join)
        .await
        .unwrap();
    let rows = "SELECT COUNT(*) FROM ghosts JOIN memberships USING (user_id) \
                WHERE registered = 1 AND membership = 'join'";
    assert_eq!(count(&store, rows).await, 1);
}

#[tokio::test]
async fn pruning_in_memory() {
    pruning_forgets_what_is_old_and_done_and_keeps_the_rest(Store::in_memory().await.unwrap())
        .await;
}

#[tokio::test]
async fn pruning_on_a_file() {
    let (_dir, store) = on_file().await;
    pruning_forgets_what_is_old_and_done_and_keeps_the_rest(store).await;
}

#[tokio::test]
async fn a_script_its_caller_dropped_midway_is_rolled_back_before_anything_else_runs() {
    let (_dir, store) = on_file().await;
    // What a dropped caller leaves: sqlx stops a script nobody reads any more, so its BEGIN
    // ran and its COMMIT did not.
    {
        let mut held = store.held.as_ref().unwrap().lock().await;
        held.clean = false;
        held.conn
            .execute("BEGIN; INSERT INTO ghosts (user_id, registered) VALUES ('@half:x', 1);")
            .await
            .unwrap();
    }
    assert!(
        store.registered_ghosts().await.unwrap().is_empty(),
        "the uncommitted row is not read"
    );
    // Were the transaction still open, this BEGIN would nest and fail.
    store
        .apply(&[crate::store::Write::Registered("@g:x".into())])
        .await
        .unwrap();
    assert_eq!(store.registered_ghosts().await.unwrap(), ["@g:x"]);
}

#[tokio::test]
async fn plugins_on_the_pool_and_the_framework_on_its_own_connection_see_each_others_writes() {
    let (_dir, store) = on_file().await;
    store
        .pool()
        .execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('from a plugin')")
        .await
        .unwrap();
    let seq = receive(&store, "t1").await.unwrap();
    let body: String = sqlx::query("SELECT body FROM notes")
        .fetch_one(&mut *store.conn().await.unwrap())
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "from a plugin");
    let seen: i64 = sqlx::query("SELECT seq FROM inbox_pending")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, seq);
}

#[tokio::test]
async fn on_a_file_the_framework_numbers_inbox_items_itself_and_goes_on_after_a_restart() {
    let (dir, store) = on_file().await;
    let first = store
        .receive_transaction_items("as", "t1", vec![item(0), item(1)])
        .await
        .unwrap()
        .unwrap();
    let second = store
        .receive_transaction_items("as", "t2", vec![item(0)])
        .await
        .unwrap()
        .unwrap();
    assert!(first[0].seq < first[1].seq && first[1].seq < second[0].seq);
    // The numbers handed back are the ones stored.
    let stored: Vec<(i64, String)> = sqlx::query("SELECT seq, item_key FROM inbox ORDER BY seq")
        .fetch_all(&mut *store.conn().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let handed: Vec<(i64, String)> = first
        .iter()
        .chain(&second)
        .map(|item| (item.seq, item.item_key.clone()))
        .collect();
    assert_eq!(stored, handed);

    drop(store);
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url).await.unwrap();
    let after = receive(&store, "t3").await.unwrap();
    assert!(after > second[0].seq, "seq {after} after a restart");
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut *store.conn().await.unwrap())
        .await
        .unwrap()
}

/// The seqs of the items with a waiting row, in order.
async fn waiting(store: &Store) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM inbox_pending ORDER BY seq")
        .fetch_all(&mut *store.conn().await.unwrap())
        .await
        .unwrap()
}

/// Appends a transaction of `items` items, and commits it as a batch of its own: the seq of
/// its first item.
async fn commit_alone(store: &Store, txn_id: &str, items: usize) -> i64 {
    append(store, txn_id, items);
    let batch = store.take_journal().unwrap();
    store.commit_journal(&batch, &[]).await.unwrap();
    batch.records[0].first_seq
}

fn append(store: &Store, txn_id: &str, items: usize) {
    store
        .append_to_journal(
            "as",
            TxnName {
                id: txn_id,
                digest: "",
            },
            (0..items).map(item).collect(),
            nothing_parsed(),
        )
        .unwrap();
}

#[tokio::test]
async fn a_journal_batch_stores_each_new_id_once_and_skips_ids_seen_before() {
    let (_dir, store) = on_file().await;
    assert!(store.claim_journal());
    assert!(!store.claim_journal(), "one appservice commits a journal");
    append(&store, "t1", 1);
    let batch = store.take_journal().unwrap();
    assert_eq!(
        store.commit_journal(&batch, &[]).await.unwrap().fresh.len(),
        1
    );
    // Sent again after it was committed, twice in one batch, and a new one.
    append(&store, "t1", 1);
    append(&store, "t2", 2);
    append(&store, "t2", 2);
    assert_eq!(store.journal_backlog(), 3);
    let batch = store.take_journal().unwrap();
    let fresh = store.commit_journal(&batch, &[]).await.unwrap().fresh;
    let numbers: Vec<u64> = batch.records.iter().map(|r| r.number).collect();
    assert_eq!(fresh.into_iter().collect::<Vec<_>>(), [numbers[1]]);
    assert_eq!(store.journal_backlog(), 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM transactions").await, 2);
    // t1's item, then t2's two, numbered as appended.
    let first = batch.records[1].first_seq;
    assert_eq!(seqs(&store).await[1..], [first, first + 1]);
    // The sqlx path numbers after what the journal handed out, even what it skipped.
    let next = receive(&store, "t3").await.unwrap();
    assert_eq!(next, batch.records[2].first_seq + 2);
}

#[tokio::test]
async fn done_marks_ride_along_with_a_journal_batch() {
    let (_dir, store) = on_file().await;
    store.claim_journal();
    let first = commit_alone(&store, "t1", 2).await;
    // Its items' waiting rows written (as a read of the inbox would have them), the first
    // handled needs its mark.
    store.settle_journal().await.unwrap();
    assert_eq!(store.journal_handled(vec![first]), [first]);
    append(&store, "t2", 1);
    let batch = store.take_journal().unwrap();
    store.commit_journal(&batch, &[first]).await.unwrap();
    store.settle_journal().await.unwrap();
    assert_eq!(waiting(&store).await, [first + 1, first + 2]);
}

#[tokio::test]
async fn what_the_journal_held_at_a_crash_is_committed_at_the_next_start_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.claim_journal();
    append(&store, "t1", 1);
    // Committed, but "crashed" before its file was emptied.
    let batch = store.take_journal().unwrap();
    journal::commit_records(&mut store.conn().await.unwrap(), &batch.records, &[])
        .await
        .unwrap();
    append(&store, "t2", 2);
    append(&store, "t3", 1);
    let last = store.journal_backlog();
    assert_eq!(last, 3);
    drop(batch);
    drop(store);

    let store = Store::connect(&url).await.unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM transactions").await, 3);
    assert_eq!(seqs(&store).await.len(), 4, "t1 once, t2 and t3");
    assert_eq!(store.journal_backlog(), 0);
    // Resent by the homeserver, which never got its answer: nothing new.
    store.claim_journal();
    append(&store, "t3", 1);
    let batch = store.take_journal().unwrap();
    assert!(
        store
            .commit_journal(&batch, &[])
            .await
            .unwrap()
            .fresh
            .is_empty()
    );
    drop(store);
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        seqs(&store).await.len(),
        4,
        "and nothing found again at the next start"
    );
}

/// The waiting rows of a journal batch are written late (`store/journal.rs`): after a crash,
/// every item of the batches the journal kept waits again, handled or not, since nothing
/// recorded their handling; items of a batch settled, or emptied once all were handled, wait
/// only if they were not handled.
#[tokio::test]
async fn a_start_has_the_items_of_the_batches_the_journal_kept_handled_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.claim_journal();
    // t1: both items handled while kept, so emptied with no row written.
    let t1 = commit_alone(&store, "t1", 2).await;
    assert!(store.journal_handled(vec![t1, t1 + 1]).is_empty());
    // t2: settled with one item not handled; the other was handled before, so has no row.
    let t2 = commit_alone(&store, "t2", 2).await;
    assert!(store.journal_handled(vec![t2]).is_empty());
    store.settle_journal().await.unwrap();
    assert!(!store.journal_keeps_batches());
    assert_eq!(waiting(&store).await, [t2 + 1]);
    // t3: kept, one item handled, when the process crashes.
    let t3 = commit_alone(&store, "t3", 2).await;
    assert!(store.journal_handled(vec![t3]).is_empty());
    assert!(store.journal_keeps_batches());
    assert_eq!(waiting(&store).await, [t2 + 1], "t3 has no rows yet");
    drop(store);

    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        waiting(&store).await,
        [t2 + 1, t3, t3 + 1],
        "t3's items both wait again; t1's and t2's handled ones do not"
    );
    assert_eq!(seqs(&store).await.len(), 6, "nothing stored twice");
    assert_eq!(store.inbox_depth("as").await.unwrap(), 3);
}

/// The items of a kept batch count as waiting wherever the inbox is read: its depth, its
/// queues, a queue's items.
#[tokio::test]
async fn the_items_of_a_kept_batch_are_found_wherever_the_inbox_is_read() {
    let (_dir, store) = on_file().await;
    store.claim_journal();
    let first = commit_alone(&store, "t1", 2).await;
    assert!(store.journal_keeps_batches());
    assert_eq!(store.inbox_depth("as").await.unwrap(), 2);
    assert!(!store.journal_keeps_batches(), "settled by the count");
    // Handled now, the first needs its mark.
    assert_eq!(store.journal_handled(vec![first]), [first]);
    store.inbox_done(first).await.unwrap();

    append(&store, "t2", 1);
    let batch = store.take_journal().unwrap();
    store.commit_journal(&batch, &[]).await.unwrap();
    assert_eq!(
        store.inbox_pending_queues("as", 10).await.unwrap(),
        ["!r:x"]
    );
    append(&store, "t3", 1);
    let batch = store.take_journal().unwrap();
    store.commit_journal(&batch, &[]).await.unwrap();
    let read: Vec<i64> = store
        .inbox_next("as", "!r:x", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|item| item.seq)
        .collect();
    assert_eq!(read, [first + 1, first + 2, first + 3]);
}

#[tokio::test]
async fn a_full_journal_makes_receivers_wait_for_the_commit() {
    let (_dir, store) = on_file().await;
    store.claim_journal();
    for i in 0..journal::MAX_WAITING_ITEMS {
        append(&store, &format!("t{i}"), 1);
    }
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.journal_room().await })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!waiting.is_finished(), "the backlog is full");
    let batch = store.take_journal().unwrap();
    store.commit_journal(&batch, &[]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the commit lets the receiver go on")
        .unwrap();
}

/// A plugin's transaction that reads, then writes after the framework's connection committed,
/// still commits: `Store::begin` took the write lock first, and the framework's write waited.
#[tokio::test]
async fn a_plugin_transaction_that_reads_then_writes_survives_a_framework_commit_between() {
    let (_dir, store) = on_file().await;
    store
        .pool()
        .execute("CREATE TABLE plugin (n INTEGER)")
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plugin")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let framework = {
        let store = store.clone();
        tokio::spawn(async move { receive(&store, "t1").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("INSERT INTO plugin (n) VALUES ($1)")
        .bind(before)
        .execute(&mut *tx)
        .await
        .expect("the write after the framework's commit");
    tx.commit().await.unwrap();
    assert!(framework.await.unwrap().is_some());
}

/// Timeline items of the events `ids`, in order, each with its [`event_time`].
fn event_items(ids: &[&str]) -> Vec<NewInboxItem> {
    ids.iter()
        .enumerate()
        .map(|(index, event_id)| NewInboxItem {
            event_id: Some((*event_id).to_owned()),
            event_ts: event_time(event_id),
            ..item(index)
        })
        .collect()
}

/// The `origin_server_ts` the tests give the event `id`: one per id, as an event has.
fn event_time(id: &str) -> i64 {
    1_700_000_000_000 + id.bytes().map(i64::from).sum::<i64>()
}

/// The inbox's events, with their times and item keys, in order.
async fn stored_events(store: &Store) -> Vec<(String, i64, String)> {
    sqlx::query_as("SELECT event_id, event_ts, item_key FROM inbox ORDER BY seq")
        .fetch_all(&mut *store.conn().await.unwrap())
        .await
        .unwrap()
}

/// `(event, its time, item key)`, as [`stored_events`] reads them.
fn events_with_times(events: &[(&str, &str)]) -> Vec<(String, i64, String)> {
    events
        .iter()
        .map(|(id, key)| ((*id).to_owned(), event_time(id), (*key).to_owned()))
        .collect()
}

/// Appends a transaction named by `txn_id` and `digest` whose items are the events `events`.
fn append_events(store: &Store, txn_id: &str, digest: &str, events: &[&str]) {
    let items = event_items(events);
    let txn = TxnName { id: txn_id, digest };
    store
        .append_to_journal("as", txn, items, nothing_parsed())
        .unwrap();
}

/// Through the journal, a transaction is its id and digest: an id again with another digest is
/// new (and said to reuse the id), in the same batch or a later one; an event is stored once,
/// whichever transaction brings it again.
#[tokio::test]
async fn a_journal_batch_names_transactions_by_id_and_digest_and_stores_each_event_once() {
    names_transactions_and_stores_each_event_once(None).await;
}

/// The same batches in each of the commit script's forms, whichever the batch would get.
#[tokio::test]
async fn both_forms_of_the_commit_name_transactions_and_store_each_event_once() {
    names_transactions_and_stores_each_event_once(Some(journal::Form::PerRecord)).await;
    names_transactions_and_stores_each_event_once(Some(journal::Form::PerItem)).await;
}

async fn names_transactions_and_stores_each_event_once(form: Option<journal::Form>) {
    let (_dir, store) = on_file().await;
    assert!(store.claim_journal());
    append_events(&store, "t1", "aaaa", &["$x"]);
    append_events(&store, "t1", "bbbb", &["$y", "$x"]);
    let batch = store.take_journal().unwrap();
    let numbers: Vec<u64> = batch.records.iter().map(|r| r.number).collect();
    let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
    assert_eq!(committed.fresh.len(), 2, "{committed:?}");
    assert_eq!(committed.reused.iter().collect::<Vec<_>>(), [&numbers[1]]);
    let second = batch.records[1].first_seq;
    assert_eq!(
        committed.repeated_events.iter().collect::<Vec<_>>(),
        [&(second + 1)],
        "$x again in the same batch"
    );
    // Later: a resend of the second, the first's contents under the same id again (a new
    // transaction, whose event is stored already), and a new one repeating $y.
    append_events(&store, "t1", "bbbb", &["$y", "$x"]);
    append_events(&store, "t1", "aaaa", &["$x"]);
    append_events(&store, "t2", "cccc", &["$y", "$z"]);
    let batch = store.take_journal().unwrap();
    let numbers: Vec<u64> = batch.records.iter().map(|r| r.number).collect();
    let committed = store.commit_journal_as(&batch, &[], form).await.unwrap();
    let mut fresh: Vec<_> = committed.fresh.iter().copied().collect();
    fresh.sort();
    assert_eq!(fresh, [numbers[1], numbers[2]]);
    let third = batch.records[2].first_seq;
    assert!(
        committed
            .repeated_events
            .contains(&batch.records[1].first_seq)
    );
    assert!(committed.repeated_events.contains(&third));
    assert!(!committed.repeated_events.contains(&(third + 1)));
    assert_eq!(
        stored_events(&store).await,
        events_with_times(&[
            ("$x", "t1~aaaa.0"),
            ("$y", "t1~bbbb.0"),
            ("$z", "t2~cccc.1")
        ])
    );
}

/// The sqlx path (no journal) names transactions and stores events the same way.
#[tokio::test]
async fn a_transaction_is_named_by_id_and_digest_without_the_journal() {
    let store = Store::in_memory().await.unwrap();
    let receive = async |id, digest, ids: &[&str]| {
        store
            .receive_and_mark_done("as", TxnName { id, digest }, event_items(ids), &[])
            .await
            .unwrap()
    };
    let first = receive("t1", "aaaa", &["$x", "$x"]).await.unwrap();
    assert!(!first.reused);
    assert!(first.items[0].is_some() && first.items[1].is_none());
    assert!(receive("t1", "aaaa", &["$x"]).await.is_none(), "a resend");
    let reused = receive("t1", "bbbb", &["$x", "$y"]).await.unwrap();
    assert!(reused.reused);
    assert!(reused.items[0].is_none(), "$x was stored before");
    assert_eq!(reused.items[1].as_ref().unwrap().item_key, "t1~bbbb.1");
    assert!(receive("t1", "bbbb", &["$x", "$y"]).await.is_none());
    assert_eq!(
        stored_events(&store).await,
        events_with_times(&[("$x", "t1~aaaa.0"), ("$y", "t1~bbbb.1")])
    );
}

/// The digest is the first 8 bytes of SHA-256 over the event ids, one per line, in hex: stored
/// digests must stay comparable across versions, so the format is pinned here.
#[test]
fn the_digest_is_sixteen_hex_digits_of_sha256_over_the_event_ids() {
    let items = event_items(&["$a", "$b"]);
    // python3 -c "import hashlib; print(hashlib.sha256(b'\$a\n\$b\n').hexdigest()[:16])"
    assert_eq!(inbox::digest(&items), "80aee2a077a6eac3");
}

/// What a receiver would keep with a record: nothing, in these tests.
fn nothing_parsed() -> crate::store::Parsed {
    crate::store::Parsed {
        items: Vec::new(),
        skipped: 0,
        committed: None,
    }
}

mod commit;
mod costs;
mod flat;

/// The receive script writes the waiting row of each item it stores, and of no other: items
/// numbered by the store (in memory) and by the journal (on a file, with another appservice
/// committing the journal), a resend, and an event the inbox held already.
#[tokio::test]
async fn the_receive_script_writes_a_waiting_row_for_each_item_it_stores() {
    let (_dir, on_file) = on_file().await;
    for store in [Store::in_memory().await.unwrap(), on_file] {
        let txn = |id| TxnName { id, digest: "" };
        let received = store
            .receive_and_mark_done("as", txn("t1"), event_items(&["$a", "$b"]), &[])
            .await
            .unwrap()
            .unwrap();
        let first = received.items[0].as_ref().unwrap().seq;
        store.inbox_done(first).await.unwrap();
        assert!(
            store
                .receive_and_mark_done("as", txn("t1"), event_items(&["$a", "$b"]), &[])
                .await
                .unwrap()
                .is_none(),
            "a resend"
        );
        let received = store
            .receive_and_mark_done("as", txn("t2"), event_items(&["$b", "$c"]), &[])
            .await
            .unwrap()
            .unwrap();
        assert!(received.items[0].is_none(), "$b was stored before");
        let waiting = waiting(&store).await;
        let stored: Vec<i64> = sqlx::query_scalar("SELECT seq FROM inbox ORDER BY seq")
            .fetch_all(&mut *store.conn().await.unwrap())
            .await
            .unwrap();
        assert_eq!(stored.len(), 3, "$a, $b, $c");
        assert_eq!(waiting, stored[1..], "all but the handled $a");
    }
}
