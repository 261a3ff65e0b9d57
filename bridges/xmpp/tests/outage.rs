//! The XMPP server killed and started again mid-conversation, end to end: a real Synapse, a
//! real Prosody (killed with SIGKILL, started again on the same data), and an XMPP client
//! written in the test. The bridge's component reaches Prosody through a gate the test opens
//! and closes, so that the room speaks while the bridge is away.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::Value;
use support::{
    client::{XmppClient, body},
    gate::Gate,
    prosody::Prosody,
    room::{alice_in_room, bob_joins, message_from, settings, start_with},
};
use tokio_xmpp::parsers::message::MessageType;
use trestle_tests::appservice::WAIT;

/// The bodies of the messages `sender` sent in `room`, oldest first.
async fn bodies_from(
    user: &trestle_tests::synapse::UserClient,
    room: &str,
    sender: &str,
) -> Vec<String> {
    let events: Vec<Value> = user.messages(room).await;
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn prosody_killed_and_restarted_mid_conversation_loses_nothing_either_way() {
    let mut server = Prosody::start(&["alice"]).await;
    let gate = Gate::start(server.component_port).await;
    let (room, mut alice) = alice_in_room(&server).await;
    let mut bridge = settings(&server);
    bridge.server = Some(gate.address());
    bridge.reconnect_delay = 1;
    let setup = start_with(bridge).await;
    let (bob, portal, bob_occupant) = bob_joins(&setup, &mut alice, &room).await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    let from_bob = |wanted: &'static str| {
        let bob_occupant = bob_occupant.clone();
        move |m: &tokio_xmpp::parsers::message::Message| {
            body(m) == Some(wanted)
                && m.from.as_ref().map(|f| f.to_string()) == Some(bob_occupant.clone())
        }
    };

    // The conversation is under way.
    alice
        .say(MessageType::Groupchat, &room, "b1", "before the crash")
        .await;
    bob.wait_for_event(&portal, WAIT, message_from(alice_ghost, "before the crash"))
        .await;
    bob.send_text(&portal, "hello before").await;
    alice
        .expect_message("bob's message", from_bob("hello before"))
        .await;

    // Prosody dies; the bridge cannot come back until the gate opens. Matrix goes on talking.
    gate.close();
    server.kill();
    drop(alice);
    bob.send_text(&portal, "while down 1").await;
    bob.send_text(&portal, "while down 2").await;

    // Prosody is back, and the room speaks while the bridge is still away: its archive keeps
    // what is said.
    server.restart().await;
    let mut alice = XmppClient::connect(&server, "alice").await;
    alice.join(&room, "alice").await;
    for (id, said) in [("m1", "missed 1"), ("m2", "missed 2"), ("m3", "missed 3")] {
        alice.say(MessageType::Groupchat, &room, id, said).await;
    }

    // The bridge comes back: what Matrix said meanwhile reaches the room, in order, from bob.
    gate.open();
    alice
        .expect_message("bob's first message", from_bob("while down 1"))
        .await;
    alice
        .expect_message("bob's second message", from_bob("while down 2"))
        .await;

    // What the room said meanwhile arrives through its archive, once and in order, before
    // what it says next.
    bob.wait_for_event(&portal, WAIT, message_from(alice_ghost, "missed 3"))
        .await;
    alice
        .say(MessageType::Groupchat, &room, "a1", "after the crash")
        .await;
    bob.wait_for_event(&portal, WAIT, message_from(alice_ghost, "after the crash"))
        .await;
    assert_eq!(
        bodies_from(&bob, &portal, alice_ghost).await,
        [
            "before the crash",
            "missed 1",
            "missed 2",
            "missed 3",
            "after the crash"
        ]
    );
}
