//! How to-device events and device-list updates reach the devices: pushed in transactions
//! (MSC2409 and MSC3202, experimental in Synapse: `msc2409_to_device_messages_enabled`,
//! `msc3202_transaction_extensions`), or fetched by each device's own `/sync` (see `sync`).
//!
//! No homeserver says whether it pushes them (Synapse advertises neither flag), so at start the
//! bot probes: it sends a to-device event to its own device and waits a few seconds for a
//! transaction to bring it, with the bot's one-time-key counts (Synapse adds them to every
//! transaction when MSC3202 is on). Both arrived: push. Anything missing: `/sync`; pushed items
//! are then ignored so that nothing is taken in twice. (Synapse refuses `/sync` to the bot, the
//! appservice's own user: see `sync`.)

use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedUserId, TransactionId, api::client::to_device::send_event_to_device, serde::Raw,
        to_device::DeviceIdOrAllDevices,
    },
    transaction::Incoming,
};

use crate::machine::Machine;

/// The to-device event type of the probe.
pub(crate) const PROBE_TYPE: &str = "org.trestle.delivery_probe";

/// Where the choice is recorded in the crypto directory, for `trestle check`.
const RECORD: &str = "delivery.json";

/// How the devices receive to-device events, device-list changes and one-time-key counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// In the appservice's transactions (MSC2409, MSC3202).
    Push,
    /// From `GET /_matrix/client/v3/sync` as each open device (the bot's, and each open
    /// ghost's), with a filter that leaves out rooms.
    Sync,
}

/// What the probe saw.
pub(crate) struct Probe {
    nonce: String,
    to_device: tokio::sync::watch::Sender<bool>,
    counts: tokio::sync::watch::Sender<bool>,
    decided: AtomicBool,
}

impl Probe {
    pub(crate) fn new() -> Probe {
        Probe {
            nonce: TransactionId::new().to_string(),
            to_device: tokio::sync::watch::Sender::new(false),
            counts: tokio::sync::watch::Sender::new(false),
            decided: AtomicBool::new(false),
        }
    }

    /// Notes what a pushed item tells about delivery. Returns true for the probe itself,
    /// which is for nothing else.
    pub(crate) fn note(&self, bot: &OwnedUserId, item: &Incoming) -> bool {
        match item {
            Incoming::ToDevice(event) if event.event_type == PROBE_TYPE => {
                if is_probe(event.json.get(), &self.nonce) {
                    self.to_device.send_replace(true);
                }
                true
            }
            Incoming::DeviceLists(update) => {
                if !self.decided.load(Ordering::Relaxed)
                    && update.one_time_keys_count.contains_key(bot)
                {
                    self.counts.send_replace(true);
                }
                false
            }
            _ => false,
        }
    }

    /// Sends the probe to `bot`'s own device and waits up to `wait` for transactions to bring
    /// it and the bot's key counts.
    pub(crate) async fn run(&self, app: &Appservice, bot: &Machine, wait: Duration) -> Delivery {
        let deadline = tokio::time::Instant::now() + wait;
        let mut to_device = self.to_device.subscribe();
        let mut counts = self.counts.subscribe();
        let pushed = match send_probe(app, bot, &self.nonce).await {
            Ok(()) => {
                let arrived = tokio::time::timeout_at(deadline, to_device.wait_for(|s| *s));
                matches!(arrived.await, Ok(Ok(_)))
            }
            Err(error) => {
                tracing::warn!(%error, "could not send the to-device probe");
                false
            }
        };
        // The counts come in the probe's transaction, a moment after its to-device event.
        let counted = pushed && {
            let arrived = tokio::time::timeout_at(deadline, counts.wait_for(|s| *s));
            matches!(arrived.await, Ok(Ok(_)))
        };
        self.decided.store(true, Ordering::Relaxed);
        let delivery = if pushed && counted {
            Delivery::Push
        } else {
            Delivery::Sync
        };
        match delivery {
            Delivery::Push => tracing::info!(
                "end-to-end encryption: the homeserver pushes to-device events and device \
                 lists in transactions (MSC2409, MSC3202)"
            ),
            Delivery::Sync => tracing::info!(
                to_device_pushed = pushed,
                "end-to-end encryption: the homeserver does not push to-device events and \
                 device lists (Synapse: experimental_features msc2409_to_device_messages_enabled, \
                 msc3202_transaction_extensions); each open device fetches them with /sync"
            ),
        }
        delivery
    }
}

fn is_probe(json: &str, nonce: &str) -> bool {
    #[derive(Deserialize)]
    struct Event {
        content: Content,
    }
    #[derive(Deserialize)]
    struct Content {
        nonce: String,
    }
    serde_json::from_str::<Event>(json).is_ok_and(|e| e.content.nonce == nonce)
}

async fn send_probe(app: &Appservice, bot: &Machine, nonce: &str) -> Result<()> {
    let content = Raw::from_json(serde_json::value::to_raw_value(
        &serde_json::json!({ "nonce": nonce }),
    )?);
    let devices = BTreeMap::from([(
        DeviceIdOrAllDevices::DeviceId(bot.device_id().to_owned()),
        content,
    )]);
    let messages = BTreeMap::from([(bot.user_id().to_owned(), devices)]);
    let request = send_event_to_device::v3::Request::new_raw(
        PROBE_TYPE.into(),
        TransactionId::new(),
        messages,
    );
    let mut identity = trestle::ruma::api::AppserviceUserIdentity::new(bot.user_id());
    identity.device_id = Some(bot.device_id());
    app.client().send(request, identity).await?;
    Ok(())
}

/// What the last start of an appservice found out, as recorded in its crypto directory (see
/// [`recorded`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recorded {
    /// How to-device events and device lists reach the devices.
    pub delivery: Delivery,
    /// When it was found out, in seconds since the Unix epoch.
    pub at: u64,
    /// With [`Delivery::Sync`]: whether the homeserver lets the bot, the appservice's own
    /// user, `/sync` (Synapse does not); `None` until its first `/sync` answered.
    #[serde(default)]
    pub bot_syncs: Option<bool>,
}

/// Records `delivery` in `dir` for `trestle check`. A failure only loses that report.
pub(crate) fn record(dir: &Path, delivery: Delivery) {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    write(
        dir,
        &Recorded {
            delivery,
            at,
            bot_syncs: None,
        },
    );
}

/// Records whether the bot's `/sync` works.
pub(crate) fn record_bot_sync(dir: &Path, works: bool) {
    if let Some(mut recorded) = recorded(dir) {
        recorded.bot_syncs = Some(works);
        write(dir, &recorded);
    }
}

fn write(dir: &Path, recorded: &Recorded) {
    let json = serde_json::to_vec(recorded).unwrap_or_default();
    if let Err(error) = std::fs::write(dir.join(RECORD), json) {
        tracing::warn!(%error, "could not record how encryption receives its events");
    }
}

/// How the appservice whose crypto state is in `dir` found at its last start that to-device
/// events and device lists reach it; `None` before its first start.
pub fn recorded(dir: &Path) -> Option<Recorded> {
    let bytes = std::fs::read(dir.join(RECORD)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_probe_with_this_nonce_counts() {
        let event = |nonce: &str| {
            serde_json::json!({"type": PROBE_TYPE, "sender": "@b:x", "content": {"nonce": nonce}})
                .to_string()
        };
        assert!(is_probe(&event("n1"), "n1"));
        assert!(!is_probe(&event("n0"), "n1"));
        assert!(!is_probe("{\"content\": {}}", "n1"));
    }

    #[test]
    fn the_choice_is_recorded_for_the_check() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()), None);
        record(dir.path(), Delivery::Sync);
        let found = recorded(dir.path()).unwrap();
        assert_eq!(found.delivery, Delivery::Sync);
        assert!(found.at > 1_700_000_000);
        assert_eq!(found.bot_syncs, None);
        record_bot_sync(dir.path(), false);
        assert_eq!(recorded(dir.path()).unwrap().bot_syncs, Some(false));
    }
}
