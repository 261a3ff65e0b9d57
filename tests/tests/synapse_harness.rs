//! Proves the Synapse harness works: two users, a room, an invite, a message read back.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use trestle_tests::synapse::Synapse;

#[tokio::test]
async fn two_users_talk_in_a_room() {
    let started = Instant::now();
    let synapse = Synapse::start(&[]).await;
    eprintln!(
        "Synapse started in {:?} at {}",
        started.elapsed(),
        synapse.base_url()
    );
    assert_eq!(synapse.server_name(), "localhost");

    let alice = synapse.register_user("alice", "alice-password").await;
    let bob = synapse.register_user("bob", "bob-password").await;
    assert_eq!(alice.user_id, "@alice:localhost");
    assert_eq!(bob.user_id, "@bob:localhost");
    assert_eq!(
        alice.get_displayname(&alice.user_id).await.as_deref(),
        Some("alice")
    );

    let room_id = alice
        .create_room(json!({"name": "Harness test", "preset": "private_chat"}))
        .await;
    alice.invite(&room_id, &bob.user_id).await;
    assert_eq!(bob.join(&room_id).await, room_id);
    assert_eq!(
        alice.joined_members(&room_id).await,
        vec![alice.user_id.clone(), bob.user_id.clone()]
    );

    let event_id = alice.send_text(&room_id, "hello bob").await;
    let seen = bob
        .wait_for_event(&room_id, Duration::from_secs(10), |e| {
            e["type"] == "m.room.message" && e["content"]["body"] == "hello bob"
        })
        .await;
    assert_eq!(seen["event_id"], event_id.as_str());
    assert_eq!(seen["sender"], alice.user_id.as_str());
    assert_eq!(
        bob.event(&room_id, &event_id).await["content"]["body"],
        "hello bob"
    );

    // Pagination: more events than one /messages page.
    for i in 0..120 {
        bob.send_event(&room_id, "org.trestle.test", json!({"i": i}))
            .await;
    }
    let timeline = alice.messages(&room_id).await;
    let custom: Vec<i64> = timeline
        .iter()
        .filter(|e| e["type"] == "org.trestle.test")
        .map(|e| e["content"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(custom, (0..120).collect::<Vec<_>>());
    assert_eq!(timeline[0]["type"], "m.room.create", "oldest first");
}

#[tokio::test]
async fn extra_yaml_and_restart() {
    let mut synapse = Synapse::start_with(&[], "max_upload_size: 1M\n").await;
    assert!(
        std::fs::read_to_string(synapse.dir().join("homeserver.yaml"))
            .unwrap()
            .contains("max_upload_size: 1M")
    );
    let carol = synapse.register_user("carol", "carol-password").await;
    let room_id = carol.create_room(json!({})).await;
    synapse.restart().await;
    let carol = synapse.login("carol", "carol-password").await;
    assert_eq!(
        carol.joined_members(&room_id).await,
        vec!["@carol:localhost".to_owned()]
    );
    assert!(synapse.log_tail(5).lines().count() <= 5);
}
