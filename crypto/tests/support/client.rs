//! The E2EE client of the end-to-end tests: matrix-sdk, which nobody here wrote, logged in as a
//! fresh user, creating encrypted rooms and reading what bots say there.
//!
//! It is configured the strict way Element's 2026 default is (MSC4153, "invisible crypto"), or
//! stricter: its own identity cross-signed; room keys shared only with devices their owner
//! cross-signed (`IdentityBasedStrategy`, Element's "exclude insecure devices"); and events
//! decrypted only from cross-signed devices (`TrustRequirement::CrossSigned`: stricter than
//! Element's `CrossSignedOrLegacy`, which also accepts sessions received before trust was
//! recorded; every session here is new, so passing this passes Element's).

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::EncryptionInfo,
    encryption::EncryptionSettings,
    ruma::{
        OwnedUserId,
        api::client::room::create_room,
        events::{
            InitialStateEvent,
            room::{
                encrypted::OriginalSyncRoomEncryptedEvent,
                encryption::RoomEncryptionEventContent,
                member::MembershipState,
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            },
        },
    },
};
use matrix_sdk_crypto::{CollectStrategy, DecryptionSettings, TrustRequirement};
use tokio::sync::mpsc;
use trestle_tests::{
    appservice::WAIT,
    synapse::{Synapse, UserClient},
};

/// A message seen by the client: sender, body, and whether it arrived encrypted.
type Seen = (OwnedUserId, String, bool);

/// A user logged in twice: with matrix-sdk (`client`), and as a plain HTTP client (`plain`).
pub struct User {
    pub client: Client,
    pub plain: UserClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Events the client could not decrypt: sender and event id.
    undecrypted: mpsc::UnboundedReceiver<(OwnedUserId, String)>,
}

fn short_sync() -> SyncSettings {
    SyncSettings::default().timeout(Duration::from_millis(500))
}

impl User {
    /// Registers `localpart` on `synapse` and logs in with matrix-sdk.
    pub async fn register(synapse: &Synapse, localpart: &str) -> User {
        let password = "password-1234";
        let plain = synapse.register_user(localpart, password).await;
        let strict = DecryptionSettings {
            sender_device_trust_requirement: TrustRequirement::CrossSigned,
        };
        let client = Client::builder()
            .homeserver_url(synapse.base_url())
            .with_encryption_settings(EncryptionSettings::default())
            .with_room_key_recipient_strategy(CollectStrategy::IdentityBasedStrategy)
            .with_decryption_settings(strict)
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
        // The first upload of a user's cross-signing keys needs no interactive auth (MSC3967).
        let encryption = client.encryption();
        encryption.bootstrap_cross_signing(None).await.unwrap();
        let status = encryption.cross_signing_status().await.unwrap();
        assert!(status.is_complete(), "{localpart} is not cross-signed");
        let (undecrypted_tx, undecrypted) = mpsc::unbounded_channel();
        client.add_event_handler(move |event: OriginalSyncRoomEncryptedEvent| {
            let undecrypted_tx = undecrypted_tx.clone();
            async move {
                let _ = undecrypted_tx.send((event.sender, event.event_id.to_string()));
            }
        });
        let (seen_tx, seen) = mpsc::unbounded_channel::<Seen>();
        client.add_event_handler(
            move |event: OriginalSyncRoomMessageEvent, info: Option<EncryptionInfo>| {
                let seen_tx = seen_tx.clone();
                async move {
                    let body = event.content.body().to_owned();
                    let _ = seen_tx.send((event.sender, body, info.is_some()));
                }
            },
        );
        client.sync_once(SyncSettings::default()).await.unwrap();
        User {
            client,
            plain,
            seen,
            undecrypted,
        }
    }

    /// Creates an encrypted room, invites `bot`, and waits until it joined.
    pub async fn encrypted_room_with(&self, bot: &OwnedUserId) -> Room {
        let mut request = create_room::v3::Request::new();
        request.invite = vec![bot.clone()];
        request.initial_state = vec![
            InitialStateEvent::with_empty_state_key(
                RoomEncryptionEventContent::with_recommended_defaults(),
            )
            .to_raw_any(),
        ];
        let room: Room = self.client.create_room(request).await.unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let member = room.get_member_no_sync(bot).await.unwrap();
            if member.is_some_and(|m| *m.membership() == MembershipState::Join) {
                return room;
            }
            assert!(Instant::now() < deadline, "{bot} never joined");
            self.client.sync_once(short_sync()).await.unwrap();
        }
    }

    /// Sends `command` into `room` and waits for `from` to say `secret`, which must come
    /// encrypted.
    pub async fn echo_round(
        &mut self,
        room: &Room,
        from: &OwnedUserId,
        command: &str,
        secret: &str,
    ) {
        room.send(RoomMessageEventContent::text_plain(command))
            .await
            .unwrap();
        self.wait_for(from, secret).await;
    }

    /// Syncs until `from` says something containing `needle`, which must come encrypted.
    pub async fn wait_for(&mut self, from: &OwnedUserId, needle: &str) {
        let deadline = Instant::now() + WAIT;
        let mut undecrypted = Vec::new();
        loop {
            while let Ok(event) = self.undecrypted.try_recv() {
                undecrypted.push(event);
            }
            assert!(
                Instant::now() < deadline,
                "{from} never said {needle}; not decrypted: {undecrypted:?}"
            );
            self.client.sync_once(short_sync()).await.unwrap();
            while let Ok((sender, body, encrypted)) = self.seen.try_recv() {
                if sender == *from && body.contains(needle) {
                    assert!(encrypted, "{from}'s message was not encrypted");
                    return;
                }
            }
        }
    }
}
