//! The moderation bot's management room may be encrypted: against a real Synapse, a strict
//! matrix-sdk client (cross-signed, sharing room keys with cross-signed devices only, as
//! Element does under MSC4153) makes an encrypted room the bot's management room; the bot
//! decrypts its commands there, acts on them in a plain protected room, and its answers and
//! reports come back encrypted; a command from a device of the admin's that is not
//! cross-signed is refused. Synapse holds no plaintext of the management room.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use matrix_sdk::{
    Client, config::SyncSettings, ruma::events::room::message::RoomMessageEventContent,
};
use serde_json::json;
use trestle_crypto::{Delivery, Settings};
use trestle_tests::appservice::WAIT;

#[path = "support/client.rs"]
mod client;
#[path = "support/setup.rs"]
mod setup;

use client::User;
use setup::Started;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderation_bot_takes_commands_in_an_encrypted_management_room() {
    let moderation = trestle_moderation::Settings {
        admins: vec!["@admin:localhost".into()],
        ..trestle_moderation::Settings::default()
    };
    let Started {
        harness,
        crypto,
        crypto_dir,
    } = setup::start(
        "moderation",
        trestle_moderation::router(moderation),
        Settings::default(),
    )
    .await;
    assert_eq!(setup::wait_for_delivery(&crypto).await, Delivery::Push);
    let bot = harness.app.bot_user_id().clone();
    let bot_device = crypto.device_id().unwrap();

    // The admin's encrypted room, invited to, becomes the management room; the bot says so
    // encrypted.
    let mut admin = User::register(&harness.synapse, "admin").await;
    let management = admin.encrypted_room_with(&bot).await;
    admin.wait_for(&bot, "now my management room").await;
    admin.wait_for_device(&bot, bot_device.as_str()).await;

    // A plain public room to protect, and a spammer in it.
    let square = admin
        .plain
        .create_room(json!({
            "name": "public square",
            "preset": "public_chat",
            "power_level_content_override": {"users": {bot.as_str(): 100}},
        }))
        .await;
    admin.plain.invite(&square, bot.as_str()).await;
    let spammer = harness
        .synapse
        .register_user("spammer", "password-1234")
        .await;
    spammer.join(&square).await;

    // Commands sent encrypted are read and answered, encrypted.
    let add = format!("!rooms add {square}");
    admin
        .echo_round(&management, &bot, &add, &format!("Protecting {square}"))
        .await;
    management
        .send(RoomMessageEventContent::text_plain(
            "!ban @spammer:localhost encrypted command",
        ))
        .await
        .unwrap();
    admin
        .plain
        .wait_for_event(&square, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["sender"] == bot.as_str()
                && e["state_key"] == "@spammer:localhost"
                && e["content"]["membership"] == "ban"
                && e["content"]["reason"] == "encrypted command"
        })
        .await;
    admin
        .wait_for(&bot, "Added a user ban rule for @spammer:localhost")
        .await;
    admin
        .echo_round(&management, &bot, "!status", "Protected rooms (1)")
        .await;

    // The same account on a new device it did not cross-sign: its command is decrypted but
    // refused, and changes nothing.
    let unsigned = Client::builder()
        .homeserver_url(harness.synapse.base_url())
        .build()
        .await
        .unwrap();
    unsigned
        .matrix_auth()
        .login_username("admin", "password-1234")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let room = loop {
        unsigned
            .sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
            .await
            .unwrap();
        if let Some(room) = unsigned.get_room(management.room_id()) {
            break room;
        }
        assert!(
            Instant::now() < deadline,
            "the new device never saw the room"
        );
    };
    room.send(RoomMessageEventContent::text_plain(
        "!unban @spammer:localhost",
    ))
    .await
    .unwrap();
    admin
        .wait_for(&bot, "unban refused: @admin:localhost sent it from a device that its owner did not cross-sign")
        .await;
    admin
        .echo_round(&management, &bot, "!lists list", "1 rules")
        .await;

    // Everything in the management room went through Synapse encrypted, both ways.
    let events = admin.plain.messages(management.room_id().as_str()).await;
    let messages: Vec<_> = events
        .iter()
        .filter(|e| e["state_key"].is_null() && e["type"] != "m.room.redaction")
        .collect();
    assert!(messages.len() >= 6, "{events:#?}");
    for event in &messages {
        assert_eq!(event["type"], "m.room.encrypted", "{event}");
    }
    assert!(messages.iter().any(|e| e["sender"] == bot.as_str()));
    harness.app.idle().await;
    drop(crypto_dir);
}
