//! Test helpers shared by the framework's unit tests.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::{Appservice, transaction::TransactionBody};

pub(crate) fn text(id: &str, room: &str, sender: &str, body: &str) -> serde_json::Value {
    json!({"type": "m.room.message", "room_id": room, "sender": sender, "event_id": id,
           "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body}})
}

pub(crate) async fn deliver(app: &Appservice, events: Vec<serde_json::Value>) {
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
pub(crate) struct MockHomeserver {
    pub(crate) url: String,
    pub(crate) sent: Arc<Mutex<Vec<serde_json::Value>>>,
    pub(crate) state_reads: Arc<std::sync::atomic::AtomicUsize>,
    /// The room's joined members, as `/joined_members` answers.
    pub(crate) members: Arc<Mutex<Vec<String>>>,
    /// How often `/joined_members` was asked.
    pub(crate) member_reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl MockHomeserver {
    pub(crate) async fn start(create: serde_json::Value, power_levels: serde_json::Value) -> Self {
        use axum::{
            Json,
            http::{Method, StatusCode, Uri},
        };
        let sent: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let state_reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let members: Arc<Mutex<Vec<String>>> = Arc::default();
        let member_reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (log, reads) = (sent.clone(), state_reads.clone());
        let (joined, joined_reads) = (members.clone(), member_reads.clone());
        let handler = move |method: Method, uri: Uri, body: String| {
            let (log, reads) = (log.clone(), reads.clone());
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
            state_reads,
            members,
            member_reads,
        }
    }

    pub(crate) fn bodies(&self) -> Vec<String> {
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        sent.iter()
            .map(|c| c["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}
