//! A user with an Olm machine of her own, driven by the test (so the order of keys and events
//! is the test's), talking to Synapse with her own token.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use matrix_sdk_common::deserialized_responses::ProcessedToDeviceEvent;
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement,
    types::requests::ToDeviceRequest,
};
use serde_json::{Value, json};
use trestle::{
    client::HomeserverClient,
    ruma::{
        OwnedDeviceId, OwnedUserId, RoomId, UserId,
        api::{AppserviceUserIdentity, client::sync::sync_events::DeviceLists},
        events::room::message::RoomMessageEventContent,
        serde::Raw,
    },
};
use trestle_crypto::{send_outgoing, send_to_device};
use trestle_tests::{appservice::WAIT, synapse::Synapse, synapse::UserClient};

/// Waits until `done` holds, failing with `what` after [`WAIT`].
pub async fn until<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct OlmUser {
    pub plain: UserClient,
    pub client: HomeserverClient,
    pub olm: OlmMachine,
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Where the next `/sync` starts.
    since: Option<String>,
}

impl OlmUser {
    /// Registers `localpart` and uploads her device's keys.
    pub async fn register(synapse: &Synapse, localpart: &str) -> OlmUser {
        let plain = synapse.register_user(localpart, "password-1234").await;
        let whoami = plain
            .call_ok(
                reqwest::Method::GET,
                "/_matrix/client/v3/account/whoami",
                None,
            )
            .await;
        let user_id = OwnedUserId::try_from(plain.user_id.as_str()).unwrap();
        let device_id = OwnedDeviceId::from(whoami["device_id"].as_str().unwrap());
        let client = HomeserverClient::new(synapse.base_url(), &plain.access_token).unwrap();
        let olm = OlmMachine::new(&user_id, &device_id).await;
        send_outgoing(&client, &olm).await.unwrap();
        OlmUser {
            plain,
            client,
            olm,
            user_id,
            device_id,
            since: None,
        }
    }

    /// Gives her a cross-signing identity that signs her device, as a client of 2026 does.
    pub async fn cross_sign(&self) {
        trestle_crypto::cross_sign(&self.client, &self.olm)
            .await
            .unwrap();
    }

    /// Creates an encrypted room, invites `users` and waits until they joined.
    pub async fn encrypted_room_with(&self, users: &[&UserId]) -> String {
        let room_id = self
            .plain
            .create_room(json!({
                "invite": users,
                "initial_state": [{"type": "m.room.encryption", "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            }))
            .await;
        for user in users {
            until(&format!("{user} never joined"), || {
                let (plain, room_id) = (&self.plain, &room_id);
                async move {
                    plain
                        .joined_members(room_id)
                        .await
                        .contains(&user.to_string())
                }
            })
            .await;
        }
        room_id
    }

    /// Learns `users`' devices and makes Olm sessions with them.
    pub async fn olm_sessions_with(&self, users: &[&UserId]) {
        self.olm
            .update_tracked_users(users.iter().copied())
            .await
            .unwrap();
        send_outgoing(&self.client, &self.olm).await.unwrap();
        let missing = self.olm.get_missing_sessions(users.iter().copied());
        if let Some((id, claim)) = missing.await.unwrap() {
            let me = AppserviceUserIdentity::new(&self.user_id);
            let response = self.client.send(claim, me).await.unwrap();
            self.olm.mark_request_as_sent(&id, &response).await.unwrap();
        }
    }

    /// A room key for `users`' devices in `room_id`: the to-device messages that carry it,
    /// not sent yet.
    pub async fn room_key_for(
        &self,
        room_id: &str,
        users: &[&UserId],
    ) -> Vec<Arc<ToDeviceRequest>> {
        self.olm_sessions_with(users).await;
        let room = <&RoomId>::try_from(room_id).unwrap();
        let settings = EncryptionSettings::default();
        let messages = self
            .olm
            .share_room_key(room, users.iter().copied(), settings);
        let messages = messages.await.unwrap();
        assert!(!messages.is_empty(), "no room key to share");
        messages
    }

    /// Sends the to-device messages `messages`.
    pub async fn send(&self, messages: &[Arc<ToDeviceRequest>]) {
        for message in messages {
            send_to_device(&self.client, &self.olm, message)
                .await
                .unwrap();
        }
    }

    /// Sends an encrypted `m.text` message; returns its event id and Megolm session id.
    pub async fn send_encrypted(&self, room_id: &str, body: &str) -> (String, String) {
        let room = <&RoomId>::try_from(room_id).unwrap();
        let content = Raw::new(&json!({"msgtype": "m.text", "body": body}))
            .unwrap()
            .cast_unchecked();
        let encrypted = self
            .olm
            .encrypt_room_event_raw(room, "m.room.message", &content)
            .await
            .unwrap();
        let encrypted: Value = encrypted.content.deserialize_as_unchecked().unwrap();
        let session_id = encrypted["session_id"].as_str().unwrap().to_owned();
        let event_id = self
            .plain
            .send_event(room_id, "m.room.encrypted", encrypted)
            .await;
        (event_id, session_id)
    }

    /// The to-device events that came since the last call (raw), waiting up to a few seconds
    /// for some.
    pub async fn sync_to_device(&mut self) -> Vec<Value> {
        let mut path = "/_matrix/client/v3/sync?timeout=5000".to_owned();
        if let Some(since) = &self.since {
            path.push_str(&format!("&since={since}"));
        }
        let sync = self.plain.call_ok(reqwest::Method::GET, &path, None).await;
        self.since = sync["next_batch"].as_str().map(str::to_owned);
        sync["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Hands `events` to her machine and sends what it has to send (answers included).
    /// Returns the events as her machine processed them (decrypted where it could).
    pub async fn receive(&self, events: &[Value]) -> Vec<ProcessedToDeviceEvent> {
        let to_device_events = events
            .iter()
            .map(|e| Raw::new(e).unwrap().cast_unchecked())
            .collect();
        let changes = EncryptionSyncChanges {
            to_device_events,
            changed_devices: &DeviceLists::new(),
            one_time_keys_counts: &Default::default(),
            unused_fallback_keys: None,
            next_batch_token: None,
        };
        let settings = DecryptionSettings {
            sender_device_trust_requirement: TrustRequirement::Untrusted,
        };
        let (processed, _) = self
            .olm
            .receive_sync_changes(changes, &settings)
            .await
            .unwrap();
        send_outgoing(&self.client, &self.olm).await.unwrap();
        processed
    }
}

/// The bodies of the messages the handler saw.
pub type Seen = Arc<std::sync::Mutex<Vec<String>>>;

async fn record(
    trestle::router::State(seen): trestle::router::State<Seen>,
    message: trestle::router::Event<RoomMessageEventContent>,
) -> trestle::Result<()> {
    seen.lock().unwrap().push(message.content.body().to_owned());
    Ok(())
}

/// A router that accepts invites and records the messages its handler sees in `seen`.
pub fn recording_router(seen: &Seen) -> trestle::Router {
    trestle::Router::new()
        .accept_invites(true)
        .on(record)
        .with_state(seen.clone())
}

/// Whether the handler saw `body`.
pub fn saw(seen: &Seen, body: &str) -> bool {
    seen.lock().unwrap().iter().any(|b| b == body)
}
