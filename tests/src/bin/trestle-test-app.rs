//! The test appservice: one process of several sharing a PostgreSQL store, for the tests that
//! stop or kill a real process (`tests/tests/handover.rs`).
//!
//! `trestle-test-app NAME REGISTRATION DATABASE PORT TAKEOVER_S` serves the registration's
//! appservice on `127.0.0.1:PORT`, with no homeserver, until SIGTERM. It writes what it does to
//! standard output, a JSON line each, with the time (ms since the epoch) and its NAME:
//! `{"app":NAME,"at":…,"step":"start"|"end","n":N}` for each event of type `org.trestle.n`
//! (which sleeps `slow_ms` first where its `slow_in` names this process), and
//! `{"app":NAME,"at":…,"step":"ticker start"|"ticker stop"}` for its singleton service.

// Test support only: a failed unwrap here is the test that started it failing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use trestle::{
    Appservice, Registration, Router, Store,
    router::{RawEvent, State},
    store::{StoreOptions, now_ms},
};

fn say(app: &str, step: &str, n: Option<i64>) {
    let mut line = json!({"app": app, "at": now_ms(), "step": step});
    if let Some(n) = n {
        line["n"] = json!(n);
    }
    println!("{line}");
}

async fn record(raw: RawEvent, State(name): State<&'static str>) {
    let event: Value = raw.deserialize().unwrap();
    let n = event["content"]["n"].as_i64().unwrap();
    say(name, "start", Some(n));
    if event["content"]["slow_in"] == name {
        let slow_ms = event["content"]["slow_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    }
    say(name, "end", Some(n));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, registration, database, port, takeover] = &args[..] else {
        panic!("usage: trestle-test-app NAME REGISTRATION DATABASE PORT TAKEOVER_S");
    };
    let name: &'static str = Box::leak(name.clone().into_boxed_str());
    let registration = Registration::from_file(registration).unwrap();
    let takeover = Duration::from_secs(takeover.parse().unwrap());
    let store = Store::connect_with(database, StoreOptions::default().takeover(takeover))
        .await
        .unwrap();
    let router = Router::new()
        .on_type("org.trestle.n", record)
        .with_state(name)
        .singleton("ticker", move |app: Appservice| async move {
            say(name, "ticker start", None);
            app.stopping().await;
            say(name, "ticker stop", None);
            Ok(())
        });
    let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
        .router(router)
        .store(store)
        .build()
        .await
        .unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap()))
        .await
        .unwrap();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    app.run(listener, async move {
        term.recv().await;
    })
    .await
    .unwrap();
    say(name, "exit", None);
}
