//! Two Synapses federating on loopback: a room made on one is joined by alias from the other,
//! and messages cross both ways.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use trestle_tests::synapse::{Synapse, encode, free_port};

#[tokio::test]
async fn two_homeservers_federate_on_loopback() {
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = tokio::join!(
        Synapse::start_federating(port_a, &[], ""),
        Synapse::start_federating(port_b, &[], ""),
    );
    assert_eq!(a.server_name(), format!("localhost:{port_a}"));
    assert_eq!(b.server_name(), Synapse::federating_server_name(port_b));
    assert_ne!(a.server_name(), b.server_name());

    let alice = a.register_user("alice", "alice-password").await;
    let bob = b.register_user("bob", "bob-password").await;
    assert_eq!(bob.user_id, b.user_id("bob"));

    // Bob's public room on B, found by its alias from A: the alias query, the join and the
    // room's history all go over federation.
    let room = bob
        .create_room(json!({
            "preset": "public_chat",
            "room_alias_name": "lounge",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "world_readable"},
            }],
        }))
        .await;
    let before = bob.send_text(&room, "before alice came").await;
    let alias = format!("#lounge:{}", b.server_name());
    assert_eq!(alice.join(&alias).await, room);
    // What came before the join is not A's until it backfills, which paging backwards from the
    // present makes it do (paging forwards from the start finds only what A has).
    let back = alice
        .call_ok(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                encode(&room)
            ),
            None,
        )
        .await;
    let seen = back["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == before.as_str())
        .unwrap_or_else(|| panic!("{before} not backfilled: {back}"));
    assert_eq!(seen["sender"], bob.user_id.as_str());
    assert_eq!(seen["content"]["body"], "before alice came");

    // Both ways, after the join.
    let wait = Duration::from_secs(30);
    alice.send_text(&room, "hello from A").await;
    bob.wait_for_event(&room, wait, |e| {
        e["sender"] == alice.user_id.as_str() && e["content"]["body"] == "hello from A"
    })
    .await;
    bob.send_text(&room, "hello from B").await;
    alice
        .wait_for_event(&room, wait, |e| e["content"]["body"] == "hello from B")
        .await;
    let mut members = bob.joined_members(&room).await;
    members.sort();
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(members, expected);
}
