//! Key backup against a real Synapse: the bot backs up the room key of a message it decrypted,
//! and its own; its crypto directory is then lost and Trestle restarts on an empty one (a new
//! device) with the same recovery key; the message, fetched from the homeserver, still decrypts.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use trestle::{
    Appservice,
    ruma::{
        RoomId,
        api::{AppserviceUserIdentity, client::backup::get_latest_backup_info},
        events::room::message::RoomMessageEventContent,
    },
};
use trestle_crypto::{Crypto, RecoveryKey, Settings};

#[path = "support/olm_user.rs"]
mod olm_user;
#[path = "support/setup.rs"]
mod setup;

use olm_user::{OlmUser, Seen, recording_router, saw, until};

/// The bot's current backup version and how many keys it holds.
async fn latest_backup(app: &Appservice) -> Option<(String, u64)> {
    let request = get_latest_backup_info::v3::Request::new();
    let bot = AppserviceUserIdentity::new(app.bot_user_id());
    let response = app.client().send(request, bot).await.ok()?;
    Some((response.version, response.count.into()))
}

/// Waits until the backup holds `keys` room keys.
async fn until_backed_up(app: &Appservice, keys: u64, what: &str) {
    until(what, || async move {
        latest_backup(app)
            .await
            .is_some_and(|(_, count)| count >= keys)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_on_an_empty_crypto_store_decrypts_history_from_its_key_backup() {
    let seen = Seen::default();
    let recovery_key = RecoveryKey::generate();
    let settings = Settings::default();
    let crypto_dir = tempfile::tempdir().unwrap();
    let crypto = Crypto::with_backup(crypto_dir.path(), settings.clone(), recovery_key.clone());
    let setup::Started {
        mut harness,
        crypto,
        crypto_dir,
    } = setup::start_with("backup", recording_router(&seen), crypto, crypto_dir).await;
    let app = harness.app.clone();
    let bot = app.bot_user_id().clone();
    let first_device = crypto.device_id().unwrap();
    let (version, _) = latest_backup(&app)
        .await
        .expect("no backup version at start");

    // Alice sends an encrypted message; the bot decrypts it and backs up its room key.
    let alice = OlmUser::register(&harness.synapse, "alice").await;
    let room_id = alice.encrypted_room_with(&[&bot]).await;
    let key = alice.room_key_for(&room_id, &[&bot]).await;
    alice.send(&key).await;
    let (event_id, _) = alice.send_encrypted(&room_id, "before-the-loss").await;
    until("the bot never decrypted the message", || {
        let seen = seen.clone();
        async move { saw(&seen, "before-the-loss") }
    })
    .await;
    until_backed_up(&app, 1, "the room key was never backed up").await;
    // The bot's own room key, made when it first sends into the room, is backed up too.
    let room = <&RoomId>::try_from(room_id.as_str()).unwrap();
    let text = RoomMessageEventContent::notice_plain("the bot's own");
    app.bot().send(room, &text).await.unwrap();
    until_backed_up(&app, 2, "the bot's own room key was never backed up").await;

    // The crypto directory is lost. Trestle restarts on an empty one, with the recovery key
    // read again from its text form.
    std::fs::remove_dir_all(crypto_dir.path()).unwrap();
    let recovery_key = RecoveryKey::parse(&recovery_key.to_base58()).unwrap();
    let crypto = Crypto::with_backup(crypto_dir.path(), settings, recovery_key);
    let restarted = setup::restart_with(&mut harness, recording_router(&seen), crypto).await;
    let (app, crypto) = (restarted.app.clone(), restarted.crypto.clone());
    assert_ne!(
        crypto.device_id().unwrap(),
        first_device,
        "not a new device"
    );
    let (again, _) = latest_backup(&app).await.unwrap();
    assert_eq!(again, version, "the backup matching the key was not reused");

    // The message from before the loss, fetched from the homeserver, decrypts.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}");
    let fetched = alice.plain.call_ok(reqwest::Method::GET, &path, None).await;
    assert_eq!(fetched["type"], "m.room.encrypted");
    let fetched = serde_json::value::to_raw_value(&fetched).unwrap();
    let decrypted = crypto.decrypt_event(&app, &fetched).await.unwrap();
    let decrypted: Value =
        serde_json::from_str(decrypted.expect("no room key").json.get()).unwrap();
    assert_eq!(decrypted["content"]["body"], "before-the-loss");
    restarted.stop().await;
}
