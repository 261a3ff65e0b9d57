//! End to end against a Synapse without the experimental features that push to-device events
//! and device lists to appservices (`msc2409_to_device_messages_enabled`,
//! `msc3202_transaction_extensions`): the bot finds out at start and each open ghost device
//! fetches its own with `/sync`. A to-device event sent to a ghost's device is fetched (Synapse
//! then empties its inbox), one sent while the ghost's machine is closed waits and is fetched
//! when it opens again, also after Trestle restarts (from the saved `next_batch`). Synapse
//! refuses `/sync` to the bot where it is the appservice's own user (`sender_localpart`): that
//! is recorded for `trestle check`, and the bot, which then hears of no device change, still
//! encrypts what it sends for a device its member added since its last message. A bot that is
//! a user of the namespace apart from a hidden sender (what Trestle generates now) syncs like a
//! ghost: the strict client's `!echo` is decrypted by it and its answer by the client, also
//! after a restart.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{EventId, OwnedUserId, RoomId, events::room::message::RoomMessageEventContent},
};
use reqwest::Method;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
use trestle_crypto::{Delivery, Settings, recorded_delivery};
use trestle_tests::{
    appservice::WAIT,
    synapse::{Synapse, UserClient, encode},
};

#[path = "support/client.rs"]
mod client;
#[path = "support/setup.rs"]
mod setup;

use client::User;
use setup::Started;

fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.probe_wait = Duration::from_secs(2);
    // One ghost's machine open at a time: opening a second closes the first, and its `/sync`.
    settings.open_ghosts = 1;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_experimental_features_open_ghost_devices_sync() {
    let Started {
        mut harness,
        crypto,
        crypto_dir,
    } = setup::start_on(
        "echo",
        trestle_echo::router(),
        settings(),
        setup::SYNAPSE_STOCK,
    )
    .await;
    assert_eq!(setup::wait_for_delivery(&crypto).await, Delivery::Sync);
    // Synapse refuses `/sync` to the appservice's own user: recorded for `trestle check`.
    let deadline = Instant::now() + WAIT;
    loop {
        let found = recorded_delivery(crypto_dir.path()).unwrap();
        assert_eq!(found.delivery, Delivery::Sync);
        if found.bot_syncs.is_some() {
            assert_eq!(found.bot_syncs, Some(false));
            break;
        }
        assert!(Instant::now() < deadline, "the bot's /sync never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The bot cannot decrypt, but what it sends is encrypted for every device of the room's
    // members, also one added after its last message (it asks for their devices again).
    let bot = harness.app.bot_user_id().clone();
    let carol = User::register(&harness.synapse, "carol").await;
    let room = carol.encrypted_room_with(&bot).await;
    let room_id = RoomId::parse(room.room_id().as_str()).unwrap();
    let notice = RoomMessageEventContent::notice_plain("bot-secret-1");
    let first = harness.app.bot().send(&room_id, &notice).await.unwrap();
    decrypted(&carol.client, &room_id, &first, "bot-secret-1").await;
    let second_device = log_in(&harness.synapse, "carol").await;
    let notice = RoomMessageEventContent::notice_plain("bot-secret-2");
    let second = harness.app.bot().send(&room_id, &notice).await.unwrap();
    decrypted(&second_device, &room_id, &second, "bot-secret-2").await;

    let synapse = &harness.synapse;
    let alice = synapse.register_user("alice", "password-1234").await;
    let ghosty = OwnedUserId::try_from("@echo_ghosty:localhost").unwrap();
    let other = OwnedUserId::try_from("@echo_other:localhost").unwrap();
    for ghost in [&ghosty, &other] {
        harness.app.intent(ghost).ensure_registered().await.unwrap();
    }
    let ghosty_device = crypto.ghost_device(&harness.app, &ghosty).await.unwrap();
    send_to_device(&alice, &ghosty, &ghosty_device, "1").await;
    inbox_emptied(synapse, &ghosty).await;

    // Ghosty's machine closes for Other's: what comes for it waits on Synapse meanwhile...
    let other_device = crypto.ghost_device(&harness.app, &other).await.unwrap();
    assert_eq!(crypto.open_ghosts().await, 1);
    send_to_device(&alice, &ghosty, &ghosty_device, "2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(waiting(synapse, &ghosty).await, 1);
    // ... and is fetched when it opens again (which closes Other's).
    crypto.ghost_device(&harness.app, &ghosty).await.unwrap();
    inbox_emptied(synapse, &ghosty).await;

    // Trestle restarts; sent before Other's machine is open again, fetched when it opens, from
    // the `next_batch` saved before the restart.
    let restarted = setup::restart(
        &mut harness,
        crypto_dir.path(),
        trestle_echo::router(),
        settings(),
    )
    .await;
    send_to_device(&alice, &other, &other_device, "3").await;
    assert_eq!(
        setup::wait_for_delivery(&restarted.crypto).await,
        Delivery::Sync
    );
    let reopened = restarted.crypto.ghost_device(&restarted.app, &other);
    assert_eq!(reopened.await.unwrap(), other_device);
    inbox_emptied(&harness.synapse, &other).await;
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_experimental_features_a_bot_apart_from_the_sender_decrypts() {
    let Started {
        mut harness,
        crypto,
        crypto_dir,
    } = setup::start_bot_apart_on(
        "echo",
        trestle_echo::router(),
        settings(),
        setup::SYNAPSE_STOCK,
    )
    .await;
    assert_eq!(setup::wait_for_delivery(&crypto).await, Delivery::Sync);
    let bot = harness.app.bot_user_id().clone();
    assert_eq!(bot.as_str(), "@echo:localhost");
    assert_ne!(harness.app.sender_user_id(), &bot);

    // The strict client (cross-signed devices only, both ways) and the bot, each decrypting
    // the other; a ghost answers too.
    let mut alice = User::register(&harness.synapse, "alice").await;
    let room = alice.encrypted_room_with(&bot).await;
    alice
        .echo_round(&room, &bot, "!echo apart-secret-1", "apart-secret-1")
        .await;
    let ghost = OwnedUserId::try_from("@echo_ghosty:localhost").unwrap();
    let command = "!echo-as Ghosty apart-ghost-secret";
    alice
        .echo_round(&room, &ghost, command, "apart-ghost-secret")
        .await;
    // The bot's `/sync` answered: `trestle check` says so.
    assert_eq!(
        recorded_delivery(crypto_dir.path()).unwrap().bot_syncs,
        Some(true)
    );
    // The bot acted as itself (joined, sent), never as the hidden sender.
    let sender = harness.app.sender_user_id().as_str();
    let events = alice.plain.messages(room.room_id().as_str()).await;
    assert!(events.iter().all(|e| e["sender"] != sender), "{events:?}");
    assert!(events.iter().any(|e| e["sender"] == bot.as_str()));

    // Trestle restarted: the bot's device syncs on from its saved `next_batch`.
    let restarted = setup::restart(
        &mut harness,
        crypto_dir.path(),
        trestle_echo::router(),
        settings(),
    )
    .await;
    assert_eq!(
        setup::wait_for_delivery(&restarted.crypto).await,
        Delivery::Sync
    );
    alice
        .echo_round(&room, &bot, "!echo apart-secret-2", "apart-secret-2")
        .await;
    restarted.stop().await;
}

/// Logs `localpart` in with a new matrix-sdk device (the password of `client::User`).
async fn log_in(synapse: &Synapse, localpart: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(synapse.base_url())
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username(localpart, "password-1234")
        .send()
        .await
        .unwrap();
    client.sync_once(SyncSettings::default()).await.unwrap();
    client
}

/// Waits until `client` decrypts `event_id` in `room_id` and its body says `secret`.
async fn decrypted(client: &Client, room_id: &RoomId, event_id: &EventId, secret: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "{event_id} was never decrypted");
        let short = SyncSettings::default().timeout(Duration::from_millis(500));
        client.sync_once(short).await.unwrap();
        let Some(room) = client.get_room(room_id) else {
            continue;
        };
        let event = room.event(event_id, None).await.unwrap();
        if event.kind.is_utd() {
            continue;
        }
        let json = event.raw().json().get().to_owned();
        assert!(json.contains(secret), "{json}");
        assert!(
            event.encryption_info().is_some(),
            "{event_id} was not encrypted"
        );
        return;
    }
}

/// Sends an `m.dummy` to-device event from `from` to `user`'s `device`.
async fn send_to_device(from: &UserClient, user: &OwnedUserId, device: &str, txn: &str) {
    let body = json!({"messages": {user.as_str(): {device: {"n": txn}}}});
    let path = format!("/_matrix/client/v3/sendToDevice/m.dummy/{}", encode(txn));
    from.call_ok(Method::PUT, &path, Some(&body)).await;
}

/// How many to-device events wait for `user` in Synapse's `device_inbox`.
async fn waiting(synapse: &Synapse, user: &OwnedUserId) -> i64 {
    let mut db = SqliteConnectOptions::new()
        .filename(synapse.dir().join("homeserver.db"))
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM device_inbox WHERE user_id = ?")
        .bind(user.as_str())
        .fetch_one(&mut db)
        .await
        .unwrap();
    let _ = db.close().await;
    count
}

/// Waits until no to-device event waits for `user`: Synapse deletes them once the device's
/// next `/sync` shows it has them.
async fn inbox_emptied(synapse: &Synapse, user: &OwnedUserId) {
    let deadline = Instant::now() + WAIT;
    loop {
        let count = waiting(synapse, user).await;
        if count == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} to-device events still wait for {user}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
