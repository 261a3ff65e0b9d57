//! The IRC bridge end to end: a real Synapse, a real ngircd, and a plain IRC client written
//! in the test on the other side.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::{Value, json};
use support::matrix::{BOT, login};
use support::ngircd::{Gate, Ngircd};
use support::raw::RawClient;
use trestle_irc::Settings;
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{provision, wait_after, wait_member},
    synapse::UserClient,
};

/// Matrix users are relayed here (or `login`); automatic connections are tested in users.rs.
fn settings(port: u16) -> Settings {
    support::network::settings_without_auto_connect(port)
}

fn message_from<'a>(sender: &'a str, body: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["type"] == "m.room.message" && e["sender"] == sender && e["content"]["body"] == body
}

fn joined(user: &str) -> impl Fn(&Value) -> bool + '_ {
    membership(user, "join")
}

fn left(user: &str) -> impl Fn(&Value) -> bool + '_ {
    membership(user, "leave")
}

fn membership<'a>(user: &'a str, membership: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == user
            && e["content"]["membership"] == membership
    }
}

#[tokio::test]
async fn a_conversation_flows_both_ways_and_survives_an_irc_server_restart() {
    let mut server = Ngircd::start().await;
    let gate = Gate::new(server.port).await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;

    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let router = trestle_irc::router(settings(gate.port)).unwrap();
    let setup = Harness::start(registration, router).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;

    // A Matrix user joins the channel's alias: the portal is made, with bob's ghost in it.
    let alice = setup.synapse.register_user("alice", "password-1234").await;
    let room = alice.join("#irc_test_chat:localhost").await;
    let bob_ghost = "@irc_test_bob:localhost";
    alice.wait_for_event(&room, WAIT, joined(bob_ghost)).await;
    assert_eq!(
        alice.get_displayname(bob_ghost).await.as_deref(),
        Some("bob")
    );

    // IRC → Matrix: formatting becomes HTML, an action an emote, a notice a notice.
    bob.privmsg("#chat", "hello \x02matrix\x02 <3").await;
    let said = alice
        .wait_for_event(&room, WAIT, message_from(bob_ghost, "hello matrix <3"))
        .await;
    assert_eq!(said["content"]["msgtype"], "m.text");
    assert_eq!(
        said["content"]["formatted_body"],
        "hello <b>matrix</b> &lt;3"
    );
    bob.send("PRIVMSG #chat :\x01ACTION waves\x01").await;
    let waved = alice
        .wait_for_event(&room, WAIT, message_from(bob_ghost, "waves"))
        .await;
    assert_eq!(waved["content"]["msgtype"], "m.emote");
    bob.send("NOTICE #chat :heads up").await;
    let notice = alice
        .wait_for_event(&room, WAIT, message_from(bob_ghost, "heads up"))
        .await;
    assert_eq!(notice["content"]["msgtype"], "m.notice");

    // Matrix → IRC: relayed by the bot with alice's name.
    alice.send_text(&room, "hi irc").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("trestle", "<alice> hi irc")
    );
    alice
        .send_event(
            &room,
            "m.room.message",
            json!({"msgtype": "m.emote", "body": "dances"}),
        )
        .await;
    assert_eq!(bob.expect_privmsg("#chat").await.param(1), "* alice dances");
    alice
        .send_event(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "bold", "format": "org.matrix.custom.html", "formatted_body": "<b>bold</b>"}),
        )
        .await;
    assert_eq!(
        bob.expect_privmsg("#chat").await.param(1),
        "<alice> \x02bold\x02"
    );

    // A 20-line message arrives whole, line by line, in order.
    let lines: Vec<String> = (1..=20).map(|i| format!("line {i} of the paste")).collect();
    alice.send_text(&room, &lines.join("\n")).await;
    for expected in &lines {
        assert_eq!(
            bob.expect_privmsg("#chat").await.param(1),
            format!("<alice> {expected}")
        );
    }

    // A nick change: the old ghost leaves, the new one joins and speaks.
    bob.send("NICK bobby").await;
    let bobby_ghost = "@irc_test_bobby:localhost";
    alice.wait_for_event(&room, WAIT, joined(bobby_ghost)).await;
    assert_eq!(
        alice.get_displayname(bobby_ghost).await.as_deref(),
        Some("bobby")
    );
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob_ghost
                && e["content"]["membership"] == "leave"
        })
        .await;
    bob.privmsg("#chat", "new name").await;
    alice
        .wait_for_event(&room, WAIT, message_from(bobby_ghost, "new name"))
        .await;

    // The IRC server dies mid-conversation. What alice says meanwhile is delivered once the
    // bridge is back by itself; the test's client is let in first so it can hear it.
    gate.set_open(false);
    server.kill();
    // The portal is told once that the bridge's connection is gone, and once that it is back.
    let notice = |text: &'static str| {
        move |e: &Value| {
            e["sender"] == BOT
                && e["content"]["msgtype"] == "m.notice"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(text))
        }
    };
    let lost = alice
        .wait_for_event(
            &room,
            WAIT,
            notice("connection to the IRC network test was lost"),
        )
        .await;
    assert!(
        lost["content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("reaches IRC once it is back")),
        "{lost}"
    );
    alice.send_text(&room, "said during the outage").await;
    setup.app.idle().await;
    server.restart().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    gate.set_open(true);
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(line.param(1), "<alice> said during the outage");
    bob.privmsg("#chat", "back again").await;
    alice
        .wait_for_event(&room, WAIT, message_from(bob_ghost, "back again"))
        .await;
    alice
        .wait_for_event(
            &room,
            WAIT,
            notice("connection to the IRC network test is back"),
        )
        .await;
    let told = alice.messages(&room).await;
    let notices = told
        .iter()
        .filter(|e| notice("IRC network test")(e))
        .count();
    assert_eq!(
        notices, 2,
        "one notice for the drop (however many reconnects failed), one for the return"
    );
    alice.send_text(&room, "welcome back").await;
    assert_eq!(
        bob.expect_privmsg("#chat").await.param(1),
        "<alice> welcome back"
    );

    // Topics both ways.
    bob.send("TOPIC #chat :the irc topic").await;
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.topic" && e["content"]["topic"] == "the irc topic"
        })
        .await;
    // Portals give Matrix users no power by default; the bot makes alice a moderator.
    support::matrix::make_moderator(&setup, &alice, &room, "@alice:localhost").await;
    alice
        .send_state(
            &room,
            "m.room.topic",
            "",
            json!({"topic": "the matrix topic"}),
        )
        .await;
    let topic = bob
        .expect(|l| l.command == "TOPIC" && l.nick == "trestle")
        .await;
    assert_eq!(topic.param(1), "the matrix topic");

    // Kicks and quits take ghosts out.
    let mut dave = RawClient::connect(server.port, "dave").await;
    dave.join("#chat").await;
    let dave_ghost = "@irc_test_dave:localhost";
    wait_member(&alice, &room, dave_ghost, true).await;
    bob.send("KICK #chat dave :behave").await;
    let kick = alice.wait_for_event(&room, WAIT, left(dave_ghost)).await;
    assert_eq!(kick["sender"], BOT, "{kick}");
    assert_eq!(kick["content"]["reason"], "bob: behave");
    dave.join("#chat").await;
    wait_member(&alice, &room, dave_ghost, true).await;
    dave.send("QUIT :bye all").await;
    wait_member(&alice, &room, dave_ghost, false).await;

    // Channel modes become power levels: bob, the channel's operator (50 from the NAMES
    // list), voices himself and gives up his operator status.
    bob.send("MODE #chat +v-o bob bob").await;
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.power_levels" && e["content"]["users"][bob_ghost] == 10
        })
        .await;

    // Leaving: a PART takes bob's ghost out of the room.
    bob.send("PART #chat :later").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while alice
        .joined_members(&room)
        .await
        .iter()
        .any(|m| m == bob_ghost)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's ghost is still in the room"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The rooms the user is invited to, from an initial `/sync`. Synapse caches an initial sync
/// for a while, so each call asks with a different filter.
async fn invites(user: &UserClient, attempt: u32) -> Vec<String> {
    let path = format!(
        "/_matrix/client/v3/sync?timeout=0&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A{}%7D%7D%7D",
        attempt + 1
    );
    let sync = user.call_ok(reqwest::Method::GET, &path, None).await;
    sync["rooms"]["invite"]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_logged_in_user_speaks_with_their_own_nick_and_gets_private_messages() {
    let server = Ngircd::start().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let settings = Settings {
        policy_lists: vec!["#bans:localhost".into()],
        ..settings(server.port)
    };
    let setup = Harness::start(registration, trestle_irc::router(settings).unwrap()).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;

    let carol = setup.synapse.register_user("carol", "password-1234").await;
    // The policy list the bridge follows, empty for now (filled below).
    let bans = carol
        .create_room(json!({"preset": "public_chat", "room_alias_name": "bans"}))
        .await;

    // The `irc` protocol: the network as an instance, channel and nick lookups.
    let get = |path: &'static str| carol.call_ok(reqwest::Method::GET, path, None);
    let protocols = get("/_matrix/client/v3/thirdparty/protocols").await;
    assert_eq!(
        protocols["irc"]["instances"][0]["network_id"], "test",
        "{protocols}"
    );
    let locations =
        get("/_matrix/client/v3/thirdparty/location/irc?network=test&channel=%23chat").await;
    assert_eq!(
        locations[0]["alias"], "#irc_test_chat:localhost",
        "{locations}"
    );
    let users = get("/_matrix/client/v3/thirdparty/user/irc?network=test&nickname=Bob").await;
    assert_eq!(users[0]["userid"], "@irc_test_bob:localhost", "{users}");
    let unknown =
        get("/_matrix/client/v3/thirdparty/location/irc?network=nope&channel=%23chat").await;
    assert_eq!(unknown, json!([]));

    let room = carol.join("#irc_test_chat:localhost").await;
    let bob_ghost = "@irc_test_bob:localhost";
    wait_member(&carol, &room, bob_ghost, true).await;

    // Her own IRC connection, from the management room.
    login(&carol, "carol_m", "Logged in as carol_m").await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "carol_m" && l.param(0) == "#chat")
        .await;

    // Her messages go out as carol_m, without a relay prefix, and are not echoed back.
    carol.send_text(&room, "I like cats a lot").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("carol_m", "I like cats a lot")
    );

    // A reply carries a short quote; an edit arrives as a compact correction.
    bob.privmsg("#chat", "what do you like?").await;
    let question = carol
        .wait_for_event(&room, WAIT, message_from(bob_ghost, "what do you like?"))
        .await;
    carol
        .send_event(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "cats",
                   "m.relates_to": {"m.in_reply_to": {"event_id": question["event_id"]}}}),
        )
        .await;
    assert_eq!(
        bob.expect_privmsg("#chat").await.param(1),
        "bob: \"what do you like?\" <- cats"
    );
    let original = carol.send_text(&room, "I really like dogs a lot").await;
    carol
        .send_event(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* I really like birds a lot",
                   "m.new_content": {"msgtype": "m.text", "body": "I really like birds a lot"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": original}}),
        )
        .await;
    assert_eq!(
        bob.expect_privmsg("#chat").await.param(1),
        "I really like dogs a lot"
    );
    assert_eq!(bob.expect_privmsg("#chat").await.param(1), "* …birds…");
    setup.app.idle().await;
    let ghost_of_carol = "@irc_test_carol_m:localhost";
    assert!(
        !carol
            .joined_members(&room)
            .await
            .iter()
            .any(|m| m == ghost_of_carol),
        "her own nick has no ghost"
    );

    // A private message to her nick becomes a direct chat with bob's ghost, both ways.
    bob.privmsg("carol_m", "psst").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempt = 0;
    let dm = loop {
        if let Some(dm) = invites(&carol, attempt).await.into_iter().next() {
            break dm;
        }
        attempt += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no invite to a direct chat"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    carol.join(&dm).await;
    carol
        .wait_for_event(&dm, WAIT, message_from(bob_ghost, "psst"))
        .await;
    carol.send_text(&dm, "hey bob").await;
    let line = bob.expect_privmsg("bob").await;
    assert_eq!((line.nick.as_str(), line.param(1)), ("carol_m", "hey bob"));

    // A user the policy list bans is not bridged: mallory speaks before the rule (with a
    // connection of her own), not after.
    let mallory = setup
        .synapse
        .register_user("mallory", "password-1234")
        .await;
    let mallory_id = "@mallory:localhost";
    mallory.join("#irc_test_chat:localhost").await;
    login(&mallory, "mallory_m", "Logged in as mallory_m").await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "mallory_m")
        .await;
    mallory.send_text(&room, "hello before the ban").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("mallory_m", "hello before the ban")
    );
    let rule = json!({"entity": "@mall*:localhost", "recommendation": "m.ban", "reason": "spam"});
    carol
        .send_state(&bans, "m.policy.rule.user", "rule-1", rule)
        .await;
    // The rule reaches the bridge no later than carol's next message does.
    carol.send_text(&room, "a rule is set").await;
    assert_eq!(bob.expect_privmsg("#chat").await.param(1), "a rule is set");
    let refused = mallory.send_text(&room, "buy my stuff").await;
    let told = wait_after(&mallory, &room, &refused, |e| {
        e["sender"] == BOT && e["content"]["msgtype"] == "m.notice"
    })
    .await;
    let why = told["content"]["body"].as_str().unwrap_or_default();
    assert!(why.contains(mallory_id) && why.contains("spam"), "{told}");
    // Her connection, made before the rule, is closed.
    bob.expect(|l| l.command == "QUIT" && l.nick == "mallory_m")
        .await;
    mallory.send_text(&room, "buy it now").await;
    carol.send_text(&room, "mallory is quiet").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("carol_m", "mallory is quiet"),
        "nothing of mallory's reaches IRC"
    );
    setup.app.idle().await;
    let events = carol.messages(&room).await;
    let notices = events
        .iter()
        .filter(|e| e["sender"] == BOT && e["content"]["msgtype"] == "m.notice");
    assert_eq!(notices.count(), 1, "she is told once");
    // Joining again gets her kicked, with the rule's reason.
    mallory.leave(&room).await;
    mallory.join("#irc_test_chat:localhost").await;
    let kicked = left(mallory_id);
    let kick = carol
        .wait_for_event(&room, WAIT, |e| kicked(e) && e["sender"] == BOT)
        .await;
    let reason = kick["content"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("spam"), "{kick}");
    // Nor does she get a connection of her own.
    login(
        &mallory,
        "mallory_m",
        "Not connected: banned by the policy list",
    )
    .await;
    // The rule removed, she is bridged again.
    carol
        .send_state(&bans, "m.policy.rule.user", "rule-1", json!({}))
        .await;
    carol.send_text(&room, "the rule is gone").await;
    let gone = bob.expect_privmsg("#chat").await;
    assert_eq!(gone.param(1), "the rule is gone");
    mallory.join("#irc_test_chat:localhost").await;
    wait_member(&carol, &room, mallory_id, true).await;
    mallory.send_text(&room, "sorry").await;
    let line = bob.expect_privmsg("#chat").await;
    assert_eq!(
        (line.nick.as_str(), line.param(1)),
        ("trestle", "<mallory> sorry")
    );

    // Leaving the portal takes her nick out of the channel.
    carol.leave(&room).await;
    let part = bob
        .expect(|l| l.command == "PART" && l.nick == "carol_m")
        .await;
    assert_eq!(part.param(0), "#chat");
}

/// The bot's status event about `event_id`.
async fn status_of(user: &UserClient, room: &str, event_id: &str) -> Value {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == trestle_bridge::MESSAGE_STATUS_TYPE
            && e["sender"] == BOT
            && e["content"]["m.relates_to"]["event_id"] == event_id
    })
    .await["content"]
        .clone()
}

#[tokio::test]
async fn a_message_whose_irc_connection_is_refused_is_answered_with_why() {
    let server = Ngircd::start().await;
    let gate = Gate::new(server.port).await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let settings = Settings {
        provisioning_secret: Some("s3cret".into()),
        bridge_state_debounce_ms: 200,
        ..settings(gate.port)
    };
    let router = trestle_irc::router(settings).unwrap();
    let setup = Harness::start(registration, router).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let alice = setup.synapse.register_user("alice", "password-1234").await;
    let room = alice.join("#irc_test_chat:localhost").await;

    // Relayed, and confirmed by the server: a SUCCESS status.
    let hi = alice.send_text(&room, "hi irc").await;
    assert_eq!(bob.expect_privmsg("#chat").await.param(1), "<alice> hi irc");
    assert_eq!(status_of(&alice, &room, &hi).await["status"], "SUCCESS");

    // Alice's own connection is refused by the server (the gate lets no one new in): what
    // she says is answered with a notice saying why, and a retriable failure.
    gate.set_open(false);
    login(&alice, "alice", "Logged in as alice").await;
    let refused = alice.send_text(&room, "can anyone hear me?").await;
    let notice = alice
        .wait_for_event(&room, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["msgtype"] == "m.notice"
                && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == refused
        })
        .await;
    let body = notice["content"]["body"].as_str().unwrap();
    assert!(
        body.starts_with("Not delivered to IRC: the connection to IRC is down (")
            && body.ends_with("it is sent when the connection is back"),
        "{body}"
    );
    let status = status_of(&alice, &room, &refused).await;
    assert_eq!(status["status"], "FAIL_RETRIABLE", "{status}");
    assert_eq!(status["network"], "irc");

    // The bridge state: her connection lost (for longer than the debounce), the bot's up.
    let started = std::time::Instant::now();
    loop {
        let (code, served) = provision(
            &setup,
            reqwest::Method::GET,
            "/provision/v1/bridge_state",
            Some("s3cret"),
            None,
        )
        .await;
        assert_eq!(code, 200, "{served}");
        let of = |user: &str| {
            served["logins"].as_array().and_then(|states| {
                states
                    .iter()
                    .find(|s| s["user_id"] == user && s["login_id"] == "test")
                    .map(|s| s["state_event"].clone())
            })
        };
        if of("@alice:localhost") == Some(json!("TRANSIENT_DISCONNECT"))
            && of(BOT) == Some(json!("CONNECTED"))
        {
            break;
        }
        assert!(started.elapsed() < WAIT, "{served:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
