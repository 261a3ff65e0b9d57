//! Test helpers shared by the framework's unit tests, and by the unit tests of crates built on
//! it (`trestle-host`, …) through the cargo feature `testing`, so they need no copy of them.

// Test support only: a failed unwrap here is the test that called it failing.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::{Appservice, Store, transaction::TransactionBody};

/// A text message `body` from `sender` in `room`, as the homeserver sends it.
pub fn text(id: &str, room: &str, sender: &str, body: &str) -> serde_json::Value {
    json!({"type": "m.room.message", "room_id": room, "sender": sender, "event_id": id,
           "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body}})
}

/// Delivers `events` to `app` as one transaction from the homeserver, and waits until they
/// are handled.
pub async fn deliver(app: &Appservice, events: Vec<serde_json::Value>) {
    static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let txn = TXN
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let body: TransactionBody = serde_json::from_value(json!({ "events": events })).unwrap();
    assert!(
        app.queues()
            .receive(&txn, body, false, crate::queues::Source::Homeserver)
            .await
            .unwrap()
    );
    app.idle().await;
}

/// A homeserver that knows one room's create event, power levels and joined members, lets the
/// bot join, and records the messages sent.
pub struct MockHomeserver {
    /// Where it listens.
    pub url: String,
    /// The contents of the messages sent.
    pub sent: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The path of each message sent, in the order of `sent`.
    pub sent_paths: Arc<Mutex<Vec<String>>>,
    /// How often the create event was read.
    pub state_reads: Arc<std::sync::atomic::AtomicUsize>,
    /// The room's joined members, as `/joined_members` answers.
    pub members: Arc<Mutex<Vec<String>>>,
    /// How often `/joined_members` was asked.
    pub member_reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl MockHomeserver {
    /// Starts one on a free local port, knowing `create` and `power_levels`.
    pub async fn start(create: serde_json::Value, power_levels: serde_json::Value) -> Self {
        use axum::{
            Json,
            http::{Method, StatusCode, Uri},
        };
        let sent: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sent_paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let paths = sent_paths.clone();
        let state_reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let members: Arc<Mutex<Vec<String>>> = Arc::default();
        let member_reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (log, reads) = (sent.clone(), state_reads.clone());
        let (joined, joined_reads) = (members.clone(), member_reads.clone());
        let handler = move |method: Method, uri: Uri, body: String| {
            let (log, reads, paths) = (log.clone(), reads.clone(), paths.clone());
            let (joined, joined_reads) = (joined.clone(), joined_reads.clone());
            let (create, power_levels) = (create.clone(), power_levels.clone());
            async move {
                let path = uri.path();
                let found = |v: serde_json::Value| (StatusCode::OK, Json(v));
                if method == Method::GET && path.ends_with("/joined_members") {
                    joined_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let joined: serde_json::Map<String, serde_json::Value> = joined
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|user| (user.clone(), json!({})))
                        .collect();
                    found(json!({ "joined": joined }))
                } else if method == Method::GET && path.contains("/state/m.room.create/") {
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    found(create)
                } else if method == Method::GET && path.contains("/state/m.room.power_levels/") {
                    found(power_levels)
                } else if method == Method::GET && path.contains("/state/m.room.server_acl/") {
                    (
                        StatusCode::NOT_FOUND,
                        Json(json!({"errcode": "M_NOT_FOUND", "error": "no such state"})),
                    )
                } else if method == Method::POST && path.contains("/join") {
                    found(json!({"room_id": "!r:x"}))
                } else if method == Method::PUT && path.contains("/send/m.room.message/") {
                    let mut log = log.lock().unwrap();
                    log.push(serde_json::from_str(&body).unwrap());
                    paths.lock().unwrap().push(path.to_owned());
                    found(json!({"event_id": format!("$sent{}", log.len())}))
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        Json(json!({"errcode": "M_UNRECOGNIZED", "error": path})),
                    )
                }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(handler))
                .await
                .unwrap()
        });
        MockHomeserver {
            url,
            sent,
            sent_paths,
            state_reads,
            members,
            member_reads,
        }
    }

    /// The bodies of the messages sent since the last call.
    pub fn bodies(&self) -> Vec<String> {
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        sent.iter()
            .map(|c| c["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// What a host's unit tests see of a store's inbox journal (`store/journal.rs`), which no plugin
/// should touch: import it to call these as methods of [`Store`].
pub trait JournalProbe {
    /// Syncs of the journal done so far.
    fn journal_syncs(&self) -> u64;
    /// Journal records not yet committed.
    fn journal_backlog(&self) -> usize;
    /// Refuses received transactions, saying `Some(reason)`, as when the journal's commits
    /// keep failing; `None` takes them again.
    fn stall_journal(&self, reason: Option<String>);
}

impl JournalProbe for Store {
    fn journal_syncs(&self) -> u64 {
        Store::journal_syncs(self)
    }

    fn journal_backlog(&self) -> usize {
        Store::journal_backlog(self)
    }

    fn stall_journal(&self, reason: Option<String>) {
        Store::stall_journal(self, reason)
    }
}
