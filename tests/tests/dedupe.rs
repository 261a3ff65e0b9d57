//! A transaction id alone does not name a transaction: Synapse on SQLite starts its appservice
//! transaction ids again after a restart (element-hq/synapse#14556). A resend (same id, same
//! events) is handled once; the same id with other events is a new transaction; an event that
//! comes again in another transaction is not handled again. On SQLite (through the journal) and
//! PostgreSQL, across a restart of the appservice.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use trestle::{
    Appservice, Registration, Router, Store,
    router::{RawEvent, State},
};
use trestle_tests::synapse::free_port;

type Seen = Arc<Mutex<Vec<String>>>;

async fn record(raw: RawEvent, State(seen): State<Seen>) {
    let event: Value = raw.deserialize().unwrap();
    seen.lock()
        .unwrap()
        .push(event["event_id"].as_str().unwrap().to_owned());
}

/// An appservice on `url`'s database, serving until the returned sender is dropped.
async fn start(url: &str, seen: &Seen) -> (Appservice, String, tokio::sync::oneshot::Sender<()>) {
    let reg = Registration::generate("dedupe", None, "dedupebot", "dedupe_", "localhost");
    let router = Router::new()
        .on_type("org.trestle.n", record)
        .with_state(seen.clone());
    // No homeserver: the handler only records.
    let app = Appservice::builder(reg, "http://127.0.0.1:9", "localhost")
        .router(router)
        .store(Store::connect(url).await.unwrap())
        .build()
        .await
        .unwrap();
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.clone().run(listener, async move {
        let _ = stopped.await;
    }));
    (app, format!("http://127.0.0.1:{port}"), stop)
}

/// Sends transaction `txn` with events named by `ids`, as Synapse would (a resend serialises
/// its events again, so their `age` differs), and waits until it is handled.
async fn send(app: &Appservice, base: &str, txn: &str, ids: &[&str], age: u64) {
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"type": "org.trestle.n", "room_id": "!r:localhost", "sender": "@u:localhost",
                   "event_id": id, "origin_server_ts": 1, "content": {},
                   "unsigned": {"age": age}})
        })
        .collect();
    let response = reqwest::Client::new()
        .put(format!("{base}/_matrix/app/v1/transactions/{txn}"))
        .bearer_auth(&app.registration().hs_token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.idle().await;
}

async fn an_id_names_a_transaction_only_with_its_events(url: String) {
    let seen = Seen::default();
    let (app, base, stop) = start(&url, &seen).await;
    send(&app, &base, "1", &["$a", "$b"], 10).await;
    // Synapse's retry: the same id and events, serialised again.
    send(&app, &base, "1", &["$a", "$b"], 900).await;
    // Synapse restarted and counts from 1 again: a new transaction under an old id.
    send(&app, &base, "1", &["$c"], 10).await;
    // An event that comes again in a new transaction, with a new one.
    send(&app, &base, "2", &["$c", "$d"], 10).await;
    assert_eq!(*seen.lock().unwrap(), ["$a", "$b", "$c", "$d"]);

    // Across a restart of the appservice, from what the store remembers.
    drop(stop);
    app.idle().await;
    drop(app);
    // The journal's commit task lets go of the store within a second of the appservice.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (app, base, _stop) = start(&url, &seen).await;
    send(&app, &base, "1", &["$c"], 5000).await;
    send(&app, &base, "2", &["$c", "$d"], 5000).await;
    // The first contents of id 1 again: named as new, but its events were handled.
    send(&app, &base, "1", &["$a", "$b"], 5000).await;
    send(&app, &base, "3", &["$e"], 10).await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["$a", "$b", "$c", "$d", "$e"],
        "every event handled exactly once"
    );
}

#[tokio::test]
async fn an_id_names_a_transaction_only_with_its_events_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    an_id_names_a_transaction_only_with_its_events(url).await;
}

#[tokio::test]
async fn an_id_names_a_transaction_only_with_its_events_on_postgres() {
    an_id_names_a_transaction_only_with_its_events(trestle_tests::postgres::fresh_database().await)
        .await;
}
