//! Server-side key backup of the bot's room keys, with the `m.megolm_backup.v1.curve25519-aes-sha2`
//! algorithm ([spec](https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups)),
//! so that a bot whose crypto store is lost (a new machine, a deleted directory) can still
//! decrypt the history it had keys for.
//!
//! The recovery key comes from the configuration. At start the server's current backup version is
//! used if its public key is the recovery key's, else a new version is created (its `auth_data`
//! signed by the bot's device). Room keys the bot receives or creates are uploaded in batches by a
//! service that retries with a growing delay. A key missing on decryption is looked up in the
//! backup (that one session only) before the event waits or is reported.

use std::{sync::Arc, time::Duration};

use matrix_sdk_crypto::{
    OlmMachine, olm::ExportedRoomKey, store::types::BackupDecryptionKey, types::RoomKeyBackupInfo,
};
use serde_json::value::RawValue;
use tokio::sync::{Notify, RwLock};
use trestle::{
    Appservice, Error, Result,
    ruma::{
        RoomId,
        api::{
            AppserviceUserIdentity,
            client::backup::{
                add_backup_keys, create_backup_version, get_backup_keys_for_session,
                get_latest_backup_info,
            },
            error::ErrorKind,
        },
        serde::Raw,
    },
    transaction::{Incoming, TimelineEvent, TransactionBody},
};

use crate::{
    Crypto,
    machine::{Decrypted, Machine},
    pending,
    requests::error,
};

/// The secret that encrypts the bot's key backup: Element's "recovery key" (base58, grouped in
/// fours, starting `Es`). Keep it out of the crypto directory: with it, a new store can read the
/// backup.
#[derive(Clone)]
pub struct RecoveryKey(BackupDecryptionKey);

impl RecoveryKey {
    /// Reads a recovery key in the form clients show (spaces are ignored).
    pub fn parse(key: &str) -> Result<RecoveryKey> {
        BackupDecryptionKey::from_base58(key)
            .map(RecoveryKey)
            .map_err(|e| Error::Config(format!("the recovery key is not valid: {e}")))
    }

    /// A new random recovery key, to put in the configuration.
    pub fn generate() -> RecoveryKey {
        RecoveryKey(BackupDecryptionKey::new())
    }

    /// The key in the form [`RecoveryKey::parse`] reads.
    pub fn to_base58(&self) -> String {
        self.0.to_base58()
    }
}

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(<secret>)")
    }
}

/// The longest wait between two attempts at an upload that failed.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The bot's backup: which version it writes to, and a wake-up for the uploader.
pub(crate) struct Backup {
    key: BackupDecryptionKey,
    version: RwLock<Option<String>>,
    wake: Notify,
}

impl Backup {
    pub(crate) fn new(key: RecoveryKey) -> Backup {
        Backup {
            key: key.0,
            version: RwLock::new(None),
            wake: Notify::new(),
        }
    }

    /// The backup version in use, once found or created.
    pub(crate) async fn version(&self) -> Option<String> {
        self.version.read().await.clone()
    }

    /// Room keys may need backing up: the uploader runs soon.
    pub(crate) fn soon(&self) {
        self.wake.notify_one();
    }

    /// Finds the server's backup version for the recovery key, or creates one, and has `olm`
    /// back up to it.
    pub(crate) async fn enable(&self, app: &Appservice, olm: &OlmMachine) -> Result<String> {
        let identity = AppserviceUserIdentity::new(olm.user_id());
        let latest = get_latest_backup_info::v3::Request::new();
        let current = match app.client().send(latest, identity).await {
            Ok(response) => {
                let info: RoomKeyBackupInfo = response.algorithm.deserialize_as_unchecked()?;
                Some((response.version, info))
            }
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound)) => None,
            Err(e) => return Err(e),
        };
        let version = match current {
            Some((version, info)) if self.key.backup_key_matches(&info) => version,
            other => {
                if let Some((version, _)) = other {
                    // Another key (an operator's client, an older configuration): the bot can
                    // neither read it nor write keys it could read back.
                    tracing::warn!(%version, "the homeserver's key backup is not for this \
                        recovery key; creating a new backup version");
                }
                let mut info = self.key.to_backup_info();
                olm.backup_machine()
                    .sign_backup(&mut info)
                    .await
                    .map_err(error)?;
                let algorithm = Raw::new(&info)?.cast_unchecked();
                let create = create_backup_version::v3::Request::new(algorithm);
                app.client().send(create, identity).await?.version
            }
        };
        let public = self.key.megolm_v1_public_key();
        public.set_version(version.clone());
        olm.backup_machine()
            .enable_backup_v1(public)
            .await
            .map_err(error)?;
        *self.version.write().await = Some(version.clone());
        tracing::info!(%version, "key backup enabled");
        Ok(version)
    }

    /// Uploads `olm`'s room keys that are not backed up yet, batch by batch, whenever woken
    /// (and every minute), until the appservice stops. A failure is retried after a delay that
    /// doubles up to five minutes.
    pub(crate) async fn run(&self, app: &Appservice, olm: &OlmMachine) -> Result<()> {
        let mut retry = Duration::from_secs(1);
        loop {
            let done = match self.version().await {
                None => self.enable(app, olm).await.map(drop),
                Some(_) => self.upload(app, olm).await,
            };
            // After a failure, new keys do not cut the delay short.
            let (wait, woken) = match done {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    (Duration::from_secs(60), true)
                }
                Err(error) => {
                    tracing::warn!(%error, retry_s = retry.as_secs(), "key backup failed");
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    (wait, false)
                }
            };
            tokio::select! {
                () = self.wake.notified(), if woken => {
                    // Let the keys of one burst go in one request.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                () = tokio::time::sleep(wait) => {}
                () = app.stopping() => return Ok(()),
            }
        }
    }

    /// Uploads every room key not yet in the backup.
    async fn upload(&self, app: &Appservice, olm: &OlmMachine) -> Result<()> {
        let identity = AppserviceUserIdentity::new(olm.user_id());
        while let Some((id, batch)) = olm.backup_machine().backup().await.map_err(error)? {
            let count: usize = batch.rooms.values().map(|r| r.sessions.len()).sum();
            let request = add_backup_keys::v3::Request::new(batch.version, batch.rooms);
            match app.client().send(request, identity).await {
                Ok(response) => {
                    olm.mark_request_as_sent(&id, &response)
                        .await
                        .map_err(error)?;
                    tracing::debug!(count, "room keys backed up");
                }
                Err(e) if matches!(e.kind(), Some(ErrorKind::WrongRoomKeysVersion(_))) => {
                    // Someone made a newer version: find (or make) ours again.
                    olm.backup_machine().disable_backup().await.map_err(error)?;
                    *self.version.write().await = None;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Looks up the room key of `session_id` in the backup and imports it into `olm`.
    /// `false` when the backup does not have it.
    pub(crate) async fn restore(
        &self,
        app: &Appservice,
        olm: &OlmMachine,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<bool> {
        let Some(version) = self.version().await else {
            return Ok(false);
        };
        let identity = AppserviceUserIdentity::new(olm.user_id());
        let request = get_backup_keys_for_session::v3::Request::new(
            version.clone(),
            room_id.to_owned(),
            session_id.to_owned(),
        );
        let data = match app.client().send(request, identity).await {
            Ok(response) => response.key_data.deserialize()?,
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let key = self
            .key
            .decrypt_session_data(data.session_data)
            .map_err(error)?;
        let key = ExportedRoomKey::from_backed_up_room_key(
            room_id.to_owned(),
            session_id.to_owned(),
            key,
        );
        // Marked as backed up to `version`, so it is not uploaded again.
        let imported = olm
            .store()
            .import_room_keys(vec![key], Some(&version), |_, _| {})
            .await
            .map_err(error)?;
        tracing::info!(%room_id, session_id, "a room key was restored from the key backup");
        Ok(imported.imported_count > 0)
    }
}

impl Crypto {
    /// The key-backup service: uploads the bot's room keys until the appservice stops.
    pub(crate) async fn back_up(self: Arc<Self>, app: Appservice) -> Result<()> {
        let Some(backup) = &self.backup else {
            return Ok(());
        };
        let machine = self.machine(&app).await?;
        backup.run(&app, machine.olm()).await
    }

    /// The bot has room keys to back up, if it backs up.
    pub(crate) fn back_up_soon(&self) {
        if let Some(backup) = &self.backup {
            backup.soon();
        }
    }

    /// Restores `event`'s room key from the backup; returns the event decrypted if that worked.
    pub(crate) async fn restore_from_backup(
        &self,
        app: &Appservice,
        machine: &Machine,
        event: &TimelineEvent,
    ) -> Option<trestle::encryption::Decrypted> {
        let backup = self.backup.as_ref()?;
        let session_id = pending::session_id(event)?;
        match backup
            .restore(app, machine.olm(), &event.room_id, &session_id)
            .await
        {
            Ok(true) => match machine.decrypt(app, event, Duration::ZERO).await {
                Decrypted::Event(decrypted) => Some(decrypted),
                _ => None,
            },
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(%error, event_id = %event.event_id, "could not read the key backup");
                None
            }
        }
    }

    /// Decrypts an `m.room.encrypted` event the appservice fetched itself (`/messages`,
    /// `/event`, a reply's target) with the bot's keys, restoring the room key from the backup
    /// if it is missing; the decrypted event comes with its sender's trust. `None` if the key
    /// is neither in the store nor in the backup.
    pub async fn decrypt_event(
        &self,
        app: &Appservice,
        event: &RawValue,
    ) -> Result<Option<trestle::encryption::Decrypted>> {
        let machine = self.machine(app).await?;
        let body = TransactionBody {
            events: vec![event.to_owned()],
            ..TransactionBody::default()
        };
        let Some(Incoming::Timeline(event)) = body.into_items("fetched").items.pop() else {
            return Err(Error::Other("not a room event".to_owned()));
        };
        match machine.decrypt(app, &event, Duration::ZERO).await {
            Decrypted::Event(decrypted) => Ok(Some(decrypted)),
            Decrypted::MissingKey => Ok(self.restore_from_backup(app, machine, &event).await),
            Decrypted::Failed(reason) => Err(Error::Other(format!(
                "could not decrypt {}: {reason}",
                event.event_id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_key_reads_back_from_its_text_and_is_not_shown() {
        let key = RecoveryKey::generate();
        let text = key.to_base58();
        // Clients show it in groups of four; the spaces do not matter.
        let again = RecoveryKey::parse(&format!(" {} ", text.replace(' ', "  "))).unwrap();
        assert_eq!(again.to_base58(), text);
        assert_eq!(format!("{key:?}"), "RecoveryKey(<secret>)");
    }

    #[test]
    fn a_malformed_recovery_key_is_refused_with_a_clear_error() {
        let error = RecoveryKey::parse("EsT not a key").unwrap_err().to_string();
        assert!(
            error.starts_with("the recovery key is not valid: "),
            "{error}"
        );
        let mut text = RecoveryKey::generate().to_base58();
        // A wrong last character breaks the parity byte.
        let last = text.pop().unwrap();
        text.push(if last == 'a' { 'b' } else { 'a' });
        assert!(RecoveryKey::parse(&text).is_err());
    }
}
