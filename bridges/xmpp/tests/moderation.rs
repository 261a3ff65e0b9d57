//! Moderation in rooms (XEP-0425) ↔ redactions, end to end: a real Synapse, a real Prosody
//! whose rooms moderate (`mod_muc_moderation`), and an XMPP client written in the test. The
//! room's owner takes back a Matrix user's message and the bot redacts it in the portal with
//! who and why; a Matrix moderator's redaction of an XMPP user's message is asked of the room,
//! which takes it back for everyone.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    client::{body, stanza_id},
    room::{InRoom, bob_joins_alices_room, bot_sets_level, message_from},
};
use tokio_xmpp::{minidom::Element, parsers::message::MessageType};
use trestle_tests::{appservice::WAIT, synapse::encode};

/// Whether `event` redacts `target` (the field moved into the content in room version 11).
fn redacts(event: &Value, target: &str) -> bool {
    event["type"] == "m.room.redaction"
        && (event["content"]["redacts"] == target || event["redacts"] == target)
}

#[tokio::test]
async fn moderators_take_messages_back_both_ways() {
    let mut in_room: InRoom = bob_joins_alices_room().await;
    let (room, portal) = (in_room.room.clone(), in_room.portal.clone());
    let (setup, bob, alice) = (&in_room.setup, &in_room.bob, &mut in_room.alice);
    let bot = setup.app.bot_user_id().to_string();

    // XMPP → Matrix: alice, the room's owner, takes back what bob said for spam; the bot
    // redacts it in the portal, saying who and why.
    let spam = bob.send_text(&portal, "cheap watches").await;
    let heard = alice
        .expect_message("bob's message", |m| body(m) == Some("cheap watches"))
        .await;
    let spam_id = stanza_id(&heard).unwrap();
    let moderate = format!(
        "<apply-to xmlns='urn:xmpp:fasten:0' id='{spam_id}'>\
         <moderate xmlns='urn:xmpp:message-moderate:0'>\
         <retract xmlns='urn:xmpp:message-retract:0'/><reason>spam</reason>\
         </moderate></apply-to>"
    );
    alice.set(&room, "moderate-1", &moderate).await;
    let redaction = bob
        .wait_for_event(&portal, WAIT, |e| redacts(e, &spam))
        .await;
    assert_eq!(redaction["sender"], bot.as_str(), "{redaction}");
    assert_eq!(redaction["content"]["reason"], "alice: spam", "{redaction}");

    // Matrix → XMPP: alice says something rude; bob, a moderator on both sides (alice makes
    // his JID an admin of the room, the portal gives him level 50), redacts it, and the room
    // takes it back for everyone, as bob's occupant, with his reason.
    alice
        .say(MessageType::Groupchat, &room, "rude-1", "rude words")
        .await;
    let echo = alice
        .expect_message("the room's copy", |m| body(m) == Some("rude words"))
        .await;
    let rude_id = stanza_id(&echo).unwrap();
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    let rude = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "rude words"))
        .await;
    let admin = "<query xmlns='http://jabber.org/protocol/muc#admin'>\
                 <item jid='bob@matrix.localhost' affiliation='admin'/></query>";
    alice.set(&room, "admin-1", admin).await;
    bot_sets_level(setup, bob, &portal, "@bob:localhost", 50).await;
    let redact_path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/moderation-1",
        encode(&portal),
        encode(rude["event_id"].as_str().unwrap())
    );
    let body_json = json!({"reason": "rude"});
    bob.call_ok(Method::PUT, &redact_path, Some(&body_json))
        .await;
    let announced = alice
        .expect_message("the room's moderation", |m| {
            m.from.as_ref().is_some_and(|f| f.to_string() == room)
                && m.payloads
                    .iter()
                    .any(|p| p.is("apply-to", "urn:xmpp:fasten:0"))
        })
        .await;
    let apply_to: &Element = announced
        .payloads
        .iter()
        .find(|p| p.is("apply-to", "urn:xmpp:fasten:0"))
        .unwrap();
    assert_eq!(apply_to.attr("id"), Some(rude_id.as_str()));
    let moderated = apply_to
        .get_child("moderated", "urn:xmpp:message-moderate:0")
        .unwrap();
    assert_eq!(moderated.attr("by"), Some(in_room.bob_occupant.as_str()));
    assert!(
        moderated
            .get_child("retract", "urn:xmpp:message-retract:0")
            .is_some()
    );
    let reason = moderated.children().find(|c| c.name() == "reason");
    assert_eq!(reason.map(Element::text).as_deref(), Some("rude"));
}
