//! Matrix users on IRC with connections of their own, end to end: a real Synapse, a real
//! ngircd, and a plain IRC client written in the test on the other side.

#[path = "support/all.rs"]
mod support;

use serde_json::json;
use support::ngircd::Ngircd;
use support::raw::RawClient;
use trestle_irc::{NetworkSettings, Settings};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::wait_member,
    synapse::UserClient,
};

fn settings(port: u16) -> Settings {
    Settings {
        networks: vec![NetworkSettings {
            idle_timeout: 1,
            ..support::network::test_network(port)
        }],
        ..Settings::default()
    }
}

async fn set_display_name(user: &UserClient, user_id: &str, name: &str) {
    let path = format!(
        "/_matrix/client/v3/profile/{}/displayname",
        trestle_tests::synapse::encode(user_id)
    );
    user.call_ok(
        reqwest::Method::PUT,
        &path,
        Some(&json!({ "displayname": name })),
    )
    .await;
}

#[tokio::test]
async fn matrix_users_who_join_a_portal_get_their_own_irc_connections() {
    let server = Ngircd::start().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let router = trestle_irc::router(settings(server.port)).unwrap();
    let mut setup = Harness::start(registration, router).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;

    // Alice joins and speaks at once: her first message comes from her own nick (her display
    // name, sanitised), after her connection joined the channel, and is not relayed as well.
    let alice = setup.synapse.register_user("alice", "password-1234").await;
    set_display_name(&alice, "@alice:localhost", "Alice Smith!").await;
    let room = alice.join("#irc_test_chat:localhost").await;
    alice.send_text(&room, "hello from my own nick").await;
    let join = bob
        .expect(|l| l.command == "JOIN" && l.param(0) == "#chat")
        .await;
    assert_eq!(join.nick, "Alice_Smith[m]");
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("Alice_Smith[m]", "hello from my own nick")
    );

    // A second user with the same display name gets another nick.
    let other = setup.synapse.register_user("alice2", "password-1234").await;
    set_display_name(&other, "@alice2:localhost", "Alice Smith!").await;
    other.join(&room).await;
    other.send_text(&room, "me too").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("Alice_Smith[m]_", "me too"),
        "nothing relayed in between, and a nick of her own"
    );
    alice.send_text(&room, "still me").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(line.nick, "Alice_Smith[m]");

    // IRC → Matrix still comes from ghosts, and our own nicks have none.
    bob.privmsg("#chat", "hi both").await;
    let bob_ghost = "@irc_test_bob:localhost";
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["sender"] == bob_ghost && e["content"]["body"] == "hi both"
        })
        .await;
    setup.app.idle().await;
    let members = alice.joined_members(&room).await;
    assert!(
        !members.iter().any(|m| m.starts_with("@irc_test_alice")),
        "{members:?}"
    );

    // The second user leaves: their nick parts, and once idle quits.
    other.leave(&room).await;
    let part = bob
        .expect(|l| l.command == "PART" && l.nick == "Alice_Smith[m]_")
        .await;
    assert_eq!(part.param(0), "#chat");
    // Sharing no channel with it, bob sees no QUIT: he asks the server until it is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        bob.send("ISON Alice_Smith[m]_ Alice_Smith[m]").await;
        let online = bob.expect(|l| l.command == "303").await;
        if online.param(1).trim() == "Alice_Smith[m]" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected: {online:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    wait_member(&alice, &room, "@alice:localhost", true).await;
    setup.stop().await;
}
