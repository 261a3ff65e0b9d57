//! One store test suite, run against SQLite and against a real PostgreSQL server (from
//! `trestle-postgres-harness`: a missing PostgreSQL is a failure, never a skip).

use std::time::Duration;

use crate::{
    Store,
    store::{Backend, Backlog, Membership, NewInboxItem, OutboxState, now_ms},
};

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    (Store::connect(&url).await.unwrap(), dir)
}

async fn postgres() -> (Store, ()) {
    let url = trestle_postgres_harness::fresh_database().await;
    (Store::connect(&url).await.unwrap(), ())
}

fn item(queue: &str, index: usize, payload: &str) -> NewInboxItem {
    NewInboxItem {
        queue_key: queue.into(),
        index,
        kind: "timeline",
        payload: payload.into(),
        event_id: None,
        event_ts: 0,
    }
}

async fn transactions_are_stored_once(store: Store) {
    let items = vec![
        item("!a", 0, "{\"n\":1}"),
        item("!b", 1, "{\"n\":2}"),
        item("!a", 2, "{\"n\":3}"),
    ];
    assert!(store.receive_transaction("as", "t1", &items).await.unwrap());
    // A resend stores nothing more.
    assert!(!store.receive_transaction("as", "t1", &items).await.unwrap());
    // Another appservice's transaction with the same id is its own.
    assert!(
        store
            .receive_transaction("other", "t1", &items[..1])
            .await
            .unwrap()
    );
    assert_eq!(store.inbox_depth("as").await.unwrap(), 3);
    assert_eq!(store.inbox_depth("other").await.unwrap(), 1);
    let backlog = store.inbox_backlog("as").await.unwrap();
    let oldest = backlog.oldest_ms.unwrap();
    assert!(
        oldest <= now_ms() && now_ms() - oldest < 60_000,
        "{backlog:?}"
    );
    assert_eq!(
        store.inbox_backlog("none").await.unwrap(),
        Backlog::default()
    );
}

async fn inbox_keeps_order_per_queue(store: Store) {
    let many: Vec<_> = (0..450)
        .map(|i| item("!a", i, &format!("{{\"n\":{i}}}")))
        .collect();
    assert!(store.receive_transaction("as", "big", &many).await.unwrap());
    assert!(
        store
            .receive_transaction("as", "t2", &[item("!b", 0, "{}")])
            .await
            .unwrap()
    );
    assert_eq!(
        store.inbox_pending_queues("as", 10).await.unwrap(),
        ["!a", "!b"]
    );
    let first = store.inbox_next("as", "!a", 0, 100).await.unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first[0].payload, "{\"n\":0}");
    assert_eq!(first[0].item_key, "big.0");
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    let next = store
        .inbox_next("as", "!a", first[99].seq, 1000)
        .await
        .unwrap();
    assert_eq!(next.len(), 350);
    assert_eq!(next[349].item_key, "big.449");
    let (one, many) = first.split_at(1);
    store.inbox_done(one[0].seq).await.unwrap();
    let seqs: Vec<i64> = many.iter().map(|i| i.seq).collect();
    store.inbox_done_many(&seqs).await.unwrap();
    assert_eq!(store.inbox_depth("as").await.unwrap(), 351);
    let again = store.inbox_next("as", "!a", 0, 1).await.unwrap();
    assert_eq!(again[0].payload, "{\"n\":100}");
}

async fn outbox_records_outcomes(store: Store) {
    let a = store
        .outbox_push("as", "!r", "@u:x", None, "{\"op\":1}", None)
        .await
        .unwrap();
    let b = store
        .outbox_push("as", "!r", "@u:x", Some("DEV"), "{\"op\":2}", None)
        .await
        .unwrap();
    assert!(a < b);
    assert_eq!(store.outbox_depth("as").await.unwrap(), 2);
    assert!(
        store
            .outbox_backlog("as")
            .await
            .unwrap()
            .oldest_ms
            .is_some()
    );
    let pending = store.outbox_next("as", "!r", 0, 10).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.seq).collect::<Vec<_>>(), [a, b]);
    assert_eq!(pending[1].device_id.as_deref(), Some("DEV"));
    store.outbox_attempted(a).await.unwrap();
    store.outbox_attempted(a).await.unwrap();
    assert_eq!(
        store.outbox_next("as", "!r", 0, 1).await.unwrap()[0].attempts,
        2
    );
    store
        .outbox_finish(a, OutboxState::Sent, Some("$e"), None)
        .await
        .unwrap();
    store
        .outbox_finish(b, OutboxState::Failed, None, Some("M_FORBIDDEN"))
        .await
        .unwrap();
    let (state, event, _) = store.outbox_state(a).await.unwrap().unwrap();
    assert_eq!((state, event.as_deref()), (OutboxState::Sent, Some("$e")));
    let (state, _, error) = store.outbox_state(b).await.unwrap().unwrap();
    assert_eq!(
        (state, error.as_deref()),
        (OutboxState::Failed, Some("M_FORBIDDEN"))
    );
    assert_eq!(store.outbox_depth("as").await.unwrap(), 0);
    assert_eq!(store.outbox_backlog("as").await.unwrap().oldest_ms, None);
    assert!(
        store
            .outbox_pending_queues("as", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn ghosts_and_memberships(store: Store) {
    assert_eq!(store.ghost("@g:x").await.unwrap(), None);
    store.set_ghost_registered("@g:x").await.unwrap();
    store
        .set_ghost_display_name("@g:x", Some("G"))
        .await
        .unwrap();
    store
        .set_ghost_avatar_url("@g:x", Some("mxc://x/y"))
        .await
        .unwrap();
    let ghost = store.ghost("@g:x").await.unwrap().unwrap();
    assert!(ghost.registered);
    assert_eq!(ghost.display_name.as_deref(), Some("G"));
    assert_eq!(ghost.avatar_url.as_deref(), Some("mxc://x/y"));
    store
        .set_membership("!r", "@g:x", Membership::Join)
        .await
        .unwrap();
    store
        .set_membership("!r", "@g:x", Membership::Leave)
        .await
        .unwrap();
    assert_eq!(
        store
            .membership("!r", "@g:x")
            .await
            .unwrap()
            .map(Membership::as_str),
        Some("leave")
    );
}

async fn pruning_keeps_what_is_pending(store: Store) {
    assert!(
        store
            .receive_transaction("as", "t", &[item("!a", 0, "{}"), item("!a", 1, "{}")])
            .await
            .unwrap()
    );
    let first = store.inbox_next("as", "!a", 0, 1).await.unwrap()[0].seq;
    store.inbox_done(first).await.unwrap();
    let sent = store
        .outbox_push("as", "!a", "@u:x", None, "{}", None)
        .await
        .unwrap();
    store
        .outbox_push("as", "!a", "@u:x", None, "{}", None)
        .await
        .unwrap();
    store
        .outbox_finish(sent, OutboxState::Sent, None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Finished items and old transaction ids go; pending work stays.
    assert_eq!(
        store.prune(Duration::ZERO, Duration::ZERO).await.unwrap(),
        3
    );
    assert_eq!(store.inbox_depth("as").await.unwrap(), 1);
    assert_eq!(store.outbox_depth("as").await.unwrap(), 1);
    // With the id forgotten, the same transaction would be taken again.
    assert!(store.receive_transaction("as", "t", &[]).await.unwrap());
}

async fn leases_are_exclusive(store: Store) {
    let ttl = Duration::from_secs(30);
    assert!(store.lease("in:as", "!r", "one", ttl).await.unwrap());
    assert!(
        store.lease("in:as", "!r", "one", ttl).await.unwrap(),
        "renewal by the owner"
    );
    let other = store.lease("in:as", "!r", "two", ttl).await.unwrap();
    match store.backend() {
        // One process per SQLite file: there is nobody to exclude.
        Backend::Sqlite => assert!(other),
        _ => assert!(!other, "a live lease is not taken over"),
    }
    store.release("in:as", "!r", "one").await.unwrap();
    assert!(store.lease("in:as", "!r", "two", ttl).await.unwrap());
    // An expired lease can be taken.
    assert!(
        store
            .lease("in:as", "!s", "one", Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.lease("in:as", "!s", "two", ttl).await.unwrap());
}

/// Twenty rooms' workers marking their items done at the same moment share one statement, or
/// two where the writer started on the first worker's marks before the others came (twenty
/// without the gathering).
async fn done_marks_made_at_once_share_a_statement(store: Store) {
    let items: Vec<NewInboxItem> = (0..40)
        .map(|i| item(&format!("!r{}", i % 20), i, "{}"))
        .collect();
    assert!(
        store
            .receive_transaction("as", "marks", &items)
            .await
            .unwrap()
    );
    let mut per_room = Vec::new();
    for room in 0..20 {
        let pending = store
            .inbox_next("as", &format!("!r{room}"), 0, 10)
            .await
            .unwrap();
        assert_eq!(pending.len(), 2);
        per_room.push(pending.iter().map(|i| i.seq).collect::<Vec<i64>>());
    }
    let before = store.marks.statements();
    // Polled in turn by one task: the first starts the writer, the others wait while it writes.
    let marked =
        futures_util::future::join_all(per_room.iter().map(|seqs| store.inbox_done_many(seqs)))
            .await;
    assert!(marked.iter().all(Result::is_ok), "{marked:?}");
    let statements = store.marks.statements() - before;
    assert!((1..=2).contains(&statements), "{statements} statements");
    assert_eq!(store.inbox_depth("as").await.unwrap(), 0);
}

/// A connection to the database at `url` with its migrations run up to `version`, to store
/// rows as an older Trestle did.
async fn migrated_to(backend: Backend, url: &str, version: i64) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let migrator = match backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
    };
    migrator.run_to(version, &pool).await.unwrap();
    pool
}

/// Events stored before their time was part of their name (SQLite's migration 0008,
/// PostgreSQL's 0007) are given it from their payloads, as a transaction's events are read, so
/// that one coming back after the upgrade is still known: integer or not, or missing.
async fn events_stored_before_their_time_was_kept_are_known_after(
    backend: Backend,
    url: &str,
    before: i64,
) {
    let times = [
        r#""origin_server_ts": 1700000000000"#,
        r#""origin_server_ts": "1700000000000""#,
        r#""origin_server_ts": 1.5"#,
        r#""unsigned": {}"#,
    ];
    let events: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, time)| {
            format!(
                r#"{{"type": "m.room.message", "room_id": "!r:x", "sender": "@u:x",
                "event_id": "$old{i}", "content": {{"body": "\u0000 {i}"}}, {time}}}"#
            )
        })
        .collect();
    let pool = migrated_to(backend, url, before).await;
    for (i, event) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO inbox (appservice_id, queue_key, item_key, kind, payload, received_at, \
             event_id) VALUES ('as', '!r:x', $1, 'timeline', $2, 1, $3)",
        )
        .bind(format!("old.{i}"))
        .bind(event)
        .bind(format!("$old{i}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = Store::connect(url).await.unwrap();
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, event_ts FROM inbox ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let expected = [1_700_000_000_000, 0, 0, 0];
    let expected: Vec<_> = (0..4).map(|i| (format!("$old{i}"), expected[i])).collect();
    assert_eq!(stored, expected);
    let new = r#"{"type": "m.room.message", "room_id": "!r:x", "sender": "@u:x",
                  "event_id": "$new", "content": {}, "origin_server_ts": 1700000000001}"#;
    let body = format!(r#"{{"events": [{}, {new}]}}"#, events.join(", "));
    let parsed = serde_json::from_str::<crate::transaction::TransactionBody>(&body)
        .unwrap()
        .into_items("t");
    let items = parsed
        .items
        .iter()
        .enumerate()
        .map(|(index, item)| NewInboxItem::from_incoming(item, index))
        .collect();
    let received = store
        .receive_transaction_items("as", "t", items)
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<_> = received.iter().map(|item| item.item_key.as_str()).collect();
    assert_eq!(keys, ["t.4"], "only the new event is stored");
    let time: i64 = sqlx::query_scalar("SELECT event_ts FROM inbox WHERE event_id = '$new'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(time, 1_700_000_000_001, "and with its time");
}

#[tokio::test]
async fn sqlite_events_stored_before_their_time_was_kept_are_known_after() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    events_stored_before_their_time_was_kept_are_known_after(Backend::Sqlite, &url, 7).await;
}

#[tokio::test]
async fn postgres_events_stored_before_their_time_was_kept_are_known_after() {
    let url = trestle_postgres_harness::fresh_database().await;
    events_stored_before_their_time_was_kept_are_known_after(Backend::Postgres, &url, 6).await;
}

/// Items stored while waiting was a column of their rows (`done_at`, before SQLite's migration
/// 0009 and PostgreSQL's 0008) are waiting after it as they were: the unhandled ones are read
/// back in order, counted and kept by pruning, the handled one is pruned; items stored after
/// it wait too (on SQLite the receive script writes their waiting rows, on PostgreSQL the
/// trigger), and a mark ends their wait.
async fn items_waiting_before_their_table_are_waiting_after(
    backend: Backend,
    url: &str,
    before: i64,
) {
    let pool = migrated_to(backend, url, before).await;
    for (key, queue, done_at) in [
        ("old.0", "!a", None),
        ("old.1", "!a", Some(5_i64)),
        ("old.2", "!a", None),
        ("old.3", "!b", None),
    ] {
        sqlx::query(
            "INSERT INTO inbox (appservice_id, queue_key, item_key, kind, payload, received_at, \
             done_at) VALUES ('as', $1, $2, 'timeline', '{}', 1, $3)",
        )
        .bind(queue)
        .bind(key)
        .bind(done_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = Store::connect(url).await.unwrap();
    let keys = |items: Vec<crate::store::InboxItem>| -> Vec<String> {
        items.into_iter().map(|item| item.item_key).collect()
    };
    let waiting = store.inbox_next("as", "!a", 0, 10).await.unwrap();
    let first = waiting[0].seq;
    assert_eq!(keys(waiting), ["old.0", "old.2"]);
    assert_eq!(
        store.inbox_pending_queues("as", 10).await.unwrap(),
        ["!a", "!b"]
    );
    assert_eq!(store.inbox_depth("as").await.unwrap(), 3);
    assert_eq!(
        store.prune(Duration::ZERO, Duration::ZERO).await.unwrap(),
        1,
        "only the handled item goes"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT item_key FROM inbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(left, ["old.0", "old.2", "old.3"]);

    assert!(
        store
            .receive_transaction("as", "t", &[item("!b", 0, "{}")])
            .await
            .unwrap()
    );
    let waiting = store.inbox_next("as", "!b", 0, 10).await.unwrap();
    assert_eq!(keys(waiting), ["old.3", "t.0"]);
    store.inbox_done(first).await.unwrap();
    let waiting = store.inbox_next("as", "!a", 0, 10).await.unwrap();
    assert_eq!(keys(waiting), ["old.2"]);
    assert_eq!(store.inbox_depth("as").await.unwrap(), 3);
}

#[tokio::test]
async fn sqlite_items_waiting_before_their_table_are_waiting_after() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    items_waiting_before_their_table_are_waiting_after(Backend::Sqlite, &url, 8).await;
}

#[tokio::test]
async fn postgres_items_waiting_before_their_table_are_waiting_after() {
    let url = trestle_postgres_harness::fresh_database().await;
    items_waiting_before_their_table_are_waiting_after(Backend::Postgres, &url, 7).await;
}

macro_rules! suite {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let (store, _guard) = super::$backend().await;
                    super::$test(store).await;
                }
            )*
        }
    };
}

suite!(sqlite: transactions_are_stored_once, inbox_keeps_order_per_queue, outbox_records_outcomes,
       ghosts_and_memberships, pruning_keeps_what_is_pending, leases_are_exclusive,
       done_marks_made_at_once_share_a_statement);
suite!(postgres: transactions_are_stored_once, inbox_keeps_order_per_queue, outbox_records_outcomes,
       ghosts_and_memberships, pruning_keeps_what_is_pending, leases_are_exclusive,
       done_marks_made_at_once_share_a_statement);
