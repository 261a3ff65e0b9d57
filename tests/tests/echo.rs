//! The echo bot against a real Synapse: commands, replies, ghosts, and transaction handling.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::UserClient,
};

type Setup = Harness;

async fn setup() -> Setup {
    let registration = trestle_echo::PLUGIN.generate_registration(None, "localhost");
    Harness::start(registration, trestle_echo::router()).await
}

/// A user in a fresh room with the echo bot, which has joined by itself on invite.
async fn room_with_bot(setup: &Setup, localpart: &str) -> (UserClient, String) {
    let user = setup
        .synapse
        .register_user(localpart, "password-1234")
        .await;
    let room = user
        .create_room(json!({"name": "echo test", "preset": "private_chat"}))
        .await;
    user.invite(&room, "@echo:localhost").await;
    user.wait_for_event(&room, WAIT, |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == "@echo:localhost"
            && e["content"]["membership"] == "join"
    })
    .await;
    (user, room)
}

fn from_with_body<'a>(sender: &'a str, body: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["type"] == "m.room.message" && e["sender"] == sender && e["content"]["body"] == body
}

#[tokio::test]
async fn echo_replies_and_echo_as_speaks_through_a_ghost() {
    let setup = setup().await;
    let (user, room) = room_with_bot(&setup, "alice").await;

    let command = user.send_text(&room, "!echo hi").await;
    let reply = user
        .wait_for_event(&room, WAIT, from_with_body("@echo:localhost", "hi"))
        .await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        command.as_str(),
        "the echo is a reply to the command: {reply}"
    );
    assert_eq!(reply["content"]["msgtype"], "m.text");
    assert_eq!(
        reply["content"]["m.mentions"]["user_ids"],
        json!([user.user_id]),
        "the reply mentions the sender"
    );

    user.send_text(&room, "!echo-as Alice hi").await;
    let ghost = "@echo_alice:localhost";
    let said = user
        .wait_for_event(&room, WAIT, from_with_body(ghost, "hi"))
        .await;
    assert_eq!(said["sender"], ghost);
    assert_eq!(user.get_displayname(ghost).await.as_deref(), Some("Alice"));
    let membership = user
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == ghost
                && e["content"]["membership"] == "join"
        })
        .await;
    assert_eq!(membership["content"]["displayname"], "Alice");

    // A second line as the same ghost reuses it: no second registration, no profile change.
    user.send_text(&room, "!echo-as Alice again").await;
    user.wait_for_event(&room, WAIT, from_with_body(ghost, "again"))
        .await;
    let joins = user
        .messages(&room)
        .await
        .into_iter()
        .filter(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == ghost
                && e["content"]["membership"] == "join"
        })
        .count();
    // A profile change would show as a second join event.
    assert_eq!(
        joins, 1,
        "the ghost joined once and its profile was set once"
    );

    // The bot does not answer its own or its ghosts' messages: nothing more arrives.
    setup.app.idle().await;
    let bot_messages = user
        .messages(&room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == "@echo:localhost")
        .count();
    assert_eq!(bot_messages, 1);
}

/// Sends a transaction to the appservice exactly as Synapse would.
async fn push_transaction(setup: &Setup, txn_id: &str, events: Vec<Value>) -> (u16, Value) {
    let token = &setup.app.registration().hs_token;
    let response = reqwest::Client::new()
        .put(format!(
            "{}/_matrix/app/v1/transactions/{txn_id}",
            setup.url
        ))
        .bearer_auth(token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn command_event(room: &str, sender: &str, event_id: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "room_id": room, "sender": sender, "event_id": event_id,
        "origin_server_ts": 1_700_000_000_000u64,
        "content": {"msgtype": "m.text", "body": body},
    })
}

#[tokio::test]
async fn a_resent_transaction_is_handled_once_and_a_bad_event_spoils_nothing() {
    let setup = setup().await;
    let (user, room) = room_with_bot(&setup, "bob").await;

    // The same transaction twice, as Synapse resends after a timeout: one echo.
    let txn = vec![command_event(
        &room,
        &user.user_id,
        "$resent-1",
        "!echo once",
    )];
    assert_eq!(
        push_transaction(&setup, "trestle-test-1", txn.clone())
            .await
            .0,
        200
    );
    assert_eq!(push_transaction(&setup, "trestle-test-1", txn).await.0, 200);
    setup.app.idle().await;
    user.wait_for_event(&room, WAIT, from_with_body("@echo:localhost", "once"))
        .await;

    // A transaction with events that do not parse: the good one is still handled.
    let events = vec![
        json!({"type": "m.room.message", "content": {"body": "no room, no sender"}}),
        json!("not even an object"),
        json!({"type": "m.room.message", "room_id": "not a room id", "sender": "@x:y",
               "event_id": "$bad", "content": {}}),
        command_event(&room, &user.user_id, "$good-1", "!echo survivor"),
    ];
    let (status, body) = push_transaction(&setup, "trestle-test-2", events).await;
    assert_eq!((status, body), (200, json!({})));
    user.wait_for_event(&room, WAIT, from_with_body("@echo:localhost", "survivor"))
        .await;

    // A real message after all that still works, and "once" was echoed exactly once.
    user.send_text(&room, "!echo after").await;
    user.wait_for_event(&room, WAIT, from_with_body("@echo:localhost", "after"))
        .await;
    let onces = user
        .messages(&room)
        .await
        .into_iter()
        .filter(from_with_body("@echo:localhost", "once"))
        .count();
    assert_eq!(onces, 1);
}
