//! What the bridge keeps across a restart of Trestle, end to end (a real Synapse, a real
//! Prosody, an XMPP client written in the test): the room's ids of messages sent from Matrix
//! and who reacted with what, so that a reply, a reaction or a redaction naming an older
//! message still works after it.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::{
    client::{body, reactions, replies_to, retracts, stanza_id},
    room::{InRoom, bob_joins_alices_room, message_from, settings},
};
use tokio_xmpp::{
    Stanza,
    parsers::{message::Message, message::MessageType, presence::Type},
};
use trestle_tests::appservice::WAIT;

#[tokio::test]
async fn replies_reactions_and_redactions_of_older_messages_work_after_a_restart() {
    let InRoom {
        _server: server,
        room,
        mut alice,
        mut setup,
        bob,
        portal,
        bob_occupant,
    } = bob_joins_alices_room().await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    let from_bob =
        |m: &Message| m.from.as_ref().map(|f| f.to_string()) == Some(bob_occupant.clone());

    // bob says something from Matrix; alice reacts to it by the room's id.
    let news = bob.send_text(&portal, "old news").await;
    let heard = alice
        .expect_message("bob's message", |m| body(m) == Some("old news"))
        .await;
    let news_id = stanza_id(&heard).expect("the room's id");
    alice
        .react(MessageType::Groupchat, &room, "r1", &news_id, &["👍"])
        .await;
    let thumb = bob
        .wait_for_event(&portal, WAIT, |e| {
            e["type"] == "m.reaction" && e["sender"] == alice_ghost
        })
        .await;
    assert_eq!(thumb["content"]["m.relates_to"]["event_id"], news.as_str());

    // alice says something; bob reacts to it from Matrix.
    alice
        .say(MessageType::Groupchat, &room, "s1", "alice's old")
        .await;
    let said = alice
        .expect_message("alice's message", |m| body(m) == Some("alice's old"))
        .await;
    let said_id = stanza_id(&said).expect("the room's id");
    let olds = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "alice's old"))
        .await;
    bob.send_event(
        &portal,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": olds["event_id"], "key": "🎉"}}),
    )
    .await;
    let heard = alice
        .expect_message("bob's reaction", |m| reactions(m).is_some() && from_bob(m))
        .await;
    assert_eq!(
        reactions(&heard),
        Some((said_id.clone(), vec!["🎉".to_owned()]))
    );

    // Trestle stops and starts again.
    setup
        .restart(trestle_xmpp::router(settings(&server)).unwrap())
        .await;
    // The bridge's occupant (which hears the room) and bob's are back, in either order.
    let bot = format!("{room}/Matrix");
    let mut back = BTreeSet::new();
    alice
        .expect("the bridge and bob back in the room", |stanza| {
            if let Stanza::Presence(p) = stanza
                && p.type_ == Type::None
                && let Some(from) = p.from.map(|f| f.to_string())
                && (from == bot || from == bob_occupant)
            {
                back.insert(from);
            }
            (back.len() == 2).then_some(())
        })
        .await;

    // alice replies to bob's older message by the room's id: a Matrix reply to it.
    alice
        .reply(MessageType::Groupchat, &room, "q1", &news_id, "about that")
        .await;
    let reply = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "about that"))
        .await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        news.as_str(),
        "{reply}"
    );

    // alice takes her reaction back (her whole set, now empty): its Matrix reaction goes.
    alice
        .react(MessageType::Groupchat, &room, "r2", &news_id, &[])
        .await;
    bob.wait_for_event(&portal, WAIT, |e| {
        e["type"] == "m.room.redaction" && e["redacts"] == thumb["event_id"]
    })
    .await;

    // bob adds a reaction to alice's older message: XMPP gets his whole set, the old one too.
    bob.send_event(
        &portal,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": olds["event_id"], "key": "❤️"}}),
    )
    .await;
    let heard = alice
        .expect_message("bob's second reaction", |m| {
            reactions(m).is_some() && from_bob(m)
        })
        .await;
    let (target, mut emojis) = reactions(&heard).unwrap();
    emojis.sort();
    let mut expected = vec!["🎉".to_owned(), "❤️".to_owned()];
    expected.sort();
    assert_eq!((target, emojis), (said_id, expected));

    // bob replies to his older message and then redacts it: both name the room's id of it.
    bob.send_event(
        &portal,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "still true",
            "m.relates_to": {"m.in_reply_to": {"event_id": news}},
        }),
    )
    .await;
    let heard = alice
        .expect_message("bob's reply", |m| body(m) == Some("still true"))
        .await;
    assert_eq!(replies_to(&heard).as_deref(), Some(news_id.as_str()));
    bob.call_ok(
        reqwest::Method::PUT,
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/kept-1",
            trestle_tests::synapse::encode(&portal),
            trestle_tests::synapse::encode(&news)
        ),
        Some(&json!({})),
    )
    .await;
    let retraction = alice
        .expect_message("bob's retraction", |m| retracts(m).is_some())
        .await;
    assert_eq!(retracts(&retraction).as_deref(), Some(news_id.as_str()));
}
