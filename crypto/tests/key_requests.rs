//! Room key requests against a real Synapse, with a user whose Olm machine the test drives:
//! - a room key that never reaches the bot makes the bot ask for it: the sender's device
//!   receives an `m.room_key_request` for that session from the bot's device;
//! - a ghost answers a member's request for a key it sent: the member's device receives the
//!   key forwarded (`m.forwarded_room_key`) by the ghost's device, once her device is
//!   cross-signed; a member whose device is not cross-signed asks first and gets nothing.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use matrix_sdk_common::deserialized_responses::ProcessedToDeviceEvent;
use serde_json::{Value, json};
use trestle::ruma::{
    OwnedUserId, RoomId, api::client::to_device::send_event_to_device,
    events::room::message::RoomMessageEventContent,
};
use trestle_crypto::Settings;

#[path = "support/olm_user.rs"]
mod olm_user;
#[path = "support/setup.rs"]
mod setup;

use olm_user::{OlmUser, Seen, recording_router, until};

/// Settings under which a missing key is asked for at once and never reported during a test.
fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.key_wait = Duration::from_millis(100);
    settings.key_timeout = Duration::from_secs(600);
    settings
}

/// Syncs `user` until a to-device event matching `wanted` comes; returns it and everything
/// that came with it.
async fn wait_to_device(
    user: &mut OlmUser,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let deadline = std::time::Instant::now() + trestle_tests::appservice::WAIT;
    let mut all = Vec::new();
    loop {
        all.extend(user.sync_to_device().await);
        if let Some(found) = all.iter().find(|e| wanted(e)) {
            return (found.clone(), all);
        }
        assert!(std::time::Instant::now() < deadline, "{what}: got {all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_asks_the_sender_for_a_missing_room_key() {
    let seen = Seen::default();
    let setup::Started {
        harness,
        crypto,
        crypto_dir: _crypto_dir,
    } = setup::start("askkey", recording_router(&seen), settings()).await;
    let bot = harness.app.bot_user_id().clone();
    let bot_device = crypto.device_id().unwrap();

    // Alice's room key for the bot's device is lost on the way: her machine records it as
    // shared, the bot never gets it.
    let mut alice = OlmUser::register(&harness.synapse, "alice").await;
    let room_id = alice.encrypted_room_with(&[&bot]).await;
    let lost = alice.room_key_for(&room_id, &[&bot]).await;
    let nothing = send_event_to_device::v3::Response::new();
    for message in &lost {
        alice
            .olm
            .mark_request_as_sent(&message.txn_id, &nothing)
            .await
            .unwrap();
    }
    let (_, session_id) = alice.send_encrypted(&room_id, "asked-for").await;

    // The bot asks her device for the key of that session.
    let (request, _) = wait_to_device(&mut alice, "the bot never asked for the key", |e| {
        e["type"] == "m.room_key_request" && e["content"]["body"]["session_id"] == *session_id
    })
    .await;
    assert_eq!(request["sender"], bot.as_str());
    assert_eq!(request["content"]["action"], "request");
    assert_eq!(request["content"]["requesting_device_id"], bot_device);
    assert_eq!(request["content"]["body"]["room_id"], room_id);
    // Asked before the event was set aside to wait, not instead.
    until("the event never waited for its key", || {
        let (crypto, app) = (&crypto, &harness.app);
        async move { crypto.waiting_for_keys(app).await.unwrap() == 1 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_forwards_the_room_key_it_sent_to_a_member_who_asks() {
    let seen = Seen::default();
    let setup::Started {
        harness,
        crypto,
        crypto_dir: _crypto_dir,
    } = setup::start("fwdkey", recording_router(&seen), settings()).await;
    let app = harness.app.clone();
    let bot = app.bot_user_id().clone();
    let ghost = OwnedUserId::try_from("@fwdkey_ghost:localhost").unwrap();

    let mut alice = OlmUser::register(&harness.synapse, "alice").await;
    let mut bob = OlmUser::register(&harness.synapse, "bob").await;
    let room_id = alice.encrypted_room_with(&[&bot]).await;
    alice.plain.invite(&room_id, bob.user_id.as_str()).await;
    bob.plain.join(&room_id).await;
    alice.plain.invite(&room_id, ghost.as_str()).await;

    // The ghost sends an encrypted message; the room key it sends Alice's device is lost.
    let room = <&RoomId>::try_from(room_id.as_str()).unwrap();
    let text = RoomMessageEventContent::text_plain("ghostly");
    app.ghost("fwdkey_ghost")
        .unwrap()
        .send(room, &text)
        .await
        .unwrap();
    let (_, _) = wait_to_device(&mut alice, "the ghost never sent a room key", |e| {
        e["type"] == "m.room.encrypted" && e["sender"] == ghost.as_str()
    })
    .await;
    let messages = alice.plain.messages(&room_id).await;
    let sent = messages
        .iter()
        .find(|e| e["sender"] == ghost.as_str() && e["type"] == "m.room.encrypted")
        .expect("the ghost's message is not in the room");
    let session_id = sent["content"]["session_id"].as_str().unwrap().to_owned();
    let ghost_device = crypto.ghost_device(&app, &ghost).await.unwrap();
    alice.olm_sessions_with(&[&ghost]).await;
    bob.olm_sessions_with(&[&ghost]).await;
    let ask = async |who: &OlmUser, request_id: &str| {
        let request = json!({
            "action": "request",
            "requesting_device_id": who.device_id,
            "request_id": request_id,
            "body": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "room_id": room_id,
                "session_id": session_id,
                "sender_key": sent["content"]["sender_key"],
            },
        });
        let body = json!({"messages": {ghost.as_str(): {ghost_device.as_str(): request}}});
        let path = format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{request_id}");
        who.plain
            .call_ok(reqwest::Method::PUT, &path, Some(&body))
            .await;
    };

    // Bob's device, which the session was shared with but which he never cross-signed, asks
    // first; then Alice's, once she has cross-signed it.
    ask(&bob, "ask-bob").await;
    alice.cross_sign().await;
    ask(&alice, "ask-alice").await;

    // The ghost's device forwards the key, Olm-encrypted, to her device.
    let forwarded = forwarded_key(&mut alice, &session_id)
        .await
        .expect("the ghost never forwarded the room key");
    assert_eq!(forwarded["sender"], ghost.as_str());
    assert_eq!(forwarded["content"]["room_id"], room_id);
    // Bob's request came before hers, to the same device, and was not answered: whatever the
    // ghost sent him is in his to-device inbox by now.
    let events = bob.sync_to_device().await;
    assert_eq!(forwarded_in(bob.receive(&events).await, &session_id), None);
}

/// The `m.forwarded_room_key` for `session_id` that reaches `user`, syncing until it comes.
async fn forwarded_key(user: &mut OlmUser, session_id: &str) -> Option<Value> {
    let deadline = std::time::Instant::now() + trestle_tests::appservice::WAIT;
    loop {
        let events = user.sync_to_device().await;
        let found = forwarded_in(user.receive(&events).await, session_id);
        if found.is_some() || std::time::Instant::now() >= deadline {
            return found;
        }
    }
}

/// The `m.forwarded_room_key` for `session_id` among `processed`.
fn forwarded_in(processed: Vec<ProcessedToDeviceEvent>, session_id: &str) -> Option<Value> {
    processed.into_iter().find_map(|event| match event {
        ProcessedToDeviceEvent::Decrypted { raw, .. } => {
            let event: Value = raw.deserialize_as_unchecked().unwrap();
            let wanted = event["type"] == "m.forwarded_room_key"
                && event["content"]["session_id"] == session_id;
            wanted.then_some(event)
        }
        _ => None,
    })
}
