use std::time::Duration;

use sqlx::{Executor, Row};

use super::*;

fn item(index: usize) -> NewInboxItem {
    NewInboxItem {
        queue_key: "!r:x".into(),
        index,
        kind: "timeline",
        payload: "{}".into(),
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
        .apply(&[crate::writeback::Write::Registered("@g:x".into())])
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
    let seen: i64 = sqlx::query("SELECT seq FROM inbox WHERE done_at IS NULL")
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

async fn direct_commits(store: &Store) -> u32 {
    let held = store.held.as_ref().unwrap().lock().await;
    held.direct.as_ref().expect("the second connection").commits
}

#[tokio::test]
async fn the_receive_commit_skips_sqlx_unless_another_connection_writes_then_waits_for_it() {
    let (_dir, store) = on_file().await;
    let first = receive(&store, "t1").await.unwrap();
    assert_eq!(direct_commits(&store).await, 1);

    // A plugin holds the write lock: the direct connection cannot wait for it, so the receive
    // goes through sqlx, which waits.
    let mut plugin = store.pool().begin().await.unwrap();
    (&mut *plugin)
        .execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine')")
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { receive(&store, "t2").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the receive waits for the plugin");
    plugin.commit().await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second, first + 1);
    assert_eq!(
        direct_commits(&store).await,
        1,
        "the second went through sqlx"
    );

    // Then straight on, numbered after the one sqlx wrote, and a repeat stores nothing.
    let third = receive(&store, "t3").await.unwrap();
    assert_eq!(third, second + 1);
    assert_eq!(receive(&store, "t2").await, None);
    assert_eq!(direct_commits(&store).await, 3);
    assert_eq!(seqs(&store).await, [first, second, third]);
}

#[tokio::test]
async fn the_direct_connection_has_the_wal_checkpointed_now_and_then() {
    let (dir, store) = on_file().await;
    let file = dir.path().join("store.db");
    receive(&store, "t1").await.unwrap();
    // The migrations and t1 are still in the WAL: the sqlx connections check point only after
    // many pages, the direct one never itself.
    let before = std::fs::metadata(&file).unwrap().len();
    store
        .held
        .as_ref()
        .unwrap()
        .lock()
        .await
        .direct
        .as_mut()
        .unwrap()
        .commits = direct::CHECKPOINT_EVERY - 1;
    receive(&store, "t2").await.unwrap();
    assert_eq!(direct_commits(&store).await, 0);
    // In a task of its own.
    let mut after = before;
    for _ in 0..100 {
        after = std::fs::metadata(&file).unwrap().len();
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        after > before,
        "pages copied into the file: {before} → {after} bytes"
    );
}

#[tokio::test]
async fn after_other_framework_statements_one_receive_goes_through_the_framework_connection() {
    let (_dir, store) = on_file().await;
    receive(&store, "t1").await.unwrap();
    receive(&store, "t2").await.unwrap();
    assert_eq!(direct_commits(&store).await, 2);
    // The outbox, a stored backlog or the writeback used the framework's connection.
    store.inbox_depth("as").await.unwrap();
    receive(&store, "t3").await.unwrap();
    assert_eq!(
        direct_commits(&store).await,
        2,
        "t3 kept that connection's cache"
    );
    receive(&store, "t4").await.unwrap();
    assert_eq!(direct_commits(&store).await, 3, "t4 went direct again");
    assert_eq!(store.inbox_depth("as").await.unwrap(), 4);
}
