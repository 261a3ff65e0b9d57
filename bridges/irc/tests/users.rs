//! Matrix users on IRC with connections of their own, end to end: a real Synapse, a real
//! ngircd, and a plain IRC client written in the test on the other side.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

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

/// The bridge reaches the server over TLS, trusting the test's certificate by `tls_ca_file`
/// (the test's own client uses the plain port).
fn settings(server: &Ngircd) -> Settings {
    let (port, cert) = server.tls.clone().expect("a TLS server");
    Settings {
        networks: vec![NetworkSettings {
            idle_timeout: 1,
            tls: true,
            tls_ca_file: Some(cert.display().to_string()),
            ..support::network::test_network(port)
        }],
        paste_over_lines: Some(5),
        ..Settings::default()
    }
}

/// Whether the server says `nick` is connected over TLS (ngircd's `WHOIS` line 275).
async fn over_tls(client: &mut RawClient, nick: &str) -> bool {
    client.send(&format!("WHOIS {nick}")).await;
    let mut secure = false;
    loop {
        let line = client
            .expect(|l| matches!(l.command.as_str(), "275" | "318"))
            .await;
        if line.command == "318" {
            return secure;
        }
        secure = true;
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
    let server = Ngircd::start_with_tls().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let router = trestle_irc::router(settings(&server)).unwrap();
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

    // Made by the bridge, not asked for: no "connected." notice, so no management room.
    setup.app.idle().await;
    let sync = alice
        .call_ok(
            reqwest::Method::GET,
            "/_matrix/client/v3/sync?timeout=0",
            None,
        )
        .await;
    assert_eq!(
        sync["rooms"]["invite"].as_object().map_or(0, |r| r.len()),
        0,
        "{sync}"
    );

    assert!(over_tls(&mut bob, "trestle").await, "the bot is on TLS");
    assert!(over_tls(&mut bob, "Alice_Smith[m]").await, "so is hers");
    assert!(!over_tls(&mut bob, "bob").await, "bob's is plain text");

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

    let bob_ghost = "@irc_test_bob:localhost";
    // Five lines go as lines; more than `paste_over_lines` as the first and a link to the
    // whole text, uploaded to the homeserver's media repository and served by the bridge's
    // signed link to anyone, without a token.
    let lines: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
    alice.send_text(&room, &lines[..5].join("\n")).await;
    for expected in &lines[..5] {
        assert_eq!(bob.expect_privmsg("#chat").await.param(1), expected);
    }
    let long = lines.join("\n");
    alice.send_text(&room, &long).await;
    let line = bob.expect_privmsg("#chat").await;
    let text = line.param(1);
    let url = text
        .strip_prefix("line 1 [8 lines: ")
        .and_then(|rest| rest.strip_suffix(']'))
        .filter(|url| url.starts_with(&format!("{}/media/v1/download/localhost/", setup.url)))
        .unwrap_or_else(|| panic!("not a paste line with a media link: {text}"));
    let pasted = reqwest::get(url).await.unwrap();
    assert!(pasted.status().is_success(), "{url}: {}", pasted.status());
    assert_eq!(pasted.text().await.unwrap(), long);

    // IRC → Matrix still comes from ghosts, and our own nicks have none.
    bob.privmsg("#chat", "hi both").await;
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

    // A new display name is a new nick; the bot makes no ghost of it.
    set_display_name(&other, "@alice2:localhost", "Ally").await;
    let nick = bob.expect(|l| l.command == "NICK").await;
    assert_eq!(
        (nick.nick.as_str(), nick.param(0)),
        ("Alice_Smith[m]_", "Ally[m]")
    );
    other.send_text(&room, "new name").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!((line.nick.as_str(), line.param(1)), ("Ally[m]", "new name"));

    // An IRC user holding the nick a Matrix user's connection asks for keeps it (the server
    // gives ours the next), and is still bridged as themselves.
    let mut zed = RawClient::connect(server.port, "zed").await;
    zed.send("NICK Zed[m]").await;
    zed.expect(|l| l.command == "NICK").await;
    zed.join("#chat").await;
    // Nicks are lower-cased the IRC way (`[]` is `{}`), then escaped.
    let zed_ghost = "@irc_test_zed=7bm=7d:localhost";
    wait_member(&alice, &room, zed_ghost, true).await;
    let matrix_zed = setup.synapse.register_user("zed", "password-1234").await;
    set_display_name(&matrix_zed, "@zed:localhost", "Zed").await;
    matrix_zed.join(&room).await;
    matrix_zed.send_text(&room, "from matrix").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("Zed[m]_", "from matrix")
    );
    zed.privmsg("#chat", "from irc").await;
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["sender"] == zed_ghost && e["content"]["body"] == "from irc"
        })
        .await;

    // Power: bob opened #chat, so the NAMES list the bot got names him operator, and his
    // ghost has power level 50 from the portal's start.
    let watcher = setup
        .synapse
        .register_user("watcher", "password-1234")
        .await;
    watcher.join(&room).await;
    watcher
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.power_levels" && e["content"]["users"][bob_ghost] == 50
        })
        .await;

    // Matrix kicks and bans of IRC users: the bot gets operator status on IRC, alice power
    // to kick in Matrix (her own connection has none, so the bot kicks for her).
    bob.send("MODE #chat +o trestle").await;
    support::matrix::make_moderator(&setup, &alice, &room, "@alice:localhost").await;
    let mut dave = RawClient::connect(server.port, "dave").await;
    dave.join("#chat").await;
    let dave_ghost = "@irc_test_dave:localhost";
    wait_member(&watcher, &room, dave_ghost, true).await;
    let moderate = |action: &'static str, reason: &'static str| {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/{action}",
            trestle_tests::synapse::encode(&room)
        );
        let body = json!({"user_id": dave_ghost, "reason": reason});
        let alice = &alice;
        async move {
            alice
                .call_ok(reqwest::Method::POST, &path, Some(&body))
                .await
        }
    };
    moderate("kick", "spam").await;
    let kick = bob
        .expect(|l| l.command == "KICK" && l.param(1) == "dave")
        .await;
    assert_eq!(
        (kick.nick.as_str(), kick.param(2)),
        ("trestle", "Alice Smith!: spam")
    );
    dave.join("#chat").await;
    wait_member(&watcher, &room, dave_ghost, true).await;
    moderate("ban", "again").await;
    let ban = bob
        .expect(|l| l.command == "MODE" && l.param(1) == "+b")
        .await;
    assert_eq!(ban.nick, "trestle");
    let mask = ban.param(2);
    assert!(
        mask.starts_with("*!") && mask.contains("dave@"),
        "a mask for dave's user and host, not one banning the bridge too: {mask}"
    );
    bob.expect(|l| l.command == "KICK" && l.param(1) == "dave")
        .await;
    moderate("unban", "").await;
    let unban = bob
        .expect(|l| l.command == "MODE" && l.param(1) == "-b")
        .await;
    assert_eq!(unban.param(2), mask);
    // Kicking a Matrix user kicks their connection on IRC too.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/kick",
        trestle_tests::synapse::encode(&room)
    );
    let body = json!({"user_id": "@zed:localhost", "reason": "bye"});
    alice
        .call_ok(reqwest::Method::POST, &path, Some(&body))
        .await;
    let kick = bob
        .expect(|l| l.command == "KICK" && l.param(1) == "Zed[m]_")
        .await;
    assert_eq!(
        (kick.nick.as_str(), kick.param(2)),
        ("trestle", "Alice Smith!: bye")
    );

    // IRC kicks and bans of Matrix users: kicked from the portal by the bot.
    bob.send("KICK #chat Ally[m] :out").await;
    let kicked = watcher
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@alice2:localhost"
                && e["content"]["membership"] == "leave"
        })
        .await;
    assert_eq!(kicked["sender"], "@irc:localhost");
    assert_eq!(kicked["content"]["reason"], "kicked on IRC by bob: out");
    bob.send("MODE #chat +b Alice_Smith[m]!*@*").await;
    bob.expect(|l| l.command == "PART" && l.nick == "Alice_Smith[m]")
        .await;
    let banned = watcher
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@alice:localhost"
                && e["content"]["membership"] == "leave"
        })
        .await;
    let reason = banned["content"]["reason"].as_str().unwrap_or_default();
    assert_eq!(reason, "banned on IRC by bob (Alice_Smith[m]!*@*)");
    // Back in the room, her connection is refused the channel: out again.
    alice.join(&room).await;
    watcher
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@alice:localhost"
                && e["content"]["membership"] == "leave"
                && e["content"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("cannot join #chat on IRC"))
        })
        .await;

    // Ally, out of every portal, is disconnected once idle.
    // Sharing no channel with it, bob sees no QUIT: he asks the server until it is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        bob.send("ISON Ally[m]").await;
        let online = bob.expect(|l| l.command == "303").await;
        if online.param(1).trim().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected: {online:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    setup.stop().await;
}
