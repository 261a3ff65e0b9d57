//! Interactive verification against a real Synapse, with matrix-sdk as the user's client: the
//! client asks to verify the bot's device (to-device SAS), the bot shows the emoji in a direct
//! chat and confirms only when the user says `!verify yes` there; then the client trusts the
//! bot. A user who says `!verify no` gets a cancelled verification, one the settings do not
//! allow a declined request, and one who never answers a timeout.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use matrix_sdk::{
    Room, RoomState,
    config::SyncSettings,
    encryption::verification::{SasVerification, VerificationRequest, VerificationRequestState},
    ruma::{
        OwnedRoomId, OwnedUserId, UserId,
        events::{
            key::verification::cancel::CancelCode,
            room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
        },
    },
};
use tokio::sync::mpsc;
use trestle::{
    Result, Router,
    router::{Event, State},
};
use trestle_crypto::Settings;
use trestle_tests::appservice::WAIT;

#[path = "support/client.rs"]
mod client;
#[path = "support/setup.rs"]
mod setup;

use client::User;

/// The bodies of the messages the plugin's handler saw.
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

/// A message a user's client saw: room, sender, body.
type Said = (OwnedRoomId, OwnedUserId, String);

/// A user's client, with the messages it sees and the invites it takes.
struct Verifier {
    user: User,
    said: mpsc::UnboundedReceiver<Said>,
}

impl Verifier {
    async fn new(harness: &trestle_tests::appservice::Harness, localpart: &str) -> Verifier {
        let user = User::register(&harness.synapse, localpart).await;
        let (tx, said) = mpsc::unbounded_channel::<Said>();
        user.client
            .add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: Room| {
                let tx = tx.clone();
                async move {
                    let body = event.content.body().to_owned();
                    let _ = tx.send((room.room_id().to_owned(), event.sender, body));
                }
            });
        Verifier { user, said }
    }

    async fn sync(&self) {
        let settings = SyncSettings::default().timeout(Duration::from_millis(300));
        self.user.client.sync_once(settings).await.unwrap();
        // A direct chat the bot made is joined, as a person would.
        for room in self.user.client.invited_rooms() {
            if room.state() == RoomState::Invited {
                room.join().await.unwrap();
            }
        }
    }

    /// Syncs until `done` holds, failing with `what` after [`WAIT`].
    async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            self.sync().await;
        }
    }

    /// Syncs until `from` says something containing `needle`: its room and body.
    async fn heard(&mut self, from: &UserId, needle: &str) -> (OwnedRoomId, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Ok((room, sender, body)) = self.said.try_recv() {
                if sender == from && body.contains(needle) {
                    return (room, body);
                }
            }
            assert!(Instant::now() < deadline, "{from} never said {needle}");
            self.sync().await;
        }
    }

    /// Asks to verify the bot's device.
    async fn request(&self, bot: &UserId, device: &str) -> VerificationRequest {
        let encryption = self.user.client.encryption();
        encryption.request_user_identity(bot).await.unwrap();
        let device = encryption
            .get_device(bot, device.into())
            .await
            .unwrap()
            .expect("the client knows the bot's device");
        device.request_verification().await.unwrap()
    }

    /// Starts SAS once the bot accepted the request, and waits for the emoji.
    async fn emoji(&self, request: &VerificationRequest) -> SasVerification {
        self.until("the bot never accepted the request", || request.is_ready())
            .await;
        let sas = request.start_sas().await.unwrap().unwrap();
        self.until("the keys were never exchanged", || sas.can_be_presented())
            .await;
        sas
    }

    async fn say(&self, room: &OwnedRoomId, text: &str) {
        let room = self.user.client.get_room(room).unwrap();
        room.send(RoomMessageEventContent::text_plain(text))
            .await
            .unwrap();
    }
}

/// The emoji and numbers as the bot writes them.
fn shown(sas: &SasVerification) -> (String, String) {
    let emoji: Vec<String> = sas
        .emoji()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e.symbol, e.description))
        .collect();
    let (a, b, c) = sas.decimals().unwrap();
    (emoji.join("  "), format!("{a} {b} {c}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_verifies_the_bot_by_confirming_the_emoji_in_a_direct_chat() {
    let seen = Seen::default();
    let mut settings = Settings::default();
    settings.verify_users = Some(vec!["@alice:localhost".into(), "@b?b:localhost".into()]);
    let started = setup::start("verifier", router(&seen), settings).await;
    let harness = &started.harness;
    let bot = harness.app.bot_user_id().clone();
    let bot_device = started.crypto.device_id().unwrap();

    // Alice shares a room with the bot alone: that is the direct chat. Her `!verify yes`
    // reaches the plugin while no verification waits for it.
    let mut alice = Verifier::new(harness, "alice").await;
    let room = alice.user.encrypted_room_with(&bot).await;
    let room_id = room.room_id().to_owned();
    alice.say(&room_id, "!verify yes").await;
    let request = alice.request(&bot, &bot_device).await;
    let sas = alice.emoji(&request).await;
    let (emoji, numbers) = shown(&sas);
    let (dm, body) = alice.heard(&bot, "asked to verify").await;
    assert_eq!(
        dm, room_id,
        "the bot did not use the room it shares with alice"
    );
    assert!(body.contains(&emoji), "{body} does not show {emoji}");
    assert!(body.contains(&numbers), "{body} does not show {numbers}");
    assert!(body.contains(&bot_device), "{body}");

    // Confirming on the client alone does not verify: the bot waits for the word in the chat.
    sas.confirm().await.unwrap();
    for _ in 0..5 {
        alice.sync().await;
    }
    assert!(!sas.is_done(), "the bot confirmed before alice said so");
    alice.say(&room_id, "!verify yes").await;
    alice
        .until("the verification never completed", || sas.is_done())
        .await;
    alice.heard(&bot, "Verified").await;
    let encryption = alice.user.client.encryption();
    let device = encryption
        .get_device(&bot, bot_device.as_str().into())
        .await
        .unwrap()
        .unwrap();
    assert!(
        device.is_verified(),
        "alice's client does not trust the bot's device"
    );
    // The bot is cross-signed: its master key came with its MAC, and alice's client signed it.
    let identity = encryption.get_user_identity(&bot).await.unwrap().unwrap();
    assert!(
        identity.is_verified(),
        "alice's client does not trust the bot's identity"
    );
    alice.say(&room_id, "after").await;
    let deadline = Instant::now() + WAIT;
    while !seen.lock().unwrap().iter().any(|b| b == "after") {
        assert!(
            Instant::now() < deadline,
            "the plugin never saw alice's message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handled = seen.lock().unwrap().clone();
    // The answer was the verification's, not the plugin's; the one before it the plugin's.
    assert_eq!(
        handled.iter().filter(|b| *b == "!verify yes").count(),
        1,
        "{handled:?}"
    );

    // Bob shares no room with the bot: it makes a direct chat and invites him. He says no.
    let mut bob = Verifier::new(harness, "bob").await;
    let request = bob.request(&bot, &bot_device).await;
    let sas = bob.emoji(&request).await;
    let (emoji, _) = shown(&sas);
    let (dm, body) = bob.heard(&bot, "asked to verify").await;
    assert!(body.contains(&emoji), "{body} does not show {emoji}");
    bob.say(&dm, "!verify no").await;
    bob.until("bob's no never cancelled it", || sas.is_cancelled())
        .await;
    let info = sas.cancel_info().unwrap();
    assert_eq!(info.cancel_code(), &CancelCode::MismatchedSas);
    bob.heard(&bot, "you said the emoji do not match").await;

    // Mallory is on the same homeserver but not in the list: declined at once.
    let mallory = Verifier::new(harness, "mallory").await;
    let request = mallory.request(&bot, &bot_device).await;
    mallory
        .until("mallory's request was never declined", || {
            request.is_cancelled()
        })
        .await;
    let VerificationRequestState::Cancelled(info) = request.state() else {
        panic!("{:?}", request.state());
    };
    assert_eq!(info.cancel_code(), &CancelCode::User);
    assert!(!request.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_the_user_never_confirms_times_out() {
    // Default: users of the appservice's own homeserver may verify.
    let mut settings = Settings::default();
    settings.verify_timeout = Duration::from_secs(8);
    let started = setup::start("verifier", router(&Seen::default()), settings).await;
    let harness = &started.harness;
    let bot = harness.app.bot_user_id().clone();
    let bot_device = started.crypto.device_id().unwrap();

    let mut carol = Verifier::new(harness, "carol").await;
    let request = carol.request(&bot, &bot_device).await;
    let sas = carol.emoji(&request).await;
    carol.heard(&bot, "asked to verify").await;
    carol.heard(&bot, "timed out").await;
    carol
        .until("the timeout never reached the client", || {
            sas.is_cancelled()
        })
        .await;
    assert_eq!(
        sas.cancel_info().unwrap().cancel_code(),
        &CancelCode::Timeout
    );
}
