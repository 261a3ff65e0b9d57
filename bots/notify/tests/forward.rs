//! Outbound webhooks against a real Synapse and a local receiver that is down for a while.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use common::{BOT, accept_dm, settings, start, wait_for_text};
use serde_json::Value;
use trestle::axum::{
    self,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use trestle_notify::{forward::EVENT_ID_HEADER, sign};
use trestle_tests::{appservice::WAIT, synapse::free_port};

/// What the receiver got: headers and body of each POST.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on `port` that answers the first `busy` calls with 503 and `Retry-After`, and
/// keeps the rest.
async fn receiver(port: u16, received: Received, busy: usize) -> tokio::task::JoinHandle<()> {
    let busy = Arc::new(AtomicUsize::new(busy));
    let app = axum::Router::new().route(
        "/inbox",
        post(move |headers: HeaderMap, body: String| {
            let (received, busy) = (received.clone(), busy.clone());
            async move {
                if busy
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")])
                        .into_response();
                }
                received.lock().unwrap().push((headers, body));
                "thanks".into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

async fn failures(harness: &trestle_tests::appservice::Harness) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(failures), 0) FROM notify_forwards")
        .fetch_one(harness.app.store().pool())
        .await
        .unwrap()
}

async fn wait_received(received: &Received, count: usize) {
    let started = Instant::now();
    while received.lock().unwrap().len() < count {
        assert!(
            started.elapsed() < WAIT,
            "the receiver got {} of {count} messages",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn forwarded_messages_wait_out_a_receiver_outage_and_arrive_signed_in_order() {
    let harness = start(settings()).await;
    let (user, room) = harness.user_in_room_with_bot("carol").await;
    // The receiver's port is chosen but nothing listens on it yet: it is down.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/inbox");
    user.send_text(&room, &format!("!forward add {url}")).await;
    wait_for_text(&user, &room, BOT, "From now on").await;
    let dm = accept_dm(&user).await;
    let secret = wait_for_text(&user, &dm, BOT, "signed with this secret").await["content"]["body"]
        .as_str()
        .unwrap()
        .split('`')
        .nth(1)
        .unwrap()
        .to_owned();

    let mut sent = Vec::new();
    for text in ["first", "second", "third"] {
        sent.push(user.send_text(&room, text).await);
    }
    // Attempts fail (nothing listens) and are retried with a back-off.
    let started = Instant::now();
    while failures(&harness).await < 2 {
        assert!(started.elapsed() < WAIT, "no failed delivery attempts");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let received: Received = Arc::default();
    // Back, but busy at first: a 503 is retried too.
    let server = receiver(port, received.clone(), 1).await;
    wait_received(&received, 3).await;
    sent.push(user.send_text(&room, "fourth").await);
    wait_received(&received, 4).await;

    let got = received.lock().unwrap().clone();
    let bodies: Vec<Value> = got
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    let texts: Vec<&str> = bodies
        .iter()
        .map(|b| b["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["first", "second", "third", "fourth"],
        "in order, once each"
    );
    for ((headers, body), (json, event_id)) in got.iter().zip(bodies.iter().zip(&sent)) {
        let signature = headers[sign::SIGNATURE_HEADER].to_str().unwrap();
        assert!(sign::verify(&secret, body.as_bytes(), signature), "{body}");
        assert_eq!(headers[EVENT_ID_HEADER], event_id.as_str());
        assert_eq!(json["event_id"], event_id.as_str());
        assert_eq!(json["sender"], user.user_id.as_str());
        assert_eq!(json["room_id"], room.as_str());
        assert!(json.get("unsigned").is_none());
    }
    assert_eq!(
        failures(&harness).await,
        0,
        "a delivery resets the failure count"
    );

    // Once removed, nothing more is sent.
    user.send_text(&room, &format!("!forward remove {url}"))
        .await;
    wait_for_text(&user, &room, BOT, "no longer sent to").await;
    user.send_text(&room, "fifth").await;
    user.send_text(&room, "!forward list").await;
    wait_for_text(&user, &room, BOT, "forwards its messages nowhere").await;
    harness.app.idle().await;
    assert_eq!(received.lock().unwrap().len(), 4);
    server.abort();
}
