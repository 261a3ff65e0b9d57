//! End-to-end encryption for Trestle appservices, the way mautrix does it first: one device for
//! the appservice bot, with an [`OlmMachine`] from matrix-sdk-crypto fed from transactions.
//!
//! - The device is created with `PUT /_matrix/client/v3/devices/{deviceId}` under identity
//!   assertion (MSC4190; the registration needs `io.element.msc4190: true`), and every key
//!   upload, query, claim and to-device message is sent as that device (`?user_id=&device_id=`).
//! - To-device events (MSC2409) and device-list changes and one-time-key counts (MSC3202) come
//!   in with transactions through [`trestle::encryption::Encryption::receive`].
//! - `m.room.encrypted` events reach handlers decrypted; the bot's messages into encrypted rooms
//!   are encrypted with the room's `m.room.encryption` settings (rotation included).
//! - Crypto state lives in a matrix-sdk-sqlite store in the directory given to [`Crypto::new`],
//!   so it survives restarts.
//!
//! Install with [`Crypto::install`].

mod machine;
mod requests;

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use trestle::{
    Appservice, Result, Router,
    encryption::{Encryption, Outgoing},
    ruma::{RoomId, UserId},
    transaction::{Incoming, TimelineEvent},
};

use machine::Machine;

/// How long an encrypted event waits for its room key before it is routed still encrypted.
const KEY_WAIT: Duration = Duration::from_secs(10);

/// The appservice bot's encryption: its device and its Olm machine.
pub struct Crypto {
    dir: PathBuf,
    machine: OnceCell<Arc<Machine>>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto").field("dir", &self.dir).finish()
    }
}

impl Crypto {
    /// Crypto state kept in `dir` (created if missing): the bot's device id and its
    /// matrix-sdk-sqlite store. Keep one directory per appservice.
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Crypto> {
        Arc::new(Crypto {
            dir: dir.into(),
            machine: OnceCell::new(),
        })
    }

    /// Installs this encryption on `router`, with a service that sets up the bot's device and
    /// uploads its keys as soon as the appservice starts.
    pub fn install(self: Arc<Self>, router: Router) -> Router {
        let setup = self.clone();
        router
            .encryption(self)
            .service("e2ee", move |app: Appservice| {
                let crypto = setup.clone();
                async move {
                    crypto.machine(&app).await?;
                    app.stopping().await;
                    Ok(())
                }
            })
    }

    /// The bot's Olm machine, set up on first use.
    async fn machine(&self, app: &Appservice) -> Result<&Arc<Machine>> {
        self.machine
            .get_or_try_init(|| async {
                let machine = Machine::open(app, &self.dir).await?;
                Ok::<_, trestle::Error>(Arc::new(machine))
            })
            .await
    }

    /// The bot's device id, once set up.
    pub fn device_id(&self) -> Option<String> {
        self.machine.get().map(|m| m.device_id().to_string())
    }
}

impl Encryption for Crypto {
    fn receive<'a>(&'a self, app: &'a Appservice, item: &'a Incoming) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.machine(app).await {
                Ok(machine) => {
                    if let Err(error) = machine.receive(app, item).await {
                        tracing::warn!(%error, "end-to-end encryption: could not take in an update");
                    }
                }
                Err(error) => tracing::warn!(%error, "end-to-end encryption is not set up"),
            }
        })
    }

    fn timeline<'a>(
        &'a self,
        app: &'a Appservice,
        event: &'a TimelineEvent,
    ) -> BoxFuture<'a, Option<Box<RawValue>>> {
        Box::pin(async move {
            let machine = match self.machine(app).await {
                Ok(machine) => machine,
                Err(error) => {
                    tracing::warn!(%error, "end-to-end encryption is not set up");
                    return None;
                }
            };
            machine.timeline(event, KEY_WAIT).await
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
            self.machine(app)
                .await?
                .encrypt(app, sender, room_id, event)
                .await
        })
    }
}
