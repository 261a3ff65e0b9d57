//! Against a real Synapse, a user with an Olm machine of her own (driven here, so the order is
//! ours):
//! - late room keys: she sends an encrypted message first and its room key only once the
//!   appservice has set the event aside and Trestle has restarted. The handler then sees the
//!   message decrypted, once.
//! - trust: a bot that accepts only cross-signed devices does not decrypt her messages while
//!   her device is not cross-signed (they reach handlers encrypted and the bot reports them),
//!   and does once she cross-signed it, with handlers seeing that trust.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use trestle::{
    Result, Router,
    encryption::SenderTrust,
    router::{Event, RawEvent, Room, State},
    ruma::{RoomId, UserId, events::room::message::RoomMessageEventContent},
};
use trestle_crypto::{Settings, cross_sign};

#[path = "support/olm_user.rs"]
mod olm_user;
#[path = "support/setup.rs"]
mod setup;

use olm_user::{OlmUser, Seen, recording_router, until};

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
    } = setup::start("late", recording_router(&seen), settings.clone()).await;
    let app = harness.app.clone();
    let bot = app.bot_user_id().clone();

    let alice = OlmUser::register(&harness.synapse, "alice").await;
    let room_id = alice.encrypted_room_with(&[&bot]).await;
    let plain = &alice.plain;

    // A room key shared with the bot's device but held back.
    let key_messages = alice.room_key_for(&room_id, &[&bot]).await;
    alice.send_encrypted(&room_id, "late-secret").await;

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
    let restarted = setup::restart(&mut harness, dir, recording_router(&seen), settings).await;
    let (app, crypto) = (restarted.app.clone(), restarted.crypto.clone());
    assert_eq!(crypto.waiting_for_keys(&app).await.unwrap(), 1);

    // The key arrives: the handler sees the message, decrypted, after what was queued.
    alice.send(&key_messages).await;
    until("the event was never handled decrypted", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() == 2 }
    })
    .await;
    app.idle().await;
    assert_eq!(*seen.lock().unwrap(), ["plain-after", "late-secret"]);
    assert_eq!(crypto.waiting_for_keys(&app).await.unwrap(), 0);
    assert_no_report(plain, &room_id, &bot).await;
    restarted.stop().await;
}

/// What the trust test's handlers saw: each decrypted message with its sender's trust, and
/// each event that stayed encrypted.
async fn record_trust(
    State(seen): State<Seen>,
    message: Event<RoomMessageEventContent>,
    trust: Option<SenderTrust>,
) -> Result<()> {
    let said = format!("{} {trust:?}", message.content.body());
    seen.lock().unwrap().push(said);
    Ok(())
}

async fn record_encrypted(State(seen): State<Seen>, _: Room, event: RawEvent) -> Result<()> {
    // Timeline events only (`Room`): to-device events are `m.room.encrypted` too.
    if event.event_type == "m.room.encrypted" {
        let id = event.deserialize::<serde_json::Value>().unwrap()["event_id"].clone();
        seen.lock()
            .unwrap()
            .push(format!("encrypted {}", id.as_str().unwrap()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_refusing_unsigned_devices_decrypts_only_once_the_sender_is_cross_signed() {
    let seen = Seen::default();
    let mut settings = Settings::default();
    settings.key_wait = Duration::from_millis(100);
    settings.accept_unsigned_devices = false;
    let router = Router::new()
        .accept_invites(true)
        .on(record_trust)
        .on(record_encrypted)
        .with_state(seen.clone());
    // The crypto directory is bound to a name: it lives until the test ends.
    let setup::Started {
        harness,
        crypto_dir: _crypto_dir,
        ..
    } = setup::start("trust", router, settings).await;
    let app = harness.app.clone();
    let bot = app.bot_user_id().clone();
    let alice = OlmUser::register(&harness.synapse, "alice").await;
    let room_id = alice.encrypted_room_with(&[&bot]).await;

    // Her device is not cross-signed: the event reaches handlers encrypted, and the bot says
    // (encrypted) that it did not decrypt it.
    let keys = alice.room_key_for(&room_id, &[&bot]).await;
    alice.send(&keys).await;
    let (unsigned, _) = alice.send_encrypted(&room_id, "unsigned-secret").await;
    let stayed_encrypted = format!("encrypted {unsigned}");
    until("the unsigned event never reached handlers", || {
        let seen = seen.clone();
        let stayed_encrypted = stayed_encrypted.clone();
        async move { seen.lock().unwrap().contains(&stayed_encrypted) }
    })
    .await;
    until("the bot never reported the unsigned event", || {
        let (plain, room_id, bot) = (&alice.plain, &room_id, &bot);
        async move {
            let said = plain.messages(room_id).await;
            said.iter()
                .any(|e| e["sender"] == bot.as_str() && e["type"] == "m.room.encrypted")
        }
    })
    .await;

    // She cross-signs her device (her first upload: no interactive auth) and sends with a new
    // session: the bot decrypts, and the handler sees her device cross-signed.
    cross_sign(&alice.client, &alice.olm).await.unwrap();
    let room = <&RoomId>::try_from(room_id.as_str()).unwrap();
    alice.olm.discard_room_key(room).await.unwrap();
    let keys = alice.room_key_for(&room_id, &[&bot]).await;
    alice.send(&keys).await;
    alice.send_encrypted(&room_id, "signed-secret").await;
    until("the cross-signed message was never handled", || {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .iter()
                .any(|s| s.starts_with("signed-secret"))
        }
    })
    .await;
    app.idle().await;
    // (The signed message may also have reached handlers encrypted first, had its room key
    // come after it: then it waited for the key, as in the test above.)
    let seen = seen.lock().unwrap();
    let decrypted: Vec<&String> = seen
        .iter()
        .filter(|s| !s.starts_with("encrypted"))
        .collect();
    assert_eq!(
        decrypted,
        [&format!(
            "signed-secret {:?}",
            Some(SenderTrust::CrossSigned)
        )]
    );
    assert!(seen.contains(&stayed_encrypted));
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
