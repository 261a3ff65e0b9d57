//! One user's device and Olm machine, and what it does with incoming and outgoing events.

use std::{collections::BTreeMap, path::Path, time::Duration};

use matrix_sdk_common::deserialized_responses::UnableToDecryptReason;
use matrix_sdk_crypto::{
    CollectStrategy, DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine,
    RoomEventDecryptionResult, TrustRequirement, types::requests::AnyOutgoingRequest,
};
use matrix_sdk_sqlite::{SqliteCryptoStore, SqliteStoreConfig};
use serde_json::value::RawValue;
use trestle::{
    Appservice, Error, Result,
    encryption::{Outgoing, SenderTrust},
    ruma::{
        DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, RoomId, UInt, UserId,
        api::{
            AppserviceUserIdentity,
            client::{
                device::update_device,
                sync::sync_events::{self, DeviceLists},
            },
        },
        serde::Raw,
    },
    transaction::{Incoming, TimelineEvent},
};

use crate::{
    cross_signing,
    requests::{self, error},
    rooms::{self, RoomSettings},
    trust,
};

/// What became of an encrypted event.
pub(crate) enum Decrypted {
    /// The decrypted event, with its sender's trust.
    Event(trestle::encryption::Decrypted),
    /// Its room key is not here (yet): it may come later.
    MissingKey,
    /// It cannot be decrypted, for the reason given; waiting would not help.
    Failed(String),
}

/// Why an event could not be decrypted, in words for the room.
fn describe(reason: &UnableToDecryptReason) -> String {
    match reason {
        UnableToDecryptReason::MissingMegolmSession {
            withheld_code: Some(code),
        } => format!("its sender withheld the room key ({code})"),
        UnableToDecryptReason::MalformedEncryptedEvent => "it is malformed".to_owned(),
        UnableToDecryptReason::MismatchedIdentityKeys => {
            "its sender's keys do not match the room key".to_owned()
        }
        UnableToDecryptReason::SenderIdentityNotTrusted(_) => {
            "its sender's device is not cross-signed, and this bot accepts only devices that are"
                .to_owned()
        }
        _ => "its room key does not decrypt it".to_owned(),
    }
}

/// A user's Olm machine (the bot's or a ghost's), with what it needs to use it from many tasks.
pub(crate) struct Machine {
    olm: OlmMachine,
    /// Serialises sending the machine's requests: two tasks must not upload the same keys.
    sending: tokio::sync::Mutex<()>,
    /// Bumped whenever room keys arrive, so events waiting for one try again.
    keys: tokio::sync::watch::Sender<u64>,
    /// What decrypting requires of the sender's device (see `trust::requirement`).
    requirement: TrustRequirement,
    /// A sync loop was started for it (see `sync`).
    syncing: std::sync::atomic::AtomicBool,
}

impl Machine {
    /// Opens `user`'s store in `dir`, creating its device the first time. A `light` store
    /// (a ghost's) keeps fewer connections and a smaller cache.
    pub(crate) async fn open(
        app: &Appservice,
        user: &UserId,
        dir: &Path,
        light: bool,
    ) -> Result<Machine> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(dir)?;
        let bot = user.to_owned();
        let id_file = dir.join("device_id");
        let mut reopened = true;
        let device_id: OwnedDeviceId = match std::fs::read_to_string(&id_file) {
            Ok(id) => id.trim().into(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = OwnedDeviceId::from(format!("TRESTLE{}", DeviceId::new()));
                // MSC4190: an appservice creates its users' devices with a PUT.
                let mut create = update_device::v3::Request::new(id.clone());
                create.display_name = Some("Trestle".to_owned());
                app.client()
                    .send(create, AppserviceUserIdentity::new(&bot))
                    .await?;
                std::fs::write(&id_file, id.as_str())?;
                reopened = false;
                id
            }
            Err(e) => return Err(e.into()),
        };
        let path = dir.join("store");
        let config = if light {
            SqliteStoreConfig::with_low_memory_config(path)
        } else {
            SqliteStoreConfig::new(path)
        };
        let store = SqliteCryptoStore::open_with_config(&config)
            .await
            .map_err(error)?;
        let olm = OlmMachine::with_store(&bot, &device_id, store, None)
            .await
            .map_err(error)?;
        // Room key requests are made by `request_key`, to the sender's device as well; the
        // crate's own (on decryption failure, to the bot's own devices) would come first and
        // share its transaction id. Answering requests (forwarding) stays on.
        olm.set_room_key_requests_enabled(false);
        if reopened {
            // Device-list changes that came while the machine was closed (a ghost's, closed
            // for being little used) never reached it: ask again before encrypting.
            olm.mark_all_tracked_users_as_dirty().await.map_err(error)?;
        }
        let machine = Machine {
            olm,
            sending: tokio::sync::Mutex::new(()),
            keys: tokio::sync::watch::Sender::new(0),
            requirement: TrustRequirement::Untrusted,
            syncing: Default::default(),
        };
        machine.send_requests(app).await?;
        cross_signing::cross_sign(app.client(), &machine.olm).await?;
        tracing::info!(user = %bot, %device_id, elapsed_ms = started.elapsed().as_millis(),
            "end-to-end encryption ready");
        Ok(machine)
    }

    /// The machine, decrypting only what meets `requirement`.
    pub(crate) fn requiring(self, requirement: TrustRequirement) -> Machine {
        Machine {
            requirement,
            ..self
        }
    }

    fn decryption_settings(&self) -> DecryptionSettings {
        DecryptionSettings {
            sender_device_trust_requirement: self.requirement,
        }
    }

    pub(crate) fn device_id(&self) -> &DeviceId {
        self.olm.device_id()
    }

    pub(crate) fn olm(&self) -> &OlmMachine {
        &self.olm
    }

    /// The lock that serialises sending the machine's requests.
    pub(crate) fn sending(&self) -> &tokio::sync::Mutex<()> {
        &self.sending
    }

    /// Sends the machine's waiting requests, one task at a time.
    pub(crate) async fn send_requests(&self, app: &Appservice) -> Result<()> {
        let _one_at_a_time = self.sending.lock().await;
        requests::send_outgoing(app.client(), &self.olm).await
    }

    /// Takes in a to-device event or MSC3202 data; what is not for this device is ignored.
    /// Returns the session ids of the room keys that came with it (`m.room_key`,
    /// `m.forwarded_room_key`).
    pub(crate) async fn receive(&self, app: &Appservice, item: &Incoming) -> Result<Vec<String>> {
        let bot = self.olm.user_id();
        let device = self.olm.device_id();
        let mut to_device_events = Vec::new();
        let mut changed_devices = DeviceLists::new();
        let mut counts = BTreeMap::new();
        let mut fallback = None;
        match item {
            Incoming::ToDevice(event) => {
                if event.to_user_id != bot || event.to_device_id != device {
                    return Ok(Vec::new());
                }
                to_device_events.push(Raw::from_json(RawValue::to_owned(&event.json)));
            }
            Incoming::DeviceLists(update) => {
                changed_devices.changed = update.device_lists.changed.clone();
                changed_devices.left = update.device_lists.left.clone();
                if let Some(mine) = update
                    .one_time_keys_count
                    .get(bot)
                    .and_then(|d| d.get(device))
                {
                    for (algorithm, count) in mine {
                        counts.insert(
                            OneTimeKeyAlgorithm::from(algorithm.as_str()),
                            UInt::try_from(*count).unwrap_or(UInt::MAX),
                        );
                    }
                }
                fallback = update
                    .unused_fallback_key_types
                    .get(bot)
                    .and_then(|d| d.get(device))
                    .map(|types| {
                        types
                            .iter()
                            .map(|t| OneTimeKeyAlgorithm::from(t.as_str()))
                            .collect::<Vec<_>>()
                    });
            }
            _ => return Ok(Vec::new()),
        }
        let changes = EncryptionSyncChanges {
            to_device_events,
            changed_devices: &changed_devices,
            one_time_keys_counts: &counts,
            unused_fallback_keys: fallback.as_deref(),
            next_batch_token: None,
        };
        self.take_in(app, changes).await
    }

    /// Takes in what this device's own `/sync` brought (see `sync`), and keeps its
    /// `next_batch` in the crypto store with the changes it made, so a restart goes on from
    /// there and nothing the homeserver had for the device is skipped. Returns the session ids
    /// of the room keys that came.
    pub(crate) async fn receive_sync(
        &self,
        app: &Appservice,
        response: sync_events::v3::Response,
    ) -> Result<Vec<String>> {
        let changes = EncryptionSyncChanges {
            to_device_events: response.to_device.events,
            changed_devices: &response.device_lists,
            one_time_keys_counts: &response.device_one_time_keys_count,
            unused_fallback_keys: response.device_unused_fallback_key_types.as_deref(),
            next_batch_token: Some(response.next_batch),
        };
        self.take_in(app, changes).await
    }

    /// The `next_batch` of this device's last `/sync` taken in, if any.
    pub(crate) async fn sync_token(&self) -> Result<Option<String>> {
        self.olm.store().next_batch_token().await.map_err(error)
    }

    /// Asks again for the devices of every user the machine tracks, before it next encrypts.
    pub(crate) async fn forget_device_lists(&self) -> Result<()> {
        self.olm
            .mark_all_tracked_users_as_dirty()
            .await
            .map_err(error)
    }

    /// Whether the caller is the first to ask, and so starts the machine's sync loop.
    pub(crate) fn claim_sync(&self) -> bool {
        !self
            .syncing
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn user_id(&self) -> &UserId {
        self.olm.user_id()
    }

    /// Feeds `changes` to the Olm machine, wakes the events waiting for a room key that came,
    /// and sends what the machine has to send in answer (new one-time keys, key queries).
    async fn take_in(
        &self,
        app: &Appservice,
        mut changes: EncryptionSyncChanges<'_>,
    ) -> Result<Vec<String>> {
        let events = std::mem::take(&mut changes.to_device_events);
        changes.to_device_events = self.answerable(app, events).await;
        let (_, room_keys) = self
            .olm
            .receive_sync_changes(changes, &self.decryption_settings())
            .await
            .map_err(error)?;
        if !room_keys.is_empty() {
            self.keys.send_modify(|n| *n += 1);
        }
        self.send_requests(app).await?;
        Ok(room_keys.into_iter().map(|key| key.session_id).collect())
    }

    /// Decrypts an `m.room.encrypted` event, waiting up to `wait` for its room key.
    pub(crate) async fn decrypt(
        &self,
        app: &Appservice,
        event: &TimelineEvent,
        wait: Duration,
    ) -> Decrypted {
        let raw = Raw::from_json(RawValue::to_owned(&event.json));
        let deadline = tokio::time::Instant::now() + wait;
        let mut keys = self.keys.subscribe();
        let mut asked = false;
        loop {
            // Marked seen before trying, so a key arriving during the attempt wakes us.
            keys.borrow_and_update();
            let attempt = self
                .olm
                .try_decrypt_room_event(&raw, &event.room_id, &self.decryption_settings())
                .await;
            let unsure_of_sender = match &attempt {
                Ok(RoomEventDecryptionResult::Decrypted(decrypted)) => {
                    let state = &decrypted.encryption_info.verification_state;
                    trust::sender_trust(state) == SenderTrust::Unknown
                }
                Ok(RoomEventDecryptionResult::UnableToDecrypt(info)) => {
                    matches!(
                        info.reason,
                        UnableToDecryptReason::SenderIdentityNotTrusted(_)
                    )
                }
                Err(_) => false,
            };
            if unsure_of_sender && !asked {
                // The sender's keys may not be here yet, or be out of date: fetch them, retry.
                asked = true;
                if let Err(error) = self.fetch_keys(app, &event.sender).await {
                    tracing::warn!(%error, "could not fetch a sender's keys");
                }
                continue;
            }
            match attempt {
                Ok(RoomEventDecryptionResult::Decrypted(decrypted)) => {
                    let trust = trust::sender_trust(&decrypted.encryption_info.verification_state);
                    let json = decrypted.event.into_json();
                    return Decrypted::Event(trestle::encryption::Decrypted::new(json, trust));
                }
                Ok(RoomEventDecryptionResult::UnableToDecrypt(info)) => {
                    if !info.reason.is_missing_room_key() {
                        tracing::warn!(event_id = %event.event_id, reason = ?info.reason,
                            "could not decrypt an event");
                        return Decrypted::Failed(describe(&info.reason));
                    }
                    match tokio::time::timeout_at(deadline, keys.changed()).await {
                        Ok(Ok(())) => continue,
                        _ => return Decrypted::MissingKey,
                    }
                }
                Err(e) => {
                    tracing::warn!(event_id = %event.event_id, error = %e, "crypto store failed");
                    return Decrypted::Failed("the crypto store failed".to_owned());
                }
            }
        }
    }

    /// Fetches `user`'s devices and cross-signing keys now (and tracks them from now on):
    /// a change to them may not have reached the machine yet.
    pub(crate) async fn fetch_keys(&self, app: &Appservice, user: &UserId) -> Result<()> {
        let users = [user];
        track(&self.olm, &users).await.map_err(error)?;
        let (id, query) = self.olm.query_keys_for_users(users);
        let request = AnyOutgoingRequest::KeysQuery(query);
        let _one_at_a_time = self.sending.lock().await;
        requests::send(app.client(), &self.olm, &id, &request).await
    }

    /// Whether the event in `json` decrypts now.
    pub(crate) async fn decrypts(&self, room_id: &str, json: &str) -> bool {
        let (Ok(room_id), Ok(json)) = (
            <&RoomId>::try_from(room_id),
            RawValue::from_string(json.to_owned()),
        ) else {
            return false;
        };
        let raw = Raw::from_json(json);
        matches!(
            self.olm
                .try_decrypt_room_event(&raw, room_id, &self.decryption_settings())
                .await,
            Ok(RoomEventDecryptionResult::Decrypted(_))
        )
    }

    /// Encrypts `event` for the room's members with the room's `settings`.
    pub(crate) async fn encrypt(
        &self,
        app: &Appservice,
        sender: &UserId,
        room_id: &RoomId,
        settings: RoomSettings,
        event: &Outgoing,
    ) -> Result<Outgoing> {
        if sender != self.olm.user_id() {
            // Megolm ties a session to its sender's device.
            return Err(Error::Other(format!(
                "{sender} cannot send with the device of {}",
                self.olm.user_id()
            )));
        }
        let members = rooms::recipients(app, sender, room_id, &settings.visibility).await?;
        // A plain list, not a closure, keeps the future `Send` for every lifetime.
        let members: Vec<&UserId> = members.iter().map(AsRef::as_ref).collect();
        track(&self.olm, &members).await.map_err(error)?;
        let _one_at_a_time = self.sending.lock().await;
        requests::send_outgoing(app.client(), &self.olm).await?;
        if let Some((id, claim)) = missing_sessions(&self.olm, &members).await.map_err(error)? {
            requests::send(app.client(), &self.olm, &id, &claim.into()).await?;
        }
        let settings = EncryptionSettings::new(
            settings.encryption,
            settings.visibility,
            CollectStrategy::default(),
        );
        for request in share(&self.olm, room_id, &members, settings)
            .await
            .map_err(error)?
        {
            requests::send_to_device(app.client(), &self.olm, &request).await?;
        }
        let content = Raw::from_json(event.content.clone());
        let encrypted = self
            .olm
            .encrypt_room_event_raw(room_id, &event.event_type, &content)
            .await
            .map_err(error)?;
        Ok(Outgoing {
            event_type: "m.room.encrypted".to_owned(),
            content: encrypted.content.into_json(),
        })
    }
}

// matrix-sdk-crypto takes iterators of `&UserId`; called inline, rustc cannot prove the
// encrypting future `Send` for every lifetime (rust-lang/rust#110338). These wrappers state it
// with named lifetimes.

fn track<'a>(
    olm: &'a OlmMachine,
    users: &'a [&'a UserId],
) -> impl Future<Output = matrix_sdk_crypto::store::Result<()>> + Send + 'a {
    olm.update_tracked_users(users.iter().copied())
}

type ClaimRequest = (
    trestle::ruma::OwnedTransactionId,
    trestle::ruma::api::client::keys::claim_keys::v3::Request,
);

fn missing_sessions<'a>(
    olm: &'a OlmMachine,
    users: &'a [&'a UserId],
) -> impl Future<Output = matrix_sdk_crypto::store::Result<Option<ClaimRequest>>> + Send + 'a {
    olm.get_missing_sessions(users.iter().copied())
}

type ToDeviceRequests = Vec<std::sync::Arc<matrix_sdk_crypto::types::requests::ToDeviceRequest>>;

fn share<'a>(
    olm: &'a OlmMachine,
    room_id: &'a RoomId,
    users: &'a [&'a UserId],
    settings: EncryptionSettings,
) -> impl Future<Output = Result<ToDeviceRequests, matrix_sdk_crypto::OlmError>> + Send + 'a {
    olm.share_room_key(room_id, users.iter().copied(), settings)
}
