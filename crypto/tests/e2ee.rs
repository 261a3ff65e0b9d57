//! End to end against a real Synapse, with matrix-sdk as the E2EE client: the client creates an
//! encrypted room, invites the echo bot, sends `!echo secret-1`, and decrypts the bot's
//! encrypted reply, and a ghost's (sent with its own device) too; then again after Trestle
//! restarted, and after it lost its crypto directory (a new, cross-signed identity). Synapse's
//! database holds no plaintext.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use matrix_sdk::{Room, ruma::OwnedUserId};
use matrix_sdk_crypto::vodozemac::{
    Curve25519PublicKey,
    megolm::{GroupSession, SessionConfig},
};
use trestle_crypto::{Delivery, Settings};
use trestle_tests::appservice::Harness;

#[path = "support/client.rs"]
mod client;
#[path = "support/setup.rs"]
mod setup;

use client::User;
use setup::Started;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_answers_in_an_encrypted_room_across_a_restart() {
    // The bot's device and keys are set up when the appservice starts. One ghost's machine
    // open at a time: a second ghost closes the first, which is opened again to send.
    let mut settings = Settings::default();
    settings.key_wait = Duration::from_millis(100);
    settings.key_timeout = Duration::from_secs(1);
    settings.open_ghosts = 1;
    let router = trestle_echo::router();
    let Started {
        mut harness,
        crypto,
        crypto_dir,
    } = setup::start("echo", router, settings).await;
    // Synapse pushes to-device events and device lists here (the harness turns its
    // experimental features on): the bot finds that out and needs no `/sync`.
    assert_eq!(setup::wait_for_delivery(&crypto).await, Delivery::Push);
    let bot = harness.app.bot_user_id().clone();

    let mut alice = User::register(&harness.synapse, "alice").await;
    let room = alice.encrypted_room_with(&bot).await;
    let room_id = room.room_id().to_owned();

    let first_device = crypto.device_id().unwrap();
    rounds(&mut alice, &room, &bot, 1).await;
    let other = OwnedUserId::try_from("@echo_other:localhost").unwrap();
    alice
        .echo_round(&room, &other, "!echo-as Other other-secret", "other-secret")
        .await;
    // A machine in use when another opens (by a device-list update, say) closes on a later use
    // of the ghosts' machines, once idle.
    harness.app.idle().await;
    crypto.ghost_device(&harness.app, &other).await.unwrap();
    assert_eq!(crypto.open_ghosts().await, 1);
    let ghosty = OwnedUserId::try_from("@echo_ghosty:localhost").unwrap();
    let command = "!echo-as Ghosty reopened-secret";
    alice
        .echo_round(&room, &ghosty, command, "reopened-secret")
        .await;

    // An event whose room key never comes is reported in the room (encrypted, like the rest).
    let mut unshared = GroupSession::new(SessionConfig::version_1());
    let bogus = serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": unshared.encrypt("never readable").to_base64(),
        "sender_key": Curve25519PublicKey::from_bytes([7; 32]).to_base64(),
        "device_id": "ELSEWHERE", "session_id": unshared.session_id()});
    let event_id = alice
        .plain
        .send_event(room_id.as_str(), "m.room.encrypted", bogus)
        .await;
    let report = format!("Could not decrypt the message {event_id}");
    alice.wait_for(&bot, &report).await;

    // Trestle restarted: a new appservice on the same store and crypto directory decrypts with
    // the room key it stored, and encrypts again.
    let router = trestle_echo::router();
    let restarted =
        setup::restart(&mut harness, crypto_dir.path(), router, Settings::default()).await;
    let crypto = &restarted.crypto;
    assert_eq!(
        crypto.device_id().unwrap(),
        first_device,
        "a new device after restart"
    );
    rounds(&mut alice, &room, &bot, 2).await;
    restarted.stop().await;

    // The crypto directory is lost: the bot gets a new device and, with no private keys, a new
    // cross-signing identity, which Synapse lets the appservice put in place of the old one
    // without interactive auth. The strict client talks to it as before.
    let master_before = master_key(&alice, &bot).await;
    let lost = tempfile::tempdir().unwrap();
    let router = trestle_echo::router();
    let restarted = setup::restart(&mut harness, lost.path(), router, Settings::default()).await;
    let new_device = restarted.crypto.device_id().unwrap();
    assert_ne!(new_device, first_device);
    assert_ne!(master_key(&alice, &bot).await, master_before);
    alice.wait_for_device(&bot, &new_device).await;
    rounds(&mut alice, &room, &bot, 3).await;
    restarted.stop().await;

    assert_no_plaintext(
        &harness,
        room_id.as_str(),
        &[
            "secret-1",
            "secret-2",
            "ghost-secret-1",
            "ghost-secret-2",
            "secret-3",
            "ghost-secret-3",
            "other-secret",
            "reopened-secret",
        ],
    );
}

/// The bot echoes `secret-<n>`, and a ghost, which sends with a device of its own, says
/// `ghost-secret-<n>`.
async fn rounds(alice: &mut User, room: &Room, bot: &OwnedUserId, n: u32) {
    let secret = format!("secret-{n}");
    alice
        .echo_round(room, bot, &format!("!echo {secret}"), &secret)
        .await;
    let ghost = OwnedUserId::try_from("@echo_ghosty:localhost").unwrap();
    let secret = format!("ghost-secret-{n}");
    let command = format!("!echo-as Ghosty {secret}");
    alice.echo_round(room, &ghost, &command, &secret).await;
}

/// `user`'s cross-signing master key as the homeserver gives it to others.
async fn master_key(alice: &User, user: &OwnedUserId) -> serde_json::Value {
    let query = serde_json::json!({"device_keys": {user.as_str(): []}});
    let keys = alice
        .plain
        .call_ok(
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/query",
            Some(&query),
        )
        .await;
    let master = keys["master_keys"][user.as_str()]["keys"].clone();
    assert!(master.is_object(), "{user} has no master key: {keys}");
    master
}

/// Scans Synapse's SQLite files for the secrets. The room id is there, which shows the scan
/// reads the right, written-out files.
fn assert_no_plaintext(harness: &Harness, room_id: &str, secrets: &[&str]) {
    let mut scanned = Vec::new();
    for entry in std::fs::read_dir(harness.synapse.dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("homeserver.db") {
            scanned.extend(std::fs::read(&path).unwrap());
        }
    }
    let contains = |needle: &str| {
        scanned
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    assert!(contains(room_id), "Synapse's database was not found");
    for secret in secrets {
        assert!(!contains(secret), "Synapse's database holds {secret}");
    }
}
