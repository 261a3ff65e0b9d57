//! Intents against a real Synapse: every action, and the relation shapes Synapse accepts.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use ruma::{
    OwnedRoomId, events::room::message::RoomMessageEventContent,
    events::room::topic::RoomTopicEventContent,
};
use serde_json::json;
use trestle::{Registration, Router};
use trestle_tests::appservice::{Harness, WAIT};

fn registration() -> Registration {
    Registration::generate("intents", None, "intentbot", "int_", "localhost")
}

#[tokio::test]
async fn relations_have_the_spec_shapes() {
    let harness = Harness::start(registration(), Router::new()).await;
    let (user, room) = harness.user_in_room_with_bot("carol").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let bot = harness.app.bot();
    let original = user.send_text(&room, "original").await;
    let original_id = <&ruma::EventId>::try_from(original.as_str()).unwrap();
    let sender = <&ruma::UserId>::try_from(user.user_id.as_str()).unwrap();

    let reply = bot
        .reply_text(&room_id, original_id, sender, "a reply")
        .await
        .unwrap();
    let reply = user.event(&room, reply.as_str()).await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        original.as_str()
    );

    let sent = bot.send_text(&room_id, "tpyo").await.unwrap();
    let edit = bot
        .edit(&room_id, &sent, RoomMessageEventContent::text_plain("typo"))
        .await
        .unwrap();
    let edit = user.event(&room, edit.as_str()).await;
    assert_eq!(edit["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], sent.as_str());
    assert_eq!(edit["content"]["m.new_content"]["body"], "typo");
    assert_eq!(edit["content"]["body"], "* typo");

    let reaction = bot.react(&room_id, original_id, "👍").await.unwrap();
    let reaction = user.event(&room, reaction.as_str()).await;
    assert_eq!(reaction["type"], "m.reaction");
    assert_eq!(
        reaction["content"]["m.relates_to"],
        json!({"rel_type": "m.annotation", "event_id": original, "key": "👍"})
    );

    let in_thread = bot
        .send_in_thread(
            &room_id,
            original_id,
            original_id,
            sender,
            RoomMessageEventContent::text_plain("threaded"),
        )
        .await
        .unwrap();
    let in_thread = user.event(&room, in_thread.as_str()).await;
    assert_eq!(in_thread["content"]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(
        in_thread["content"]["m.relates_to"]["event_id"],
        original.as_str()
    );
    assert_eq!(
        in_thread["content"]["m.relates_to"]["is_falling_back"],
        true
    );

    let redaction = bot.redact(&room_id, &sent, Some("test")).await.unwrap();
    assert!(redaction.as_str().starts_with('$'));
    let redacted = user.event(&room, sent.as_str()).await;
    assert_eq!(
        redacted["content"],
        json!({}),
        "the message was redacted: {redacted}"
    );
}

#[tokio::test]
async fn membership_state_profile_and_timestamps() {
    let harness = Harness::start(registration(), Router::new()).await;
    let (user, room) = harness.user_in_room_with_bot("dave").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    // Let the bot moderate. (In room version 12 the creator's power is implicit and must not
    // be listed.)
    user.send_state(
        &room,
        "m.room.power_levels",
        "",
        json!({"users": {"@intentbot:localhost": 100}}),
    )
    .await;
    let bot = harness.app.bot();

    // State, with a massaged timestamp.
    let topic = bot
        .send_state(
            &room_id,
            "",
            &RoomTopicEventContent::new("bridged topic".into()),
        )
        .await
        .unwrap();
    assert_eq!(
        user.event(&room, topic.as_str()).await["content"]["topic"],
        "bridged topic"
    );
    let old = ruma::MilliSecondsSinceUnixEpoch(1_600_000_000_000u64.try_into().unwrap());
    let options = trestle::intent::SendOptions::default().ts(old);
    let past = bot
        .send_json(
            &room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "from the past"}),
            options,
        )
        .await
        .unwrap();
    assert_eq!(
        user.event(&room, past.as_str()).await["origin_server_ts"],
        1_600_000_000_000u64
    );

    // A ghost: registered lazily, profile set once, joins, leaves, gets kicked and banned.
    let ghost = harness.app.ghost("int_erin").unwrap();
    ghost.set_display_name("Erin").await.unwrap();
    ghost.set_display_name("Erin").await.unwrap();
    assert_eq!(
        user.get_displayname("@int_erin:localhost").await.as_deref(),
        Some("Erin")
    );
    ghost.ensure_joined(&room_id).await.unwrap();
    assert!(
        user.joined_members(&room)
            .await
            .contains(&"@int_erin:localhost".to_owned())
    );
    ghost.leave(&room_id).await.unwrap();
    assert!(
        !user
            .joined_members(&room)
            .await
            .contains(&"@int_erin:localhost".to_owned())
    );
    ghost.ensure_joined(&room_id).await.unwrap();
    let erin = <&ruma::UserId>::try_from("@int_erin:localhost").unwrap();
    bot.kick(&room_id, erin, Some("test kick")).await.unwrap();
    bot.ban(&room_id, erin, Some("test ban")).await.unwrap();
    let ban = user
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@int_erin:localhost"
                && e["content"]["membership"] == "ban"
        })
        .await;
    assert_eq!(ban["content"]["reason"], "test ban");

    // Invite by the bot, as a plugin would for a real user.
    let frank = harness
        .synapse
        .register_user("frank", "password-1234")
        .await;
    bot.invite(
        &room_id,
        <&ruma::UserId>::try_from(frank.user_id.as_str()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(frank.join(&room).await, room);

    // Outside the namespace the homeserver refuses, and the error says so.
    let outsider = harness.app.ghost("not_ours").unwrap();
    let error = outsider.send_text(&room_id, "hi").await.unwrap_err();
    assert!(error.to_string().contains("M_EXCLUSIVE"), "{error}");
}
