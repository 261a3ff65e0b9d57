//! The XMPP bridge end to end: a real Synapse, a real Prosody, and an XMPP client written in
//! the test (on the xmpp-rs crates, not the bridge's code) on the other side.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use reqwest::Method;
use serde_json::json;
use support::{
    client::{XmppClient, body, reactions, replaces, replies_to, retracts, stanza_id},
    prosody::{COMPONENT, MUC, Prosody},
    room::{InRoom, bob_joins_alices_room, message_from, settings, start},
};
use tokio_xmpp::parsers::{message::MessageType, presence::Type as PresenceType};
use trestle_tests::{
    appservice::WAIT,
    bridge_checks::{set_power_level, wait_for_invite},
    synapse::{UserClient, encode},
};

#[tokio::test]
async fn a_matrix_user_joins_a_room_and_the_conversation_flows_both_ways() {
    // A Matrix user joins the room's alias: the portal is made, the bridge's occupant and the
    // user's own (named after their display name) join the room, and alice's ghost the portal.
    let InRoom {
        _server,
        room,
        mut alice,
        setup,
        bob,
        portal,
        bob_occupant,
    } = bob_joins_alices_room().await;
    // The room is semi-anonymous: alice is known by her occupant JID.
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    bob.wait_for_event(&portal, WAIT, |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == alice_ghost
            && e["content"]["membership"] == "join"
    })
    .await;
    assert_eq!(
        bob.get_displayname(alice_ghost).await.as_deref(),
        Some("alice")
    );

    // XMPP → Matrix, as alice's ghost; a correction is an edit.
    alice
        .say(MessageType::Groupchat, &room, "m1", "hello matrix")
        .await;
    let said = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "hello matrix"))
        .await;
    alice
        .correct(MessageType::Groupchat, &room, "m2", "m1", "hello, matrix")
        .await;
    let edit = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "* hello, matrix"))
        .await;
    assert_eq!(edit["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        said["event_id"]
    );

    // Matrix → XMPP, as bob's occupant (his own JID on the component), once.
    let sent = bob.send_text(&portal, "hi xmpp").await;
    let heard = alice
        .expect_message("bob's message", |m| body(m) == Some("hi xmpp"))
        .await;
    assert_eq!(heard.from.unwrap().to_string(), bob_occupant);
    assert_eq!(heard.type_, MessageType::Groupchat);
    // An edit is a correction of the message it edits.
    bob.send_event(
        &portal,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "* hi, xmpp",
            "m.new_content": {"msgtype": "m.text", "body": "hi, xmpp"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": sent},
        }),
    )
    .await;
    let corrected = alice
        .expect_message("bob's correction", |m| body(m) == Some("hi, xmpp"))
        .await;
    assert_eq!(replaces(&corrected).as_deref(), Some(sent.as_str()));

    // The subject is the topic, both ways.
    alice.set_subject(&room, "talk about bridges").await;
    bob.wait_for_event(&portal, WAIT, |e| {
        e["type"] == "m.room.topic" && e["content"]["topic"] == "talk about bridges"
    })
    .await;
    // Portals give Matrix users no power by default: the bot makes bob a moderator.
    set_power_level(&setup.app, &bob, &portal, &bob.user_id, 50).await;
    bob.send_state(
        &portal,
        "m.room.topic",
        "",
        json!({"topic": "talk about rooms"}),
    )
    .await;
    alice
        .expect_message("the new subject", |m| {
            m.subjects.values().any(|s| s == "talk about rooms")
        })
        .await;

    // Nothing bob said came back to Matrix as a ghost's message.
    let events = bob.messages(&portal).await;
    let echoes = events
        .iter()
        .filter(|e| e["content"]["body"] == "hi xmpp")
        .count();
    assert_eq!(echoes, 1, "{events:#?}");
}

#[tokio::test]
async fn a_direct_message_becomes_a_direct_chat_and_replies_cross_back() {
    let server = Prosody::start(&["alice"]).await;
    let mut alice = XmppClient::connect(&server, "alice").await;
    let setup = start(&server).await;
    let bob = setup.synapse.register_user("bob", "password-1234").await;

    // alice writes to bob's JID on the component: bob is invited to a direct chat with her
    // ghost, where her message is.
    alice
        .say(
            MessageType::Chat,
            &format!("bob@{COMPONENT}"),
            "d1",
            "psst, bob",
        )
        .await;
    let room = wait_for_invite(&bob, None).await;
    bob.join(&room).await;
    let alice_ghost = "@xmpp_alice=40localhost:localhost";
    bob.wait_for_event(&room, WAIT, message_from(alice_ghost, "psst, bob"))
        .await;
    let invite = bob
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()
        })
        .await;
    assert_eq!(invite["sender"], alice_ghost);

    // bob's answer reaches alice from his JID.
    let hello = bob.send_text(&room, "hello alice").await;
    let answer = alice
        .expect_message("bob's answer", |m| body(m) == Some("hello alice"))
        .await;
    assert_eq!(answer.type_, MessageType::Chat);
    assert_eq!(
        answer.from.unwrap().to_bare().to_string(),
        format!("bob@{COMPONENT}")
    );

    // The next message goes to the same room.
    alice
        .say(
            MessageType::Chat,
            &format!("bob@{COMPONENT}"),
            "d2",
            "again",
        )
        .await;
    let again = bob
        .wait_for_event(&room, WAIT, message_from(alice_ghost, "again"))
        .await;

    // Redactions are retractions (XEP-0424), both ways.
    redact(&bob, &room, &hello, "redact-1").await;
    let retraction = alice
        .expect_message("bob's retraction", |m| retracts(m).is_some())
        .await;
    assert_eq!(retracts(&retraction).as_deref(), Some(hello.as_str()));
    alice
        .retract(MessageType::Chat, &format!("bob@{COMPONENT}"), "d3", "d2")
        .await;
    bob.wait_for_event(&room, WAIT, |e| {
        e["type"] == "m.room.redaction" && e["redacts"] == again["event_id"]
    })
    .await;
}

/// `user` redacts `event` in `room` (`txn`: the request's transaction id).
async fn redact(user: &UserClient, room: &str, event: &str, txn: &str) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/{txn}",
        encode(room),
        encode(event)
    );
    user.call_ok(Method::PUT, &path, Some(&json!({}))).await;
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(now.unwrap().as_millis()).unwrap()
}

/// The bodies, senders and timestamps of the messages the room's ghosts posted, in order.
async fn ghost_messages(user: &UserClient, room: &str) -> Vec<(String, String, i64)> {
    let events = user.messages(room).await;
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter(|e| e["sender"].as_str().unwrap().starts_with("@xmpp_chat"))
        .map(|e| {
            let body = e["content"]["body"].as_str().unwrap().to_owned();
            let sender = e["sender"].as_str().unwrap().to_owned();
            (body, sender, e["origin_server_ts"].as_i64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_new_portal_shows_the_rooms_archive_and_a_restart_catches_up() {
    let server = Prosody::start(&["alice", "carol"]).await;
    let room = format!("chat@{MUC}");
    let mut alice = XmppClient::connect(&server, "alice").await;
    let mut carol = XmppClient::connect(&server, "carol").await;
    alice.join(&room, "alice").await;
    carol.join(&room, "carol").await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    let carol_ghost = "@xmpp_chat=40conference.localhost=2fcarol:localhost";

    // 30 messages in the room's archive before there is a bridge, from two people.
    let started = now_ms();
    for i in 1..=30 {
        let speaker = if i % 2 == 1 { &mut alice } else { &mut carol };
        let text = format!("archived {i}");
        speaker
            .say(MessageType::Groupchat, &room, &format!("a{i}"), &text)
            .await;
        // Two streams: each message is in the room before the next is sent, for the order.
        alice
            .expect_message("the message in the room", |m| body(m) == Some(&text))
            .await;
    }
    let before_portal = now_ms();

    // The portal is made: it shows them, in order, by their senders' ghosts, at the times
    // they were sent (the archive keeps seconds).
    let mut setup = start(&server).await;
    let bob = setup.synapse.register_user("bob", "password-1234").await;
    let portal = bob.join(&format!("#xmpp_chat_{MUC}:localhost")).await;
    bob.wait_for_event(&portal, WAIT, |e| e["content"]["body"] == "archived 30")
        .await;
    let shown = ghost_messages(&bob, &portal).await;
    let bodies: Vec<&str> = shown.iter().map(|(b, _, _)| b.as_str()).collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("archived {i}")).collect();
    assert_eq!(bodies, expected, "{shown:#?}");
    for (i, (_, sender, ts)) in shown.iter().enumerate() {
        let expected = if i % 2 == 0 { alice_ghost } else { carol_ghost };
        assert_eq!(sender, expected);
        assert!(
            (started - 1000..=before_portal).contains(ts),
            "{ts} not in {started}..{before_portal}"
        );
    }
    assert!(shown.windows(2).all(|w| w[0].2 <= w[1].2), "{shown:#?}");

    // Trestle stops; the room goes on.
    setup.stop().await;
    for i in 1..=10 {
        let body = format!("missed {i}");
        alice
            .say(MessageType::Groupchat, &room, &format!("m{i}"), &body)
            .await;
    }
    alice
        .expect_message("the last missed message", |m| body(m) == Some("missed 10"))
        .await;

    // Started again: what was missed arrives, once and in order, before what comes next.
    setup
        .restart(trestle_xmpp::router(settings(&server)).unwrap())
        .await;
    let bot = format!("{room}/Matrix");
    alice
        .expect_presence("the bridge back in the room", |p| {
            p.from.as_ref().is_some_and(|f| f.to_string() == bot) && p.type_ == PresenceType::None
        })
        .await;
    alice
        .say(MessageType::Groupchat, &room, "n1", "after the restart")
        .await;
    bob.wait_for_event(
        &portal,
        WAIT,
        message_from(alice_ghost, "after the restart"),
    )
    .await;
    let shown = ghost_messages(&bob, &portal).await;
    let bodies: Vec<&str> = shown.iter().map(|(b, _, _)| b.as_str()).collect();
    let mut expected = expected;
    expected.extend((1..=10).map(|i| format!("missed {i}")));
    expected.push("after the restart".to_owned());
    assert_eq!(bodies, expected, "{shown:#?}");
}

#[tokio::test]
async fn retractions_replies_and_reactions_cross_in_rooms() {
    let InRoom {
        _server,
        room,
        mut alice,
        setup: _setup,
        bob,
        portal,
        bob_occupant,
    } = bob_joins_alices_room().await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";

    // alice retracts her message by the room's id of it: it is redacted.
    alice
        .say(MessageType::Groupchat, &room, "x1", "a slip")
        .await;
    let slip = alice
        .expect_message("the slip in the room", |m| body(m) == Some("a slip"))
        .await;
    let slip_id = stanza_id(&slip).expect("the room's id");
    let slipped = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "a slip"))
        .await;
    alice
        .retract(MessageType::Groupchat, &room, "x2", &slip_id)
        .await;
    bob.wait_for_event(&portal, WAIT, |e| {
        e["type"] == "m.room.redaction" && e["redacts"] == slipped["event_id"]
    })
    .await;

    // bob redacts his message: a retraction from his occupant, by the room's id of it.
    let oops = bob.send_text(&portal, "oops").await;
    let heard = alice
        .expect_message("bob's message", |m| body(m) == Some("oops"))
        .await;
    let oops_id = stanza_id(&heard).expect("the room's id");
    redact(&bob, &portal, &oops, "redact-1").await;
    let retraction = alice
        .expect_message("bob's retraction", |m| retracts(m).is_some())
        .await;
    assert_eq!(retracts(&retraction).as_deref(), Some(oops_id.as_str()));
    assert_eq!(retraction.from.unwrap().to_string(), bob_occupant);

    // Replies (XEP-0461), both ways, by the room's ids.
    alice
        .say(MessageType::Groupchat, &room, "q1", "a question?")
        .await;
    let question = alice
        .expect_message("the question in the room", |m| {
            body(m) == Some("a question?")
        })
        .await;
    let question_id = stanza_id(&question).expect("the room's id");
    let asked = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "a question?"))
        .await;
    let answer = bob
        .send_event(
            &portal,
            "m.room.message",
            json!({
                "msgtype": "m.text",
                "body": "an answer",
                "m.relates_to": {"m.in_reply_to": {"event_id": asked["event_id"]}},
            }),
        )
        .await;
    let heard = alice
        .expect_message("bob's answer", |m| body(m) == Some("an answer"))
        .await;
    assert_eq!(replies_to(&heard).as_deref(), Some(question_id.as_str()));
    let answer_id = stanza_id(&heard).expect("the room's id");
    alice
        .reply(MessageType::Groupchat, &room, "q2", &answer_id, "thanks")
        .await;
    let thanks = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "thanks"))
        .await;
    assert_eq!(
        thanks["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        answer.as_str()
    );

    // Reactions (XEP-0444), both ways: XMPP sends a sender's whole set each time.
    alice
        .react(MessageType::Groupchat, &room, "r1", &answer_id, &["👍"])
        .await;
    let thumb = bob
        .wait_for_event(&portal, WAIT, |e| {
            e["type"] == "m.reaction" && e["sender"] == alice_ghost
        })
        .await;
    assert_eq!(
        thumb["content"]["m.relates_to"]["event_id"],
        answer.as_str()
    );
    assert_eq!(thumb["content"]["m.relates_to"]["key"], "👍");
    alice
        .react(MessageType::Groupchat, &room, "r2", &answer_id, &[])
        .await;
    bob.wait_for_event(&portal, WAIT, |e| {
        e["type"] == "m.room.redaction" && e["redacts"] == thumb["event_id"]
    })
    .await;
    let party = bob
        .send_event(
            &portal,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": asked["event_id"], "key": "🎉"}}),
        )
        .await;
    // alice's own reactions come back to her too.
    let bobs_reactions = |m: &tokio_xmpp::parsers::message::Message| {
        let from = m.from.as_ref().map(|f| f.to_string());
        reactions(m).is_some() && from.as_deref() == Some(bob_occupant.as_str())
    };
    let heard = alice.expect_message("bob's reaction", bobs_reactions).await;
    assert_eq!(
        reactions(&heard),
        Some((question_id.clone(), vec!["🎉".to_owned()]))
    );
    redact(&bob, &portal, &party, "redact-2").await;
    let heard = alice
        .expect_message("bob's reaction taken back", bobs_reactions)
        .await;
    assert_eq!(reactions(&heard), Some((question_id, vec![])));
}
