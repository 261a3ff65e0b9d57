//! End to end against a real Synapse, with matrix-sdk as the E2EE client: the client creates an
//! encrypted room, invites the echo bot, sends `!echo secret-1`, and decrypts the bot's
//! encrypted reply, and a ghost's (sent with its own device) too; then again after Trestle
//! restarted. Synapse's database holds no plaintext.

use std::time::{Duration, Instant};

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::EncryptionInfo,
    ruma::{
        OwnedUserId,
        api::client::room::create_room,
        events::{
            InitialStateEvent,
            room::{
                encryption::RoomEncryptionEventContent,
                member::MembershipState,
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            },
        },
    },
};
use matrix_sdk_crypto::vodozemac::{
    Curve25519PublicKey,
    megolm::{GroupSession, SessionConfig},
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use trestle::{Appservice, Store};
use trestle_crypto::Crypto;
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::UserClient,
};

#[path = "support/setup.rs"]
mod setup;

use setup::{Started, wait_for_device};

/// A message seen by the client: sender, body, and whether it arrived encrypted.
type Seen = (OwnedUserId, String, bool);

/// The user logged in twice: with matrix-sdk, and as a plain HTTP client.
async fn login(harness: &Harness, localpart: &str) -> (Client, UserClient) {
    let password = "password-1234";
    let plain = harness.synapse.register_user(localpart, password).await;
    let client = Client::builder()
        .homeserver_url(harness.synapse.base_url())
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username(localpart, password)
        .initial_device_display_name("matrix-sdk test client")
        .send()
        .await
        .unwrap();
    (client, plain)
}

fn short_sync() -> SyncSettings {
    SyncSettings::default().timeout(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_answers_in_an_encrypted_room_across_a_restart() {
    // The bot's device and keys are set up when the appservice starts.
    let wait = Duration::from_millis(100);
    let router = trestle_echo::router();
    let Started {
        mut harness,
        crypto,
        crypto_dir,
    } = setup::start("echo", router, wait, Duration::from_secs(1)).await;
    let bot = harness.app.bot_user_id().clone();

    let (client, plain) = login(&harness, "alice").await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    client.add_event_handler(
        move |event: OriginalSyncRoomMessageEvent, info: Option<EncryptionInfo>| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send((
                    event.sender,
                    event.content.body().to_owned(),
                    info.is_some(),
                ));
            }
        },
    );
    client.sync_once(SyncSettings::default()).await.unwrap();

    let mut request = create_room::v3::Request::new();
    request.invite = vec![bot.clone()];
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room: Room = client.create_room(request).await.unwrap();
    let room_id = room.room_id().to_owned();

    // The echo bot accepts invites.
    let deadline = Instant::now() + WAIT;
    loop {
        let member = room.get_member_no_sync(&bot).await.unwrap();
        if member.is_some_and(|m| *m.membership() == MembershipState::Join) {
            break;
        }
        assert!(Instant::now() < deadline, "the bot never joined");
        client.sync_once(short_sync()).await.unwrap();
    }

    let first_device = crypto.device_id().unwrap();
    rounds(&client, &room, &mut seen_rx, &bot, 1).await;

    // An event whose room key never comes is reported in the room (encrypted, like the rest).
    let mut unshared = GroupSession::new(SessionConfig::version_1());
    let bogus = serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": unshared.encrypt("never readable").to_base64(),
        "sender_key": Curve25519PublicKey::from_bytes([7; 32]).to_base64(),
        "device_id": "ELSEWHERE", "session_id": unshared.session_id()});
    let event_id = plain
        .send_event(room_id.as_str(), "m.room.encrypted", bogus)
        .await;
    let report = format!("Could not decrypt the message {event_id}");
    wait_for(&client, &mut seen_rx, &bot, &report).await;

    // Trestle restarted: a new appservice on the same store and crypto directory decrypts with
    // the room key it stored, and encrypts again.
    harness.app.idle().await;
    harness.stop().await;
    let crypto = Crypto::new(crypto_dir.path());
    let app = Appservice::builder(
        harness.registration.clone(),
        harness.synapse.base_url(),
        "localhost",
    )
    .router(crypto.clone().install(trestle_echo::router()))
    .store(
        Store::connect(&format!(
            "sqlite://{}",
            harness.dir.path().join("store.db").display()
        ))
        .await
        .unwrap(),
    )
    .build()
    .await
    .unwrap();
    let port: u16 = harness.url.rsplit(':').next().unwrap().parse().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(app.clone().run(listener, async {
        let _ = stopped.await;
    }));
    wait_for_device(&crypto).await;
    assert_eq!(
        crypto.device_id().unwrap(),
        first_device,
        "a new device after restart"
    );
    rounds(&client, &room, &mut seen_rx, &bot, 2).await;

    app.idle().await;
    let _ = stop.send(());
    runner.await.unwrap().unwrap();
    assert_no_plaintext(
        &harness,
        room_id.as_str(),
        &["secret-1", "secret-2", "ghost-secret-1", "ghost-secret-2"],
    );
}

/// The bot echoes `secret-<n>`, and a ghost, which sends with a device of its own, says
/// `ghost-secret-<n>`.
async fn rounds(
    client: &Client,
    room: &Room,
    seen_rx: &mut mpsc::UnboundedReceiver<Seen>,
    bot: &OwnedUserId,
    n: u32,
) {
    let secret = format!("secret-{n}");
    echo_round(
        client,
        room,
        seen_rx,
        bot,
        &format!("!echo {secret}"),
        &secret,
    )
    .await;
    let ghost = OwnedUserId::try_from("@echo_ghosty:localhost").unwrap();
    let secret = format!("ghost-secret-{n}");
    let command = format!("!echo-as Ghosty {secret}");
    echo_round(client, room, seen_rx, &ghost, &command, &secret).await;
}

/// Sends `command` and waits for `from` to say `secret`, which must come encrypted.
async fn echo_round(
    client: &Client,
    room: &Room,
    seen_rx: &mut mpsc::UnboundedReceiver<Seen>,
    from: &OwnedUserId,
    command: &str,
    secret: &str,
) {
    room.send(RoomMessageEventContent::text_plain(command))
        .await
        .unwrap();
    wait_for(client, seen_rx, from, secret).await;
}

/// Syncs until `from` says something containing `needle`, which must come encrypted.
async fn wait_for(
    client: &Client,
    seen_rx: &mut mpsc::UnboundedReceiver<Seen>,
    from: &OwnedUserId,
    needle: &str,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "{from} never said {needle}");
        client.sync_once(short_sync()).await.unwrap();
        while let Ok((sender, body, encrypted)) = seen_rx.try_recv() {
            if sender == *from && body.contains(needle) {
                assert!(encrypted, "{from}'s message was not encrypted");
                return;
            }
        }
    }
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
