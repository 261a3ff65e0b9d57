//! Late room keys against a real Synapse: a user with an Olm machine of her own (driven here,
//! so the order is ours) sends an encrypted message first and its room key only once the
//! appservice has set the event aside and Trestle has restarted. The handler then sees the
//! message decrypted, once.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use matrix_sdk_crypto::{EncryptionSettings, OlmMachine};
use serde_json::json;
use trestle::{
    Result, Router,
    client::HomeserverClient,
    router::{Event, State},
    ruma::{
        OwnedDeviceId, OwnedUserId, RoomId, UserId, events::room::message::RoomMessageEventContent,
        serde::Raw,
    },
};
use trestle_crypto::{Settings, send_outgoing, send_to_device};
use trestle_tests::appservice::WAIT;

#[path = "support/setup.rs"]
mod setup;

/// Waits until `done` holds, failing with `what` after [`WAIT`].
async fn until<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bodies of the messages the handler saw.
type Seen = Arc<Mutex<Vec<String>>>;

async fn record(State(seen): State<Seen>, message: Event<RoomMessageEventContent>) -> Result<()> {
    seen.lock().unwrap().push(message.content.body().to_owned());
    Ok(())
}

fn router(seen: &Seen) -> Router {
    Router::new()
        .accept_invites(true)
        .on(record)
        .with_state(seen.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_key_comes_later_is_handled_decrypted_once_even_across_a_restart() {
    let seen = Seen::default();
    // The timeout is far off: this test must see the key win, never the report.
    let mut settings = Settings::default();
    settings.key_wait = Duration::from_millis(100);
    settings.key_timeout = Duration::from_secs(600);
    let setup::Started {
        mut harness,
        crypto,
        crypto_dir,
    } = setup::start("late", router(&seen), settings.clone()).await;
    let app = harness.app.clone();
    let bot = app.bot_user_id().clone();

    // Alice, with her own Olm machine talking to Synapse with her own token.
    let plain = harness
        .synapse
        .register_user("alice", "password-1234")
        .await;
    let whoami = plain
        .call_ok(
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
        )
        .await;
    let alice = OwnedUserId::try_from(plain.user_id.as_str()).unwrap();
    let device = OwnedDeviceId::from(whoami["device_id"].as_str().unwrap());
    let client = HomeserverClient::new(harness.synapse.base_url(), &plain.access_token).unwrap();
    let olm = OlmMachine::new(&alice, &device).await;
    send_outgoing(&client, &olm).await.unwrap();

    let room_id = plain
        .create_room(json!({
            "invite": [bot],
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        }))
        .await;
    until("the bot never joined", || {
        let plain = &plain;
        let (room_id, bot) = (&room_id, bot.to_string());
        async move { plain.joined_members(room_id).await.contains(&bot) }
    })
    .await;

    // An Olm session with the bot's device, and a room key shared with it but held back.
    let room = <&RoomId>::try_from(room_id.as_str()).unwrap();
    let users: [&UserId; 1] = [&bot];
    olm.update_tracked_users(users.into_iter()).await.unwrap();
    send_outgoing(&client, &olm).await.unwrap();
    if let Some((id, claim)) = olm.get_missing_sessions(users.into_iter()).await.unwrap() {
        let response = client
            .send(
                claim,
                trestle::ruma::api::AppserviceUserIdentity::new(&alice),
            )
            .await
            .unwrap();
        olm.mark_request_as_sent(&id, &response).await.unwrap();
    }
    let key_messages = olm
        .share_room_key(room, users.into_iter(), EncryptionSettings::default())
        .await
        .unwrap();
    assert!(!key_messages.is_empty(), "no room key for the bot's device");
    let content = Raw::new(&json!({"msgtype": "m.text", "body": "late-secret"}))
        .unwrap()
        .cast_unchecked();
    let encrypted = olm
        .encrypt_room_event_raw(room, "m.room.message", &content)
        .await
        .unwrap();
    let encrypted: serde_json::Value = encrypted.content.deserialize_as_unchecked().unwrap();
    plain
        .send_event(&room_id, "m.room.encrypted", encrypted)
        .await;

    // The event is set aside, not handled, and its room's queue moves on.
    until("the event was never set aside", || {
        let (crypto, app) = (&crypto, &app);
        async move { crypto.waiting_for_keys(app).await.unwrap() == 1 }
    })
    .await;
    plain.send_text(&room_id, "plain-after").await;
    until("a later plaintext message was held up", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().contains(&"plain-after".to_owned()) }
    })
    .await;

    // Trestle restarts: the event still waits, in the store.
    let dir = crypto_dir.path();
    let restarted = setup::restart(&mut harness, dir, router(&seen), settings).await;
    let (app, crypto) = (restarted.app.clone(), restarted.crypto.clone());
    assert_eq!(crypto.waiting_for_keys(&app).await.unwrap(), 1);

    // The key arrives: the handler sees the message, decrypted, after what was queued.
    for message in &key_messages {
        send_to_device(&client, &olm, message).await.unwrap();
    }
    until("the event was never handled decrypted", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() == 2 }
    })
    .await;
    app.idle().await;
    assert_eq!(*seen.lock().unwrap(), ["plain-after", "late-secret"]);
    assert_eq!(crypto.waiting_for_keys(&app).await.unwrap(), 0);
    assert_no_report(&plain, &room_id, &bot).await;
    restarted.stop().await;
}

/// The bot said nothing in the room (a report would be an event of its, encrypted or not).
async fn assert_no_report(plain: &trestle_tests::synapse::UserClient, room_id: &str, bot: &UserId) {
    let said: Vec<_> = plain
        .messages(room_id)
        .await
        .into_iter()
        .filter(|e| e["sender"] == bot.as_str() && e["type"] != "m.room.member")
        .collect();
    assert!(said.is_empty(), "the bot said {said:?}");
}
