//! Bridge state: every login's connection state as the outside sees it, debounced.
//!
//! The network reports each change of a login's connection ([`LoginHandle::set_state`]); the
//! kit records it at once (who speaks for the user depends on it) but *publishes* it only when
//! it is not a blip: a connection lost and back within
//! [`BridgeConfig::bridge_state_debounce_ms`] is no outage. What is published is served as JSON
//! by the provisioning API (`GET /provision/v1/bridge_state`), posted to
//! [`BridgeConfig::bridge_state_url`] (in order, one change per request), counted in
//! `/metrics` (`trestle_bridge_logins{state}`), and told to the user in their management room.
//! The names are mautrix's bridge state names ([`ConnectionState::name`]).
//!
//! [`LoginHandle::set_state`]: super::LoginHandle::set_state
//! [`BridgeConfig::bridge_state_debounce_ms`]: super::BridgeConfig::bridge_state_debounce_ms
//! [`BridgeConfig::bridge_state_url`]: super::BridgeConfig::bridge_state_url

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use trestle::{store::now_ms, sync::MutexExt};

use super::{BridgeHandle, ConnectionState, Network, NetworkResult, login::state_notice};

mod push;

/// The states a login can be in, for the gauges (each is exported, zero or not).
const STATE_NAMES: [&str; 5] = [
    "CONNECTING",
    "CONNECTED",
    "TRANSIENT_DISCONNECT",
    "BAD_CREDENTIALS",
    "LOGGED_OUT",
];

/// One login's published bridge state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeState {
    /// The Matrix user whose login it is.
    pub user: OwnedUserId,
    /// The login's id among the user's logins.
    pub login_id: String,
    /// The state.
    pub state: ConnectionState,
    /// Since when (milliseconds since the Unix epoch).
    pub since_ms: i64,
}

impl BridgeState {
    /// As served and pushed: `{"state_event", "reason", "user_id", "login_id", "timestamp"}`,
    /// the timestamp in seconds (as mautrix's bridge states have it).
    pub fn to_json(&self) -> Value {
        json!({
            "state_event": self.state.name(),
            "reason": self.state.reason(),
            "user_id": self.user,
            "login_id": self.login_id,
            "timestamp": self.since_ms / 1000,
        })
    }
}

struct Entry {
    state: ConnectionState,
    since_ms: i64,
    /// Bumped on every report: a debounced change still waiting publishes only if nothing was
    /// reported after it.
    generation: u64,
    /// A lost connection waits out the debounce.
    lost_pending: bool,
}

impl Entry {
    fn new(state: ConnectionState) -> Self {
        Entry {
            state,
            since_ms: now_ms(),
            generation: 0,
            lost_pending: false,
        }
    }
}

/// Every login's published state, and the pushes' queue.
#[derive(Default)]
pub(crate) struct Board {
    entries: Mutex<HashMap<(OwnedUserId, String), Entry>>,
    pushes: OnceLock<mpsc::UnboundedSender<Value>>,
}

/// What a report leads to.
enum Step {
    Nothing,
    Publish(u64),
    Later(u64),
}

impl<N: Network> BridgeHandle<N> {
    /// Every login's published bridge state (logins nothing was reported for since the start
    /// are as stored), oldest login first, then the bridge's own connections
    /// ([`Self::set_bridge_connection_state`]).
    pub async fn bridge_states(&self) -> NetworkResult<Vec<BridgeState>> {
        let rows = self.store()?.all_logins().await?;
        let entries = self.shared.states.entries.lock_unpoisoned();
        let mut states = Vec::with_capacity(rows.len());
        for row in rows {
            let user = UserId::parse(&row.user_id)?;
            let key = (user, row.login_id);
            let (state, since_ms) = match entries.get(&key) {
                Some(entry) => (entry.state.clone(), entry.since_ms),
                None => (
                    super::login::state_from_row(&row.state, row.state_reason),
                    0,
                ),
            };
            states.push(BridgeState {
                user: key.0,
                login_id: key.1,
                state,
                since_ms,
            });
        }
        let bot = self.app()?.bot_user_id().clone();
        let mut own: Vec<BridgeState> = entries
            .iter()
            .filter(|((user, _), _)| *user == bot)
            .map(|((user, id), entry)| BridgeState {
                user: user.clone(),
                login_id: id.clone(),
                state: entry.state.clone(),
                since_ms: entry.since_ms,
            })
            .collect();
        own.sort_by(|a, b| a.login_id.cmp(&b.login_id));
        states.extend(own);
        Ok(states)
    }

    /// Records the state of a connection of the bridge's own rather than of a user's login (its
    /// bot's connection to one remote network, named `id`): published like a login's, under
    /// the bot's user id, and never told in a management room.
    pub async fn set_bridge_connection_state(
        &self,
        id: &str,
        state: ConnectionState,
    ) -> NetworkResult<()> {
        let bot = self.app()?.bot_user_id().clone();
        self.report_state(&bot, id, state, ConnectionState::Connecting)
            .await;
        Ok(())
    }

    /// A stored login as the bridge starts: its last state until it reports another.
    pub(crate) fn seed_state(&self, user: &UserId, login_id: &str, state: ConnectionState) {
        let mut entries = self.shared.states.entries.lock_unpoisoned();
        entries
            .entry((user.to_owned(), login_id.to_owned()))
            .or_insert_with(|| Entry::new(state));
        self.export_counts(&entries);
    }

    /// A login's connection reported `state`, having been `recorded` as far as the store knew:
    /// published now, or after the debounce when it is a connection lost (and only if nothing
    /// else was reported meanwhile), or not at all when the published state is the same.
    pub(crate) async fn report_state(
        &self,
        user: &UserId,
        login_id: &str,
        state: ConnectionState,
        recorded: ConnectionState,
    ) {
        let debounce = self.config().bridge_state_debounce_ms;
        let step = {
            let mut entries = self.shared.states.entries.lock_unpoisoned();
            let entry = entries
                .entry((user.to_owned(), login_id.to_owned()))
                .or_insert_with(|| Entry::new(recorded));
            let lost = matches!(state, ConnectionState::TransientDisconnect(_));
            if lost && entry.lost_pending {
                // Another failed attempt while the loss waits out the debounce: it still
                // counts from the first.
                Step::Nothing
            } else {
                entry.generation += 1;
                entry.lost_pending = false;
                if entry.state.name() == state.name() {
                    Step::Nothing
                } else if lost && entry.state == ConnectionState::Connected && debounce > 0 {
                    entry.lost_pending = true;
                    Step::Later(entry.generation)
                } else {
                    Step::Publish(entry.generation)
                }
            }
        };
        match step {
            Step::Nothing => {}
            Step::Publish(generation) => self.publish(user, login_id, state, generation).await,
            Step::Later(generation) => {
                let bridge = self.clone();
                let (user, login_id) = (user.to_owned(), login_id.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(debounce)).await;
                    bridge.publish(&user, &login_id, state, generation).await;
                });
            }
        }
    }

    /// Whether the login's published state is a connection lost (an outage, not a blip still
    /// waiting out the debounce).
    pub(crate) fn outage_published(&self, user: &UserId, login_id: &str) -> bool {
        let entries = self.shared.states.entries.lock_unpoisoned();
        entries
            .get(&(user.to_owned(), login_id.to_owned()))
            .is_some_and(|entry| {
                matches!(
                    entry.state,
                    ConnectionState::TransientDisconnect(_) | ConnectionState::BadCredentials(_)
                )
            })
    }

    /// A login that is not kept (its first connection failed): forgotten without a word.
    pub(crate) fn forget_state(&self, user: &UserId, login_id: &str) {
        let mut entries = self.shared.states.entries.lock_unpoisoned();
        entries.remove(&(user.to_owned(), login_id.to_owned()));
        self.export_counts(&entries);
    }

    /// A login was logged out: `LOGGED_OUT` is published and it is forgotten.
    pub(crate) async fn logged_out(&self, user: &UserId, login_id: &str) {
        let generation = {
            let mut entries = self.shared.states.entries.lock_unpoisoned();
            let entry = entries
                .entry((user.to_owned(), login_id.to_owned()))
                .or_insert_with(|| Entry::new(ConnectionState::Connecting));
            entry.generation += 1;
            entry.lost_pending = false;
            entry.generation
        };
        self.publish(user, login_id, ConnectionState::LoggedOut, generation)
            .await;
        let mut entries = self.shared.states.entries.lock_unpoisoned();
        entries.remove(&(user.to_owned(), login_id.to_owned()));
        self.export_counts(&entries);
    }

    /// Publishes `state` unless something was reported after it (`generation`): served,
    /// counted, pushed, told.
    async fn publish(
        &self,
        user: &UserId,
        login_id: &str,
        state: ConnectionState,
        generation: u64,
    ) {
        let since_ms = now_ms();
        let previous = {
            let mut entries = self.shared.states.entries.lock_unpoisoned();
            let Some(entry) = entries.get_mut(&(user.to_owned(), login_id.to_owned())) else {
                return;
            };
            if entry.generation != generation {
                return;
            }
            entry.lost_pending = false;
            let previous = std::mem::replace(&mut entry.state, state.clone());
            entry.since_ms = since_ms;
            self.export_counts(&entries);
            previous
        };
        tracing::info!(%user, login_id, from = previous.name(), to = state.name(), "bridge state changed");
        let published = BridgeState {
            user: user.to_owned(),
            login_id: login_id.to_owned(),
            state: state.clone(),
            since_ms,
        };
        self.push_state(published.to_json());
        self.tell_state(user, login_id, previous.name(), &state)
            .await;
    }

    /// Tells the user of a published change in their management room, where it is news.
    async fn tell_state(
        &self,
        user: &UserId,
        login_id: &str,
        previous: &str,
        state: &ConnectionState,
    ) {
        // The bridge's own connections are told where they matter (a bridge's portals), not
        // in a management room of the bot's.
        if self.app().is_ok_and(|app| app.bot_user_id() == user) {
            return;
        }
        let first_of_automatic = *state == ConnectionState::Connected
            && self
                .shared
                .quiet
                .lock_unpoisoned()
                .remove(&(user.to_owned(), login_id.to_owned()));
        if first_of_automatic {
            return;
        }
        // The state is published either way; a notice that cannot be sent is only logged.
        if let Some(text) = state_notice(login_id, previous, state)
            && let Err(error) = self.notify(user, &text).await
        {
            tracing::warn!(%user, login_id, %error, "could not tell the user of a state change");
        }
    }

    /// Sets the gauges: how many logins are in each state.
    fn export_counts(&self, entries: &HashMap<(OwnedUserId, String), Entry>) {
        let Ok(app) = self.app() else { return };
        for name in STATE_NAMES {
            let count = entries.values().filter(|e| e.state.name() == name).count();
            app.set_gauge(
                "trestle_bridge_logins",
                "Bridge logins by bridge state (debounced: a blip is not counted).",
                &[("state", name)],
                count as f64,
            );
        }
    }
}
