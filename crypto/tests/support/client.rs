//! The E2EE client of the end-to-end tests: matrix-sdk, which nobody here wrote, logged in as a
//! fresh user, creating encrypted rooms and reading what bots say there.

// Each test binary uses a part of it.
#![allow(dead_code)]

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
}

fn short_sync() -> SyncSettings {
    SyncSettings::default().timeout(Duration::from_millis(500))
}

impl User {
    /// Registers `localpart` on `synapse` and logs in with matrix-sdk.
    pub async fn register(synapse: &Synapse, localpart: &str) -> User {
        let password = "password-1234";
        let plain = synapse.register_user(localpart, password).await;
        let client = Client::builder()
            .homeserver_url(synapse.base_url())
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
        loop {
            assert!(Instant::now() < deadline, "{from} never said {needle}");
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
