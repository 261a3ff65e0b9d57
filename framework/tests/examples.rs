//! The examples' routers driven the way a homeserver drives them: a transaction in through
//! the Application Service API, the answers out to a stand-in homeserver.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::{Json, body::Body, http::Method, http::Request, http::Uri};
use serde_json::{Value, json};
use tower::ServiceExt;
use trestle::{Appservice, Registration};

#[allow(dead_code)] // its `main` is not called here
#[path = "../examples/command_bot.rs"]
mod command_bot;

/// A homeserver that lets the bot join any room and records the bodies of the messages sent.
async fn homeserver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let sent: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = sent.clone();
    let handler = move |method: Method, uri: Uri, body: String| {
        let log = log.clone();
        async move {
            if method == Method::PUT && uri.path().contains("/send/") {
                log.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                return Json(json!({"event_id": "$sent"}));
            }
            Json(json!({"room_id": "!r:x"}))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(handler);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, sent)
}

fn message(id: &str, body: &str) -> Value {
    json!({"type": "m.room.message", "room_id": "!r:x", "sender": "@u:x", "event_id": id,
           "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body}})
}

#[tokio::test]
async fn command_bot_adds_and_keeps_notes() {
    let (url, sent) = homeserver().await;
    let registration = Registration::generate("command_bot", None, "counter", "counter_", "x");
    let token = registration.hs_token.clone();
    let app = Appservice::builder(registration, url, "x")
        .router(command_bot::router())
        .build()
        .await
        .unwrap();
    let events = [
        ("$1", "!add 2"),
        ("$2", "!add 3"),
        ("$3", "!add two"),
        ("$4", "!note milk \"oat milk\" please"),
        ("$5", "!note milk"),
    ];
    let events: Vec<Value> = events.iter().map(|(id, body)| message(id, body)).collect();
    let request = Request::put("/_matrix/app/v1/transactions/1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "events": events }).to_string()))
        .unwrap();
    let response = app.http_router().oneshot(request).await.unwrap();
    assert!(response.status().is_success());
    app.idle().await;

    let sent = sent.lock().unwrap();
    let bodies: Vec<&str> = sent.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies[..2], ["total: 2", "total: 5"]);
    assert!(
        bodies[2].starts_with("\"two\" is not a whole number"),
        "{bodies:?}"
    );
    assert_eq!(bodies[3..], ["noted milk", "oat milk please"]);
    // Each answer is a reply to the command it answers.
    assert_eq!(sent[4]["m.relates_to"]["m.in_reply_to"]["event_id"], "$5");
}
