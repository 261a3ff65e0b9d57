//! Threads and read receipts of the bridge kit, end to end against a real Synapse with the toy
//! network: a remote message in a thread is an `m.thread` event on its root's event (with the
//! reply fallback to the thread's latest event, or a genuine reply inside the thread); a
//! Matrix message in a thread reaches the network with its root's remote id, and a network
//! without threads as a reply to the root; a remote user's reading puts their ghost's `m.read`
//! receipt on the mapped event; a Matrix user's receipt reaches the network from their login.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::Method;
use serde_json::{Value, json};
use trestle_bridge::{BridgeConfig, BridgeHandle, MessageContent, RemoteMessage};
use trestle_tests::{
    bridge_checks::{logged_in_toy_user, start_toy_bridge, wait_read_receipt},
    synapse::{UserClient, encode},
    toy_network::{Arrived, ToyNetwork, ToyWorld},
};

/// A message of toy user bob in the toy chat `lobby`.
fn from_bob(id: &str, body: &str) -> RemoteMessage<ToyNetwork> {
    RemoteMessage::new(
        "lobby".to_owned(),
        "bob".to_owned(),
        id.to_owned(),
        MessageContent::text(body),
    )
}

/// Bridges `message` and returns its Matrix event id.
async fn bridge(handle: &BridgeHandle<ToyNetwork>, message: RemoteMessage<ToyNetwork>) -> String {
    handle
        .remote_message(message)
        .await
        .unwrap()
        .expect("a new message is bridged")
        .to_string()
}

/// The `m.relates_to` of an event, as `user` reads it.
async fn relates_to(user: &UserClient, room: &str, event_id: &str) -> Value {
    user.event(room, event_id).await["content"]["m.relates_to"].clone()
}

/// The message with `body` that arrived on the toy network: its reply target, thread root
/// and toy id.
async fn arrived_message(world: &ToyWorld, body: &str) -> (Option<String>, Option<String>, String) {
    let arrived = world
        .wait_for(
            body,
            |a| matches!(a, Arrived::Message { body: b, .. } if b == body),
        )
        .await;
    let Arrived::Message {
        reply_to,
        thread_root,
        id,
        ..
    } = arrived
    else {
        unreachable!("wait_for matched a message")
    };
    (reply_to, thread_root, id)
}

/// A Matrix message in the thread of `root`: `reply` is where its `m.in_reply_to` points,
/// a genuine reply unless `falling_back`.
fn in_thread(body: &str, root: &str, reply: &str, falling_back: bool) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": falling_back,
            "m.in_reply_to": {"event_id": reply},
        },
    })
}

#[tokio::test]
async fn remote_threads_become_matrix_threads() {
    let (harness, handle, _world) = start_toy_bridge(BridgeConfig::default(), false).await;
    let (alice, lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    let root = bridge(&handle, from_bob("r1", "a question")).await;

    // The thread's first message: in the thread of the root, falling back to the root itself
    // for clients without threads.
    let first = bridge(&handle, from_bob("r2", "first").in_thread("r1".into())).await;
    let relation = relates_to(&alice, &lobby, &first).await;
    assert_eq!(relation["rel_type"], "m.thread", "{relation}");
    assert_eq!(relation["event_id"], root.as_str(), "{relation}");
    assert_eq!(relation["is_falling_back"], true, "{relation}");
    assert_eq!(relation["m.in_reply_to"]["event_id"], root.as_str());

    // The next falls back to the thread's latest message, as the homeserver knows it.
    let second = bridge(&handle, from_bob("r3", "second").in_thread("r1".into())).await;
    let relation = relates_to(&alice, &lobby, &second).await;
    assert_eq!(relation["event_id"], root.as_str(), "{relation}");
    assert_eq!(relation["is_falling_back"], true, "{relation}");
    assert_eq!(relation["m.in_reply_to"]["event_id"], first.as_str());

    // A reply inside the thread is a genuine one.
    let reply = bridge(
        &handle,
        from_bob("r4", "about the first")
            .in_thread("r1".into())
            .reply_to("r2".into()),
    )
    .await;
    let relation = relates_to(&alice, &lobby, &reply).await;
    assert_eq!(relation["rel_type"], "m.thread", "{relation}");
    assert_eq!(relation["event_id"], root.as_str(), "{relation}");
    assert_ne!(relation["is_falling_back"], true, "{relation}");
    assert_eq!(relation["m.in_reply_to"]["event_id"], first.as_str());

    // A network naming a message of the thread as its root means the thread.
    let named = bridge(&handle, from_bob("r5", "named").in_thread("r3".into())).await;
    let relation = relates_to(&alice, &lobby, &named).await;
    assert_eq!(relation["rel_type"], "m.thread", "{relation}");
    assert_eq!(relation["event_id"], root.as_str(), "{relation}");

    // A root that was never bridged: a plain message.
    let lost = bridge(&handle, from_bob("r6", "lost").in_thread("r0".into())).await;
    assert_eq!(relates_to(&alice, &lobby, &lost).await, Value::Null);
}

#[tokio::test]
async fn matrix_threads_reach_the_network() {
    let (harness, handle, world) = start_toy_bridge(BridgeConfig::default(), false).await;
    let (alice, lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    let root = bridge(&handle, from_bob("r1", "a question")).await;

    // A message in the thread, with the fallback clients put there: the network hears the
    // thread's root, and no reply.
    let answer = alice
        .send_event(
            &lobby,
            "m.room.message",
            in_thread("an answer", &root, &root, true),
        )
        .await;
    let (reply_to, thread_root, answer_id) = arrived_message(&world, "an answer").await;
    assert_eq!(thread_root.as_deref(), Some("r1"));
    assert_eq!(reply_to, None);

    // A genuine reply inside the thread names both.
    let inside = alice
        .send_event(
            &lobby,
            "m.room.message",
            in_thread("about my answer", &root, &answer, false),
        )
        .await;
    let (reply_to, thread_root, _) = arrived_message(&world, "about my answer").await;
    assert_eq!(thread_root.as_deref(), Some("r1"));
    assert_eq!(reply_to, Some(answer_id));

    // A network without threads gets a reply to the thread's root, not to the message the
    // fallback points at.
    world.set_threads(false);
    alice
        .send_event(
            &lobby,
            "m.room.message",
            in_thread("no threads there", &root, &inside, true),
        )
        .await;
    let (reply_to, thread_root, _) = arrived_message(&world, "no threads there").await;
    assert_eq!(thread_root, None);
    assert_eq!(reply_to.as_deref(), Some("r1"));
}

#[tokio::test]
async fn read_receipts_cross_both_ways() {
    let (harness, handle, world) = start_toy_bridge(BridgeConfig::default(), false).await;
    let (alice, lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    let hello = bridge(&handle, from_bob("r1", "hello")).await;
    let later = bridge(&handle, from_bob("r2", "anyone there?")).await;
    let lobby_chat = "lobby".to_owned();

    // Bob read up to his first message on the network: his ghost's receipt is on it.
    let read = handle
        .remote_read(&lobby_chat, &"bob".to_owned(), &"r1".to_owned())
        .await
        .unwrap();
    assert!(read, "bob's reading was not shown");
    wait_read_receipt(&alice, &lobby, "@toy_bob:localhost", &hello).await;
    // Nothing to show for a message never bridged, nor for alice's own login reading.
    for (reader, up_to) in [("bob", "r9"), ("alice", "r2")] {
        let read = handle
            .remote_read(&lobby_chat, &reader.to_owned(), &up_to.to_owned())
            .await
            .unwrap();
        assert!(!read, "{reader} reading up to {up_to} was shown");
    }

    // Alice's message gets the bot's delivery receipt; then she reads bob's second message
    // in Matrix, and the network hears it from her login.
    alice.send_text(&lobby, "hi bob").await;
    arrived_message(&world, "hi bob").await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        encode(&lobby),
        encode(&later)
    );
    alice.call_ok(Method::POST, &path, Some(&json!({}))).await;
    let receipt = world
        .wait_for("alice's receipt", |a| matches!(a, Arrived::Read { .. }))
        .await;
    assert_eq!(
        receipt,
        Arrived::Read {
            speaker: "puppet:alice".to_owned(),
            up_to: "r2".to_owned(),
        }
    );

    // The receipts of the bot and of bob's ghost never went back to the network.
    harness.app.idle().await;
    let reads: Vec<Arrived> = world
        .arrived()
        .into_iter()
        .filter(|a| matches!(a, Arrived::Read { .. }))
        .collect();
    assert_eq!(reads, [receipt], "{reads:#?}");
}
