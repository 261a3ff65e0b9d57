//! A channel's portal upgraded to room version 12, end to end (a real Synapse, a real ngircd,
//! a plain IRC client): the bridge follows the tombstone and goes on in the new room, both
//! ways.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::json;
use support::{matrix::BOT, ngircd::Ngircd, raw::RawClient};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{set_power_level, upgrade_room, wait_member},
};

#[tokio::test]
async fn a_channel_portal_upgraded_to_room_version_12_bridges_both_ways() {
    let server = Ngircd::start().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let settings = support::network::settings_without_auto_connect(server.port);
    let mut setup = Harness::start(registration, trestle_irc::router(settings).unwrap()).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let alice = setup.synapse.register_user("alice", "password-1234").await;
    let room = alice.join("#irc_test_chat:localhost").await;
    let bob_ghost = "@irc_test_bob:localhost";
    wait_member(&alice, &room, bob_ghost, true).await;

    // Alice, made an admin of the portal (the bot made it, in version 12: it is its creator,
    // above 100), upgrades it.
    set_power_level(&setup.app, &alice, &room, "@alice:localhost", 150).await;
    let new_room = upgrade_room(&alice, &room, json!({"new_version": "12"})).await;
    wait_member(&alice, &new_room, BOT, true).await;
    wait_member(&alice, &new_room, bob_ghost, true).await;

    // IRC → Matrix, in the new room.
    bob.privmsg("#chat", "hello, new room").await;
    alice
        .wait_for_event(&new_room, WAIT, |e| {
            e["sender"] == bob_ghost && e["content"]["body"] == "hello, new room"
        })
        .await;
    // Matrix → IRC, from it (relayed by the bot).
    alice.send_text(&new_room, "hi from the new room").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("trestle", "<alice> hi from the new room")
    );
    setup.stop().await;
}
