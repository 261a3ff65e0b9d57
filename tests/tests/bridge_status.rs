//! Delivery status and bridge state of the bridge kit, end to end against a real Synapse with
//! the toy network: a message the network took is marked read by the bot and gets a `SUCCESS`
//! status event, one it refused a notice replying to it and a `FAIL_PERMANENT` status; a
//! login's state changes are debounced, served by the provisioning API, posted to a receiver
//! (an axum server here) once per change and never for a blip, and counted in `/metrics`.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, extract::State, http::HeaderMap, routing::post};
use reqwest::Method;
use serde_json::Value;
use trestle_bridge::{BridgeConfig, ConnectionState, MESSAGE_STATUS_TYPE};
use trestle_tests::{
    appservice::WAIT,
    bridge_checks::{BOT, logged_in_toy_user, provision, read_receipt_of, start_toy_bridge},
    synapse::UserClient,
};

/// The status event the bot sent about `event_id`.
async fn status_of(user: &UserClient, room: &str, event_id: &str) -> Value {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == MESSAGE_STATUS_TYPE
            && e["sender"] == BOT
            && e["content"]["m.relates_to"]["event_id"] == event_id
    })
    .await["content"]
        .clone()
}

/// The event the bot's `m.read` receipt in the room points at, as `user` syncs it.
async fn bot_read_receipt(user: &UserClient, room: &str) -> Option<String> {
    read_receipt_of(user, room, BOT).await
}

#[tokio::test]
async fn deliveries_and_failures_are_reported_by_the_message() {
    let (harness, _handle, _world) = start_toy_bridge(BridgeConfig::default(), false).await;
    let (alice, lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;

    // Taken by the network: the bot's read receipt, and a SUCCESS status referring to it.
    let hello = alice.send_text(&lobby, "hello toy").await;
    let status = status_of(&alice, &lobby, &hello).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(status["network"], "toy");
    assert_eq!(status["m.relates_to"]["rel_type"], "m.reference");
    let started = Instant::now();
    while bot_read_receipt(&alice, &lobby).await.as_deref() != Some(hello.as_str()) {
        assert!(
            started.elapsed() < WAIT,
            "the bot never marked {hello} read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Refused: a notice replying to it says why, and the status says it failed for good.
    let refused = alice.send_text(&lobby, "please fail").await;
    let notice = alice
        .wait_for_event(&lobby, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["msgtype"] == "m.notice"
                && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == refused
        })
        .await;
    assert_eq!(
        notice["content"]["body"],
        "Not delivered to Toy: the toy network refused it"
    );
    let status = status_of(&alice, &lobby, &refused).await;
    assert_eq!(status["status"], "FAIL_PERMANENT", "{status}");
    assert_eq!(status["reason"], "m.foreign_network_error");
    assert_eq!(status["message"], "the toy network refused it");
    // The bot's receipt stays on the last message that was delivered.
    assert_eq!(
        bot_read_receipt(&alice, &lobby).await.as_deref(),
        Some(hello.as_str())
    );
}

/// What the test's receiver was posted: each body, with its `Authorization` header.
type Posted = Arc<Mutex<Vec<(Value, String)>>>;

/// An HTTP server taking bridge state posts; returns its URL and what it got.
async fn receiver() -> (String, Posted) {
    let posted = Posted::default();
    let app = axum::Router::new()
        .route(
            "/state",
            post(
                |State(posted): State<Posted>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    posted.lock().unwrap().push((body, auth));
                },
            ),
        )
        .with_state(posted.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/state", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, posted)
}

/// The states posted so far.
fn posted_states(posted: &Posted) -> Vec<String> {
    let posted = posted.lock().unwrap();
    posted
        .iter()
        .map(|(body, _)| body["state_event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until `count` states were posted, the last being `state`.
async fn wait_posted(posted: &Posted, count: usize, state: &str) {
    let started = Instant::now();
    loop {
        let states = posted_states(posted);
        if states.len() >= count {
            assert_eq!(states.len(), count, "{states:?}");
            assert_eq!(states[count - 1], state, "{states:?}");
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{state} never posted; posted: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn login_states_are_debounced_served_pushed_and_counted() {
    let (url, posted) = receiver().await;
    let config = BridgeConfig::default()
        .provisioning_secret("s3cret")
        .bridge_state_url(url)
        .bridge_state_debounce_ms(3_000);
    let (harness, handle, world) = start_toy_bridge(config, false).await;
    let (alice, _lobby, mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    wait_posted(&posted, 1, "CONNECTED").await;
    let login = world.handle("alice").unwrap();

    // A blip, lost and back within the debounce: nothing to post.
    login
        .set_state(ConnectionState::TransientDisconnect("blip".into()))
        .await
        .unwrap();
    login.set_state(ConnectionState::Connected).await.unwrap();
    // An outage, with a second failed attempt: posted once, when the debounce is over.
    login
        .set_state(ConnectionState::TransientDisconnect("down".into()))
        .await
        .unwrap();
    login
        .set_state(ConnectionState::TransientDisconnect("still down".into()))
        .await
        .unwrap();
    wait_posted(&posted, 2, "TRANSIENT_DISCONNECT").await;
    assert_eq!(posted.lock().unwrap()[1].0["reason"], "down");

    // Served by the provisioning API, behind its secret.
    let path = "/provision/v1/bridge_state";
    let (status, _) = provision(&harness, Method::GET, path, None, None).await;
    assert_eq!(status, 401);
    let (status, served) = provision(&harness, Method::GET, path, Some("s3cret"), None).await;
    assert_eq!(status, 200, "{served}");
    let logins = served["logins"].as_array().unwrap();
    assert_eq!(logins.len(), 1, "{served}");
    assert_eq!(logins[0]["user_id"], "@alice:localhost");
    assert_eq!(logins[0]["login_id"], "toynet");
    assert_eq!(logins[0]["state_event"], "TRANSIENT_DISCONNECT");
    assert_eq!(logins[0]["reason"], "down");

    // Counted in /metrics.
    let metrics = reqwest::get(format!("{}/metrics", harness.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (state, count) in [("TRANSIENT_DISCONNECT", 1), ("CONNECTED", 0)] {
        let line =
            format!("trestle_bridge_logins{{appservice=\"toy\",state=\"{state}\"}} {count}\n");
        assert!(metrics.contains(&line), "no {line} in {metrics}");
    }

    // Back, then refused, then logged out: each posted at once, in order.
    login.set_state(ConnectionState::Connected).await.unwrap();
    wait_posted(&posted, 3, "CONNECTED").await;
    login
        .set_state(ConnectionState::BadCredentials("banned".into()))
        .await
        .unwrap();
    wait_posted(&posted, 4, "BAD_CREDENTIALS").await;
    let alice_id = trestle::ruma::UserId::parse("@alice:localhost").unwrap();
    assert!(handle.logout(&alice_id, "toynet").await.unwrap());
    wait_posted(&posted, 5, "LOGGED_OUT").await;
    let token = format!("Bearer {}", harness.registration.as_token);
    for (body, auth) in posted.lock().unwrap().iter() {
        assert_eq!(*auth, token);
        assert_eq!(body["user_id"], "@alice:localhost", "{body}");
    }

    // The management room heard of the same states: the outage once, the blip never.
    let told: Vec<String> = alice
        .messages(&mgmt)
        .await
        .iter()
        .filter(|e| e["sender"] == BOT)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = told
        .iter()
        .filter(|b| b.contains("connection lost"))
        .collect();
    assert_eq!(
        lost,
        ["toynet: connection lost (down); reconnecting."],
        "{told:#?}"
    );
    assert!(
        told.iter().any(|b| b == "toynet: connected again."),
        "{told:#?}"
    );
}
