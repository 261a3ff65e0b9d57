//! IRC keeps no history, so what is said on IRC while the bridge is away is lost to Matrix:
//! end to end (a real Synapse, a real ngircd, a plain IRC client), a portal is told so once
//! after the bot's connection comes back and once after Trestle restarts, before the next
//! line from IRC; never on the first connection.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::Value;
use support::{
    matrix::BOT,
    ngircd::{Gate, Ngircd},
    raw::RawClient,
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::UserClient,
};

/// What the kit tells a portal whose network cannot say what was missed.
const GAP: &str = "Messages sent on IRC while the bridge was disconnected may be missing here.";

const BOB: &str = "@irc_test_bob:localhost";

fn router(port: u16) -> trestle::Router {
    trestle_irc::router(support::network::settings_without_auto_connect(port)).unwrap()
}

/// The room's gap notices and bob's messages, in the room's order.
async fn told(user: &UserClient, room: &str) -> Vec<String> {
    user.messages(room)
        .await
        .iter()
        .filter(|e: &&Value| {
            e["type"] == "m.room.message"
                && (e["sender"] == BOB || (e["sender"] == BOT && e["content"]["body"] == GAP))
        })
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits for bob's `body` in the room.
async fn heard(user: &UserClient, room: &str, body: &str) {
    user.wait_for_event(room, WAIT, |e| {
        e["sender"] == BOB && e["content"]["body"] == body
    })
    .await;
}

#[tokio::test]
async fn a_portal_is_told_once_that_messages_may_be_missing_after_a_reconnect() {
    let mut server = Ngircd::start().await;
    let gate = Gate::new(server.port).await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let mut setup = Harness::start(registration, router(gate.port)).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let alice = setup.synapse.register_user("alice", "password-1234").await;
    let room = alice.join("#irc_test_chat:localhost").await;
    bob.privmsg("#chat", "before").await;
    heard(&alice, &room, "before").await;
    // The first connection missed nothing.
    assert_eq!(told(&alice, &room).await, ["before"]);

    // The server dies; bob comes back first and speaks while the bridge is kept out.
    gate.set_open(false);
    server.kill();
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("was lost"))
        })
        .await;
    server.restart().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    bob.privmsg("#chat", "said while the bridge was away").await;
    gate.set_open(true);
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    bob.privmsg("#chat", "after the gap").await;
    heard(&alice, &room, "after the gap").await;
    assert_eq!(
        told(&alice, &room).await,
        ["before", GAP, "after the gap"],
        "one notice, before what comes after the reconnect; what was missed is not there"
    );

    // Trestle restarts: the bridge was away, so the portal is told again, before the next
    // line.
    setup.stop().await;
    bob.expect(|l| l.command == "QUIT" && l.nick == "trestle")
        .await;
    bob.privmsg("#chat", "said while Trestle was stopped").await;
    setup.restart(router(gate.port)).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    bob.privmsg("#chat", "after the restart").await;
    heard(&alice, &room, "after the restart").await;
    assert_eq!(
        told(&alice, &room).await,
        ["before", GAP, "after the gap", GAP, "after the restart"]
    );
    setup.stop().await;
}
