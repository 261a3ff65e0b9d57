//! Each open device's own `/sync`, where the homeserver does not push to-device events and
//! device lists to the appservice (see `delivery`).
//!
//! The bot's device and each ghost's device whose machine is open long-poll
//! `GET /_matrix/client/v3/sync` as themselves (identity assertion with `device_id`, which
//! Synapse allows an appservice for its users' devices without any flag; but Synapse refuses
//! `/sync` to the registration's `sender_localpart` user: a bot that is that user, rather than
//! a user of the namespace apart from it, then gets no room keys, which is logged and recorded
//! for `trestle check`), with a filter that
//! leaves out rooms, presence and account data: what is left is what the Olm machine needs
//! (to-device events, device-list changes, one-time-key counts, unused fallback key types).
//! Each response is taken in with its `next_batch` saved in the device's crypto store in the
//! same write; Synapse deletes a device's to-device events only once a later `since` shows
//! they were received, so a crash or a restart loses nothing.
//!
//! A ghost's machine closed for being little used (`Settings::open_ghosts`) stops its loop:
//! thousands of idle long-polls would cost the homeserver more than the few events they bring.
//! When the ghost sends again its machine reopens and its loop goes on from the saved
//! `next_batch`, so what came meanwhile is taken in then (the reopened machine also asks again
//! for the device lists of the users it tracks).

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};

use trestle::{
    Appservice, Result,
    ruma::{
        api::{
            AppserviceUserIdentity,
            client::{
                filter::{Filter, FilterDefinition, RoomFilter},
                sync::sync_events::{self, v3::Filter as SyncFilter},
            },
        },
        presence::PresenceState,
    },
};

use crate::{
    Crypto,
    delivery::{self, PROBE_TYPE},
    machine::Machine,
};

/// How long one `/sync` waits for something to arrive.
const LONG_POLL: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Only what encryption needs: no rooms, presence or account data.
fn filter() -> SyncFilter {
    let mut filter = FilterDefinition::empty();
    filter.room = RoomFilter::ignore_all();
    filter.presence = Filter::ignore_all();
    filter.account_data = Filter::ignore_all();
    SyncFilter::FilterDefinition(filter)
}

/// The `/sync` request after `since`.
fn request(since: Option<String>) -> sync_events::v3::Request {
    let mut request = sync_events::v3::Request::new();
    request.filter = Some(filter());
    // The first sync of a device only catches up: answer at once.
    request.timeout = since.as_ref().map(|_| LONG_POLL);
    request.since = since;
    request.set_presence = PresenceState::Offline;
    request
}

impl Crypto {
    /// Syncs `machine`'s device until the appservice stops or (a ghost's) the machine closes.
    pub(crate) async fn sync_device(&self, app: &Appservice, machine: Weak<Machine>) {
        let Some((user, device, mut since)) = self.sync_start(&machine).await else {
            return;
        };
        tracing::debug!(%user, %device, "syncing a device");
        let is_bot = &user == app.bot_user_id();
        // Synapse refuses `/sync` to the sender only: a bot apart from it syncs like a ghost.
        let is_sender = &user == app.sender_user_id();
        let mut answered = false;
        let mut refused = false;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut identity = AppserviceUserIdentity::new(&user);
            identity.device_id = Some(&device);
            // The machine is not held while waiting, so that it can close meanwhile.
            let sent = app.client().send(request(since.clone()), identity);
            let response = tokio::select! {
                response = sent => response,
                () = app.stopping() => return,
            };
            let Some(machine) = self.still_open(&machine).await else {
                // Not taken in, so its `since` is not saved: the next opening fetches it again.
                return;
            };
            let outcome = match response {
                Ok(response) => {
                    if is_bot && !answered {
                        delivery::record_bot_sync(&self.dir, true);
                        self.bot_unsynced.store(false, Ordering::Relaxed);
                    }
                    answered = true;
                    self.take_in_sync(app, &machine, response).await
                }
                Err(error) => Err(error),
            };
            drop(machine);
            match outcome {
                Ok(next) => {
                    since = Some(next);
                    backoff = FIRST_BACKOFF;
                }
                Err(error) if is_sender && !answered && is_refusal(&error) => {
                    if !refused {
                        refused = true;
                        delivery::record_bot_sync(&self.dir, false);
                        self.bot_unsynced.store(true, Ordering::Relaxed);
                        tracing::warn!(%user, %error, "end-to-end encryption: the homeserver \
                            refuses /sync to the bot, which is the registration's \
                            sender_localpart (Synapse does), and does not push to-device events: \
                            the bot's device gets no room keys and cannot decrypt, and asks for \
                            its members' devices before each message it encrypts. Give the bot a \
                            user of its own: in the registration set sender_localpart to a new, \
                            unused localpart (the bot's stays in namespaces.users), reload it \
                            into the homeserver and restart (the trestle host then takes the \
                            plugin's name as the bot; elsewhere AppserviceBuilder::bot); or turn \
                            on Synapse's \
                            experimental_features msc2409_to_device_messages_enabled and \
                            msc3202_transaction_extensions (docs/e2ee.md)");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(MAX_BACKOFF) => {}
                        () = app.stopping() => return,
                    }
                }
                Err(error) => {
                    tracing::warn!(%user, %error, "end-to-end encryption: /sync failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = app.stopping() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The user, device and saved `next_batch` of `machine`, if it is still open.
    async fn sync_start(
        &self,
        machine: &Weak<Machine>,
    ) -> Option<(
        trestle::ruma::OwnedUserId,
        trestle::ruma::OwnedDeviceId,
        Option<String>,
    )> {
        let machine = self.still_open(machine).await?;
        let since = match machine.sync_token().await {
            Ok(since) => since,
            Err(error) => {
                tracing::warn!(%error, "end-to-end encryption: could not read the sync token");
                None
            }
        };
        Some((
            machine.user_id().to_owned(),
            machine.device_id().to_owned(),
            since,
        ))
    }

    /// `machine` if it is (still) the open machine of its user.
    async fn still_open(&self, weak: &Weak<Machine>) -> Option<Arc<Machine>> {
        let machine = weak.upgrade()?;
        if self
            .machine
            .get()
            .is_some_and(|bot| Arc::ptr_eq(bot, &machine))
        {
            return Some(machine);
        }
        // A ghost's: ask the open set, under its lock, so that a machine being closed is not
        // used beside the one that replaces it.
        let user = machine.user_id().to_owned();
        drop(machine);
        self.ghosts.open_instance(&user, weak).await
    }

    /// Takes in one `/sync` response. Returns its `next_batch`.
    async fn take_in_sync(
        &self,
        app: &Appservice,
        machine: &Arc<Machine>,
        mut response: sync_events::v3::Response,
    ) -> Result<String> {
        response.to_device.events.retain(|event| !is_probe(event));
        let next = response.next_batch.clone();
        let sessions = machine.receive_sync(app, response).await?;
        let is_bot = self
            .machine
            .get()
            .is_some_and(|bot| Arc::ptr_eq(bot, machine));
        // Only the bot decrypts (see `Crypto::receive`).
        if is_bot && !sessions.is_empty() {
            self.keys_arrived(app, &sessions).await;
        }
        Ok(next)
    }
}

/// The delivery probe (see `delivery`), which comes to the bot's device and is for nothing else.
fn is_probe(event: &trestle::ruma::serde::Raw<trestle::ruma::events::AnyToDeviceEvent>) -> bool {
    let kind = event.get_field::<String>("type").ok().flatten();
    kind.as_deref() == Some(PROBE_TYPE)
}

/// Synapse answers the appservice's own user's `/sync` with a 500 ("We no longer support AS
/// users using /sync directly", synapse/handlers/sync.py).
fn is_refusal(error: &trestle::Error) -> bool {
    error
        .status()
        .is_some_and(|status| status == trestle::axum::http::StatusCode::INTERNAL_SERVER_ERROR)
}
