//! The bot's tables and queries on both store backends: the feed path (record, queue, mark
//! posted, never again), the forwarding queue's idempotent insert and the removals.

use std::sync::{Arc, Mutex};

use trestle::{
    Appservice, Registration, Store,
    axum::{self, extract::State, routing::get},
};

use super::*;
use crate::Settings;

async fn app_on(store: Store) -> (Appservice, Shared) {
    let registration = Registration::generate("notify", None, "notify", "notify_", "localhost");
    // Nothing is sent in these tests: sends stay in the outbox, which is what is checked.
    let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
        .store(store)
        .build()
        .await
        .unwrap();
    let shared = Shared::new(Settings {
        allow_private_addresses: true,
        feed_max_new_items: 2,
        ..Settings::default()
    })
    .unwrap();
    (app, shared)
}

fn rss(items: &[&str]) -> String {
    let items: String = items
        .iter()
        .map(|id| format!("<item><title>T {id}</title><guid>{id}</guid></item>"))
        .collect();
    format!("<rss version=\"2.0\"><channel><title>F</title>{items}</channel></rss>")
}

async fn feed_row(app: &Appservice, url: &str) -> FeedRow {
    let row = sqlx::query(
        "SELECT id, room_id, url, title, interval_secs, etag, last_modified, failures,
                failing_since, failure_notified FROM notify_feeds WHERE url = $1",
    )
    .bind(url)
    .fetch_one(app.store().pool())
    .await
    .unwrap();
    FeedRow {
        id: row.get(0),
        room_id: row.get(1),
        url: row.get(2),
        title: row.get(3),
        interval_secs: row.get(4),
        etag: row.get(5),
        last_modified: row.get(6),
        failures: row.get(7),
        failing_since: row.get(8),
        failure_notified: row.get(9),
    }
}

async fn states(app: &Appservice) -> Vec<(String, i64)> {
    sqlx::query("SELECT item_key, state FROM notify_feed_items ORDER BY position")
        .fetch_all(app.store().pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// How many messages the outbox holds whose request matches `like`.
async fn messages(app: &Appservice, like: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE op LIKE '%m.room.message%' AND op LIKE $1",
    )
    .bind(like)
    .fetch_one(app.store().pool())
    .await
    .unwrap()
}

async fn exercise(store: Store) {
    let (app, shared) = app_on(store).await;
    db::ready(&app).await.unwrap();
    db::ready(&app).await.unwrap();
    let body = Arc::new(Mutex::new(rss(&["a"])));
    let served = body.clone();
    let server = axum::Router::new()
        .route(
            "/rss",
            get(|State(b): State<Arc<Mutex<String>>>| async move { b.lock().unwrap().clone() }),
        )
        .with_state(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/rss", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, server).await.unwrap() });

    sqlx::query(
        "INSERT INTO notify_feeds (id, room_id, url, title, interval_secs, next_poll_at,
                                   created_by, created_at)
         VALUES ('f1', '!r:localhost', $1, 'F', 60, 0, '@u:localhost', 0)",
    )
    .bind(&url)
    .execute(app.store().pool())
    .await
    .unwrap();
    let mut tx = app.store().pool().begin().await.unwrap();
    insert_item(
        &mut tx,
        "f1",
        &db::digest("id:a"),
        None,
        SKIPPED,
        None,
        None,
        1,
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Three new entries, two posted at most: the oldest is skipped, a notice says so.
    *body.lock().unwrap() = rss(&["d", "c", "b", "a"]);
    poll(&app, &shared, &feed_row(&app, &url).await)
        .await
        .unwrap();
    let got = states(&app).await;
    let want = vec![
        (db::digest("id:a"), SKIPPED),
        (db::digest("id:b"), SKIPPED),
        (db::digest("id:c"), POSTED),
        (db::digest("id:d"), POSTED),
    ];
    assert_eq!(got, want);
    // The notice about the skipped entry, and the two entries with transaction ids of their
    // own, so that queueing them again after a crash does not post them twice.
    assert_eq!(messages(&app, "%").await, 3);
    assert_eq!(messages(&app, "%notify.feed.f1.%").await, 2);

    // Reordered and polled again: nothing new.
    *body.lock().unwrap() = rss(&["a", "b", "d", "c"]);
    poll(&app, &shared, &feed_row(&app, &url).await)
        .await
        .unwrap();
    assert_eq!(states(&app).await, want);
    assert_eq!(messages(&app, "%").await, 3);

    // A failing feed counts its failures and polls later.
    task.abort();
    let _ = task.await;
    poll(&app, &shared, &feed_row(&app, &url).await)
        .await
        .unwrap();
    let failing = feed_row(&app, &url).await;
    assert_eq!(failing.failures, 1);
    assert!(failing.failing_since.is_some());

    // The forwarding queue stores an event once however often it is handled.
    for _ in 0..2 {
        sqlx::query(
            "INSERT INTO notify_deliveries (forward_id, event_id, body, created_at)
             VALUES ('w1', '$e', '{}', 0) ON CONFLICT (forward_id, event_id) DO NOTHING",
        )
        .execute(app.store().pool())
        .await
        .unwrap();
    }
    let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notify_deliveries")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(deliveries, 1);

    // One process at a time works a service on PostgreSQL; on SQLite there is only one. The
    // services are `Router::singleton`s: the framework's lease table decides, as here.
    let store = app.store();
    let ttl = std::time::Duration::from_secs(30);
    let hold = |owner: &'static str| store.lease("service:notify", "feeds", owner, ttl);
    assert!(hold("first").await.unwrap());
    assert!(hold("first").await.unwrap(), "renewed by its holder");
    let shared_database = store.backend() == trestle::store::Backend::Postgres;
    assert_eq!(hold("second").await.unwrap(), !shared_database);
    store
        .release("service:notify", "feeds", "first")
        .await
        .unwrap();
    assert!(hold("second").await.unwrap(), "free once released");

    // A webhook keeps its last calls only, newest first.
    for i in 0..crate::hooks::calls::KEEP + 5 {
        let call = crate::hooks::calls::Call {
            status: 200,
            outcome: format!("call {i}"),
            request: serde_json::json!({}),
            message: None,
        };
        crate::hooks::calls::record(&app, "h1", &call)
            .await
            .unwrap();
    }
    let kept = crate::hooks::calls::recent(&app, "h1", 100).await.unwrap();
    assert_eq!(kept.len() as i64, crate::hooks::calls::KEEP);
    assert_eq!(
        kept[0].outcome,
        format!("call {}", crate::hooks::calls::KEEP + 4)
    );
    assert_eq!(kept.last().unwrap().outcome, "call 5");

    // Removing the feed removes its entries.
    let removal = db::Removal {
        find: "SELECT id, title FROM notify_feeds WHERE room_id = $1 AND url = $2",
        children: "DELETE FROM notify_feed_items WHERE feed_id = $1",
        parent: "DELETE FROM notify_feeds WHERE id = $1",
    };
    let removed = db::remove(&app, &removal, "!r:localhost", &url)
        .await
        .unwrap();
    assert_eq!(removed.as_deref(), Some("F"));
    assert!(states(&app).await.is_empty());
    assert_eq!(
        db::remove(&app, &removal, "!r:localhost", &url)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn on_sqlite() {
    exercise(Store::in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn on_postgres() {
    let url = trestle_tests::postgres::fresh_database().await;
    exercise(Store::connect_scoped(&url, "notify").await.unwrap()).await;
}
