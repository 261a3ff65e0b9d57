//! End-to-end encryption for Trestle appservices, the way mautrix does it first: one device for
//! the appservice bot, with an [`OlmMachine`](matrix_sdk_crypto::OlmMachine) from matrix-sdk-crypto fed from transactions.
//!
//! - The device is created with `PUT /_matrix/client/v3/devices/{deviceId}` under identity
//!   assertion (MSC4190; the registration needs `io.element.msc4190: true`), and every key
//!   upload, query, claim and to-device message is sent as that device (`?user_id=&device_id=`).
//! - To-device events (MSC2409) and device-list changes and one-time-key counts (MSC3202) come
//!   in with transactions through [`trestle::encryption::Encryption::receive`] where the
//!   homeserver pushes them; elsewhere each open device fetches them with its own filtered
//!   `/sync`. Which one is found out at start ([`Delivery`]).
//! - `m.room.encrypted` events reach handlers decrypted; the bot's messages into encrypted rooms
//!   are encrypted with the room's `m.room.encryption` settings (rotation included).
//! - A user can verify the bot's device from their client (SAS emoji over to-device); the bot
//!   shows the emoji in a direct chat and confirms when the user says so there (see
//!   [`Settings::verify_users`]).
//! - Crypto state lives in a matrix-sdk-sqlite store in the directory given to [`Crypto::new`],
//!   so it survives restarts. With a [`RecoveryKey`] ([`Crypto::with_backup`]) the bot's room
//!   keys are also backed up on the homeserver and restored from there when missing.
//! - A room key still missing is asked for (`m.room_key_request`) before the event waits, and
//!   the bot's and ghosts' machines answer requests for the keys they sent.
//!
//! Install with [`Crypto::install`].

mod backup;
mod cross_signing;
mod delivery;
mod ghosts;
mod key_requests;
mod late;
mod machine;
mod pending;
mod requests;
mod rooms;
mod sync;
mod trust;
mod verification;

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock, Weak, atomic::Ordering},
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;
use trestle::{
    Appservice, Result, Router,
    encryption::{Encryption, EncryptionOptions, Outgoing},
    ruma::{RoomId, UserId},
    sync::MutexExt,
    transaction::{Incoming, TimelineEvent},
};

pub use backup::RecoveryKey;
pub use cross_signing::cross_sign;
pub use delivery::{Delivery, Recorded, recorded as recorded_delivery};
use machine::{Decrypted, Machine};
pub use requests::{send_outgoing, send_to_device};

/// How long an encrypted event holds its room's queue waiting for its room key by default
/// before it is set aside to wait (see [`Crypto::with_key_times`]).
const KEY_WAIT: Duration = Duration::from_millis(500);

/// How long an event set aside waits for its room key by default before the bot reports it.
const KEY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an interactive verification may take by default, from the request to the end: the
/// longest a SAS flow lasts in matrix-sdk-crypto too.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the start-up probe waits for the homeserver to push its to-device event by default.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// How [`Crypto`] behaves; start from `Settings::default()`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// How long an encrypted event whose room key is missing holds its room's queue before it
    /// is set aside to wait for the key (500 ms).
    pub key_wait: Duration,
    /// How long an event set aside waits for its key, counted from when it was first seen,
    /// before the bot reports in the room that it could not decrypt it (60 s).
    pub key_timeout: Duration,
    /// How many ghosts' Olm machines stay open (64). Each holds a SQLite pool (about five open
    /// files); the least recently used beyond this are closed and reopened when needed.
    pub open_ghosts: usize,
    /// Who may verify the bot's device interactively (SAS over to-device, see
    /// `docs/e2ee.md`): globs of user ids, `*` any run of characters and `?` one, as in
    /// policy lists. `None`: the users of the appservice's own homeserver
    /// (`@*:<server name>`), the default. Requests from anyone else are declined.
    pub verify_users: Option<Vec<String>>,
    /// How long an interactive verification may take, from the request until the user has
    /// confirmed, before the bot cancels it with `m.timeout` (5 min).
    pub verify_timeout: Duration,
    /// Decrypt messages from devices that their owner did not cross-sign (true, like
    /// Element's default). When false, such an event reaches handlers still encrypted (as
    /// `m.room.encrypted`) and the bot says once in the room that it did not decrypt it, as for
    /// an event it cannot decrypt. Handlers see each decrypted event's
    /// [`trestle::encryption::SenderTrust`] either way.
    pub accept_unsigned_devices: bool,
    /// How long the bot waits at start for a transaction to bring the to-device event it sent
    /// its own device (5 s), before it concludes the homeserver does not push them and has
    /// each open device `/sync` instead (see [`Delivery`]).
    pub probe_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            key_wait: KEY_WAIT,
            key_timeout: KEY_TIMEOUT,
            open_ghosts: 64,
            verify_users: None,
            verify_timeout: VERIFY_TIMEOUT,
            accept_unsigned_devices: true,
            probe_wait: PROBE_WAIT,
        }
    }
}

/// The appservice's encryption: the bot's device and Olm machine, and one for each ghost that
/// sends into an encrypted room.
pub struct Crypto {
    dir: PathBuf,
    machine: OnceCell<Arc<Machine>>,
    key_wait: Duration,
    key_timeout: Duration,
    accept_unsigned_devices: bool,
    /// The table of events waiting for keys is created.
    table: OnceCell<()>,
    ghosts: ghosts::Ghosts,
    rooms: rooms::Rooms,
    verifications: Arc<verification::Verifications>,
    /// The bot's key backup, when a recovery key is configured.
    backup: Option<backup::Backup>,
    /// This, for the sync loops it starts.
    me: Weak<Crypto>,
    probe: delivery::Probe,
    probe_wait: Duration,
    /// How events reach the devices, once the probe found out.
    delivery: OnceLock<Delivery>,
    /// The devices' sync loops (with [`Delivery::Sync`]).
    loops: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// The homeserver neither pushes nor lets the bot `/sync`: no device-list change reaches
    /// the bot's machine, which must ask again before each message it encrypts.
    bot_unsynced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto").field("dir", &self.dir).finish()
    }
}

impl Crypto {
    /// Crypto state kept in `dir` (created if missing): the bot's device id and its
    /// matrix-sdk-sqlite store, and the same for each ghost under `ghosts/<localpart>`. Keep
    /// one directory per appservice.
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Crypto> {
        Self::with_settings(dir, Settings::default())
    }

    /// As [`Crypto::new`], with how long an encrypted event whose room key is missing holds its
    /// room's queue (`key_wait`) and then waits aside for the key (`key_timeout`): see
    /// [`Settings`]. A key that arrives in time has the event handled again, decrypted, after
    /// what its room queued meanwhile; otherwise the bot says in the room that it could not
    /// decrypt it.
    pub fn with_key_times(
        dir: impl Into<PathBuf>,
        key_wait: Duration,
        key_timeout: Duration,
    ) -> Arc<Crypto> {
        let settings = Settings {
            key_wait,
            key_timeout,
            ..Settings::default()
        };
        Self::with_settings(dir, settings)
    }

    /// As [`Crypto::new`], with `settings`.
    pub fn with_settings(dir: impl Into<PathBuf>, settings: Settings) -> Arc<Crypto> {
        Self::build(dir.into(), settings, None)
    }

    /// As [`Crypto::with_settings`], with the bot's room keys backed up on the homeserver
    /// (`m.megolm_backup.v1.curve25519-aes-sha2`) under `recovery_key`: a bot started on an
    /// empty crypto directory with the same key restores from the backup the keys it needs to
    /// decrypt history. See docs/e2ee.md.
    pub fn with_backup(
        dir: impl Into<PathBuf>,
        settings: Settings,
        recovery_key: RecoveryKey,
    ) -> Arc<Crypto> {
        let backup = backup::Backup::new(recovery_key);
        Self::build(dir.into(), settings, Some(backup))
    }

    fn build(dir: PathBuf, settings: Settings, backup: Option<backup::Backup>) -> Arc<Crypto> {
        Arc::new_cyclic(|me| Crypto {
            dir,
            machine: OnceCell::new(),
            key_wait: settings.key_wait,
            key_timeout: settings.key_timeout,
            accept_unsigned_devices: settings.accept_unsigned_devices,
            table: OnceCell::new(),
            ghosts: ghosts::Ghosts::new(settings.open_ghosts),
            rooms: Default::default(),
            verifications: Arc::new(verification::Verifications::new(
                settings.verify_users,
                settings.verify_timeout,
            )),
            backup,
            me: me.clone(),
            probe: delivery::Probe::new(),
            probe_wait: settings.probe_wait,
            delivery: OnceLock::new(),
            loops: Default::default(),
            bot_unsynced: Default::default(),
        })
    }

    /// Installs this encryption on `router`, with a service that sets up the bot's device and
    /// uploads its keys as soon as the appservice starts. A second service reports the events
    /// whose room key did not arrive in time.
    pub fn install(self: Arc<Self>, router: Router) -> Router {
        let setup = self.clone();
        let sweep = self.clone();
        let backup = self.clone();
        let router = if self.backup.is_some() {
            router.service("e2ee-backup", move |app: Appservice| {
                let crypto = backup.clone();
                async move { crypto.back_up(app).await }
            })
        } else {
            router
        };
        router
            .encryption(self)
            .service("e2ee", move |app: Appservice| {
                let crypto = setup.clone();
                async move {
                    let bot = crypto.machine(&app).await?.clone();
                    tokio::select! {
                        () = crypto.choose_delivery(&app, &bot) => {}
                        () = app.stopping() => return Ok(()),
                    }
                    app.stopping().await;
                    let loops = std::mem::take(&mut *crypto.loops.lock_unpoisoned());
                    loops.join_all().await;
                    Ok(())
                }
            })
            .service("e2ee-late-keys", move |app: Appservice| {
                let crypto = sweep.clone();
                async move { crypto.sweep_late_keys(app).await }
            })
    }

    /// Finds out how the homeserver delivers to-device events and device lists (once per
    /// process), records it for `trestle check`, and starts the sync loops if they are needed.
    async fn choose_delivery(&self, app: &Appservice, bot: &Arc<Machine>) {
        let delivery = match self.delivery.get() {
            Some(delivery) => *delivery,
            None => {
                let delivery = self.probe.run(app, bot, self.probe_wait).await;
                let _ = self.delivery.set(delivery);
                delivery::record(&self.dir, delivery);
                delivery
            }
        };
        if delivery == Delivery::Sync {
            self.start_sync(app, bot);
            for ghost in self.ghosts.all().await {
                self.start_sync(app, &ghost);
            }
        }
    }

    /// How the homeserver delivers to-device events and device lists, once found out at start.
    pub fn delivery(&self) -> Option<Delivery> {
        self.delivery.get().copied()
    }

    /// Starts `machine`'s sync loop if events come by `/sync` and it has none yet.
    fn start_sync(&self, app: &Appservice, machine: &Arc<Machine>) {
        if self.delivery() != Some(Delivery::Sync) || !machine.claim_sync() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let app = app.clone();
        let machine = Arc::downgrade(machine);
        let mut loops = self.loops.lock_unpoisoned();
        // Loops of closed ghosts' machines have ended: forget them.
        while loops.try_join_next().is_some() {}
        loops.spawn(async move { me.sync_device(&app, machine).await });
    }

    /// The table of events waiting for keys, created on first use.
    async fn table(&self, app: &Appservice) -> Result<()> {
        self.table
            .get_or_try_init(|| pending::ready(app))
            .await
            .copied()
    }

    /// How many encrypted events are waiting for their room key.
    pub async fn waiting_for_keys(&self, app: &Appservice) -> Result<i64> {
        self.table(app).await?;
        pending::count(app).await
    }

    /// The bot's Olm machine, set up on first use.
    async fn machine(&self, app: &Appservice) -> Result<&Arc<Machine>> {
        self.machine
            .get_or_try_init(|| async {
                check_registration(app.registration())?;
                // A bot apart from the sender is asserted like a ghost, so it must exist.
                app.bot().ensure_registered().await?;
                let bot = app.bot_user_id();
                let machine = Machine::open(app, bot, &self.dir, false).await?;
                let requirement = trust::requirement(self.accept_unsigned_devices);
                let machine = machine.requiring(requirement);
                if let Some(backup) = &self.backup {
                    // Without a backup the bot still works: the service tries again.
                    if let Err(error) = backup.enable(app, machine.olm()).await {
                        tracing::warn!(%error, "key backup not enabled yet");
                    }
                }
                Ok::<_, trestle::Error>(Arc::new(machine))
            })
            .await
    }

    /// `user`'s machine: the bot's, or a ghost's (its device created on first use when
    /// `create`, else only where its store exists).
    async fn machine_for(
        &self,
        app: &Appservice,
        user: &UserId,
        create: bool,
    ) -> Result<Option<Arc<Machine>>> {
        if user == app.bot_user_id() {
            return self.machine(app).await.map(|m| Some(m.clone()));
        }
        let owned = user.to_owned();
        let machine = self
            .ghosts
            .get_or_open(&owned, async {
                let dir = self.dir.join("ghosts").join(user.localpart());
                if !create && !dir.exists() {
                    return Ok(None);
                }
                Machine::open(app, user, &dir, true).await.map(Some)
            })
            .await?;
        if let Some(machine) = &machine {
            self.start_sync(app, machine);
        }
        Ok(machine)
    }

    /// How many ghosts' machines are open (see [`Settings::open_ghosts`]).
    pub async fn open_ghosts(&self) -> usize {
        self.ghosts.count().await
    }

    /// Sets up `ghost`'s device (created on the homeserver and its keys uploaded the first
    /// time, its store opened after a restart) ahead of its first encrypted message, and
    /// returns the device id.
    pub async fn ghost_device(&self, app: &Appservice, ghost: &UserId) -> Result<String> {
        match self.machine_for(app, ghost, true).await? {
            Some(machine) => Ok(machine.device_id().to_string()),
            None => Err(trestle::Error::Other(format!("no device for {ghost}"))),
        }
    }

    /// The bot's device id, once set up.
    pub fn device_id(&self) -> Option<String> {
        self.machine.get().map(|m| m.device_id().to_string())
    }
}

/// Installs encryption on a plugin of the `trestle` host (`trestle_host::EncryptionInstaller`),
/// with its crypto state in `dir`, the host configuration's `options` (a recovery key turns
/// the key backup on) and the default key times. Fails on a malformed recovery key.
pub fn install_in_host(
    router: Router,
    dir: PathBuf,
    options: &EncryptionOptions,
) -> Result<Router> {
    let settings = Settings {
        accept_unsigned_devices: options.accept_unsigned_devices,
        verify_users: options.verify_users.clone(),
        ..Settings::default()
    };
    let crypto = match &options.recovery_key {
        Some(key) => Crypto::with_backup(dir, settings, RecoveryKey::parse(key)?),
        None => Crypto::with_settings(dir, settings),
    };
    Ok(crypto.install(router))
}

/// The homeserver sends to-device events and key counts, and lets the appservice create
/// devices, only where the registration asks for them.
fn check_registration(registration: &trestle::Registration) -> Result<()> {
    let missing: Vec<&str> = [
        (registration.msc4190, "io.element.msc4190"),
        (registration.msc3202, "org.matrix.msc3202"),
    ]
    .into_iter()
    .filter(|(set, _)| *set != Some(true))
    .map(|(_, field)| field)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(trestle::Error::Config(format!(
        "registration `{}`: end-to-end encryption needs `{}: true`",
        registration.id,
        missing.join(": true` and `")
    )))
}

impl Encryption for Crypto {
    fn receive<'a>(&'a self, app: &'a Appservice, item: &'a Incoming) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.probe.note(app.bot_user_id(), item) {
                return;
            }
            if self.delivery() == Some(Delivery::Sync) {
                // Each device's `/sync` brings them: taking them in twice would not do.
                return;
            }
            let machines = match item {
                Incoming::ToDevice(event) => self
                    .machine_for(app, &event.to_user_id, false)
                    .await
                    .map(|m| m.into_iter().collect()),
                _ => match self.machine(app).await {
                    Ok(bot) => {
                        let mut all = vec![bot.clone()];
                        all.extend(self.ghosts.all().await);
                        Ok(all)
                    }
                    Err(e) => Err(e),
                },
            };
            let machines: Vec<Arc<Machine>> = match machines {
                Ok(machines) => machines,
                Err(error) => {
                    tracing::warn!(%error, "end-to-end encryption is not set up");
                    return;
                }
            };
            let mut sessions = Vec::new();
            let bot = self.machine.get();
            // Interactive verification of the bot's device (verification.rs).
            let verifying = match (item, bot) {
                (Incoming::ToDevice(event), Some(bot)) => Some((event, bot)),
                _ => None,
            };
            if let Some((event, bot)) = verifying {
                self.verifications.prepare(app, bot, event).await;
            }
            for machine in machines {
                match machine.receive(app, item).await {
                    // Only the bot decrypts: a key to a ghost's device (clients share with every
                    // member's devices) brings nothing back.
                    Ok(received) if bot.is_some_and(|bot| Arc::ptr_eq(bot, &machine)) => {
                        sessions.extend(received);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "end-to-end encryption: could not take in an update");
                    }
                }
            }
            if !sessions.is_empty() {
                self.back_up_soon();
                self.keys_arrived(app, &sessions).await;
            }
            if let Some((event, bot)) = verifying {
                self.verifications.opened(app, bot, event).await;
            }
        })
    }

    fn takes<'a>(&'a self, _: &'a Appservice, item: &'a Incoming) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.verifications.take_answer(item) })
    }

    fn timeline<'a>(
        &'a self,
        app: &'a Appservice,
        event: &'a TimelineEvent,
    ) -> BoxFuture<'a, Option<trestle::encryption::Decrypted>> {
        Box::pin(async move {
            rooms::note_state(&self.rooms, event);
            // Only encrypted events need the machine: a failing setup must not slow the rest.
            if event.event_type != "m.room.encrypted" {
                return None;
            }
            let machine = match self.machine(app).await {
                Ok(machine) => machine,
                Err(error) => {
                    tracing::warn!(%error, "end-to-end encryption is not set up");
                    return None;
                }
            };
            match machine.decrypt(app, event, self.key_wait).await {
                Decrypted::Event(decrypted) => Some(decrypted),
                Decrypted::MissingKey => {
                    match self.restore_from_backup(app, machine, event).await {
                        Some(json) => Some(json),
                        None => {
                            if let Err(error) = machine.request_key(app, event).await {
                                tracing::warn!(%error, "could not ask for a missing room key");
                            }
                            self.wait_for_key(app, machine, event).await
                        }
                    }
                }
                Decrypted::Failed(reason) => {
                    late::report(
                        app,
                        &event.room_id,
                        &event.event_id,
                        event.sender.as_str(),
                        &reason,
                    )
                    .await;
                    None
                }
            }
        })
    }

    fn encrypt<'a>(
        &'a self,
        app: &'a Appservice,
        sender: &'a UserId,
        room_id: &'a RoomId,
        event: &'a Outgoing,
    ) -> BoxFuture<'a, Result<Option<Outgoing>>> {
        Box::pin(async move {
            // Only a room that is encrypted needs the machine (and gets a ghost a device).
            let rooms = &self.rooms;
            let Some(settings) = rooms::settings(app, rooms, sender, room_id).await? else {
                return Ok(None);
            };
            match self.machine_for(app, sender, true).await? {
                Some(machine) => {
                    if sender == app.bot_user_id() && self.bot_unsynced.load(Ordering::Relaxed) {
                        // A member's new device would otherwise never get the room key.
                        machine.forget_device_lists().await?;
                    }
                    let encrypted = machine.encrypt(app, sender, room_id, settings, event);
                    let encrypted = encrypted.await.map(Some);
                    if sender == app.bot_user_id() {
                        // A new outbound session made a room key of the bot's own.
                        self.back_up_soon();
                    }
                    encrypted
                }
                None => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_must_ask_for_devices_and_key_counts() {
        let mut registration = trestle::Registration::generate("e", None, "bot", "g_", "x");
        let error = check_registration(&registration).unwrap_err().to_string();
        assert_eq!(
            error,
            "registration `e`: end-to-end encryption needs `io.element.msc4190: true` and \
             `org.matrix.msc3202: true`"
        );
        registration.msc4190 = Some(true);
        let error = check_registration(&registration).unwrap_err().to_string();
        assert!(
            error.ends_with("needs `org.matrix.msc3202: true`"),
            "{error}"
        );
        registration.msc3202 = Some(true);
        check_registration(&registration).unwrap();
    }
}
