//! History: what a chat said before its portal was made, and what the bridge missed while it
//! or a connection was away.
//!
//! Both come from one optional capability, [`Network::fetch_history`]: the messages of a chat
//! before now ([`HistoryAnchor::Latest`]) or after a message ([`HistoryAnchor::After`]),
//! oldest first. They are posted like live messages ([`BridgeHandle::remote_message`]): by
//! their senders' ghosts, with their original timestamps (the appservice `ts` parameter), and
//! once — a remote id the message map has is skipped.
//!
//! - **Fill**: a portal the kit makes gets the chat's last [`BridgeConfig::history_fill`]
//!   messages.
//! - **Catch-up**: the messages after the newest one bridged in the chat, at most
//!   [`BridgeConfig::history_catch_up`] (the newest of them when more were missed): for every
//!   portal when the bridge starts, for the portals a login hears ([`Network::login_hears`])
//!   when its connection is restored at start or comes back after being lost, and for any
//!   chats a network names ([`BridgeHandle::catch_up`], for connections of its own).
//! - **Gap notice**: where the network cannot say what was missed (no history, or fetching
//!   failed), the portal gets a notice from the bot that messages sent meanwhile may be
//!   missing — once: not again until a message was bridged there since. Not for a new login,
//!   nor for a login's connection lost for less than
//!   [`BridgeConfig::bridge_state_debounce_ms`] (the kit's measure of an outage; it is caught
//!   up all the same where the network has history).
//!
//! Order: each chat has a gate. A fill or catch-up closes it before the kit returns to
//! whatever started it (the portal being made, the start of the bridge, the login's state
//! reported), and a live message waits at it, so what was missed is posted before what comes
//! after. A network reports a connection back ([`super::LoginHandle::set_state`]) before it
//! hands the kit that connection's new messages.
//!
//! [`BridgeConfig::history_fill`]: super::BridgeConfig::history_fill
//! [`BridgeConfig::history_catch_up`]: super::BridgeConfig::history_catch_up
//! [`BridgeConfig::bridge_state_debounce_ms`]: super::BridgeConfig::bridge_state_debounce_ms

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::events::room::message::RoomMessageEventContent;
use tokio::sync::OwnedMutexGuard;
use trestle::sync::MutexExt;

use super::{BridgeError, BridgeHandle, Login, Network, NetworkResult, PortalRef, RemoteMessage};

pub(crate) mod store;

/// Where in a chat's history [`Network::fetch_history`] reads.
#[non_exhaustive]
pub enum HistoryAnchor<N: Network> {
    /// The chat's last messages: filling a new portal, or catching up one where nothing was
    /// bridged yet.
    Latest,
    /// The messages after this one (the newest bridged in the chat): catching up.
    After(N::MessageId),
}

/// A request for a chat's history, for [`Network::fetch_history`].
#[non_exhaustive]
pub struct HistoryRequest<'a, N: Network> {
    /// The bridge.
    pub bridge: &'a BridgeHandle<N>,
    /// The chat.
    pub chat: &'a N::ChatId,
    /// Where to read.
    pub anchor: HistoryAnchor<N>,
    /// The most messages wanted: when there are more, the newest of them.
    pub limit: usize,
    /// The login whose connection is back, when the catch-up is for one (with its connection,
    /// if it is live). `None` for a new portal, at the start of the bridge and for
    /// [`BridgeHandle::catch_up`] without a login: a network that can read history only
    /// through a login answers [`BridgeError::Unsupported`] then, and is asked again when a
    /// login of the chat connects.
    pub login: Option<&'a Login<N>>,
    /// That login's live connection.
    pub connection: Option<&'a N::Connection>,
}

/// How many chats one catch-up reads and posts at a time.
const CATCH_UP_AT_ONCE: usize = 4;

/// Each chat's gate: held while its history is posted, and by each live message of it.
#[derive(Default)]
pub(crate) struct Gates(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Gates {
    /// `chat`'s gate. Every chat that ever spoke gets one: those nobody holds or waits for
    /// (the map's is the only reference) go now and then, so the map follows the chats in use.
    fn of(&self, chat: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.0.lock_unpoisoned();
        if gates.len() >= 256 && gates.len().is_power_of_two() {
            gates.retain(|_, gate| Arc::strong_count(gate) > 1);
        }
        gates.entry(chat).or_default().clone()
    }
}

/// A chat's gate, closed.
pub(crate) type Gate = OwnedMutexGuard<()>;

/// A catch-up about to run: the portal, its gate closed.
type Pending<N> = (PortalRef<N>, Gate);

impl<N: Network> BridgeHandle<N> {
    /// Closes `chat`'s gate, once what holds it now is done.
    pub(crate) async fn close_gate(&self, chat: &N::ChatId) -> Gate {
        self.shared.gates.of(chat.to_string()).lock_owned().await
    }

    /// A portal was just made (its gate closed as `gate`): its last messages are filled in,
    /// in the background; the gate opens when they are posted.
    pub(crate) fn fill_new_portal(&self, portal: PortalRef<N>, gate: Gate) {
        let limit = self.config().history_fill;
        if limit == 0 {
            return;
        }
        let bridge = self.clone();
        tokio::spawn(async move {
            let request = HistoryRequest {
                bridge: &bridge,
                chat: &portal.chat,
                anchor: HistoryAnchor::Latest,
                limit,
                login: None,
                connection: None,
            };
            // Nothing to fill where the network keeps no history: a new portal missed nothing.
            match bridge.network().fetch_history(request).await {
                Ok(Some(messages)) => {
                    if let Err(error) = bridge.post_history(&portal, messages, limit, None).await {
                        tracing::warn!(chat = %portal.chat, %error, "could not fill a new portal");
                    }
                }
                Ok(None) | Err(BridgeError::Unsupported(_)) => {}
                Err(error) => {
                    tracing::warn!(chat = %portal.chat, %error, "could not read a chat's history")
                }
            }
            drop(gate);
        });
    }

    /// Catches up `chats` (those with a portal): what was said there after the newest message
    /// bridged is posted, or, where the network cannot say, the portal is told that messages
    /// may be missing. For a network's connections of its own (a bot's connection that hears
    /// its chats) when one comes back after being lost; the kit catches up logins' chats
    /// itself. `login` is the login whose connection came back, if any.
    ///
    /// Returns once each chat's gate is closed, so the live messages the network hands the kit
    /// after this call are posted after what was missed; the catch-up itself runs in the
    /// background.
    pub async fn catch_up(
        &self,
        chats: Vec<N::ChatId>,
        login: Option<Login<N>>,
    ) -> NetworkResult<()> {
        let pending = self.close_gates(chats).await?;
        self.spawn_catch_up(pending, login, true);
        Ok(())
    }

    /// The bridge starts: every portal is caught up, since the bridge was away; the gates are
    /// closed before this returns.
    pub(crate) async fn start_catch_up(&self) -> NetworkResult<()> {
        let chats = self.portals().await?.into_iter().map(|p| p.chat).collect();
        let pending = self.close_gates(chats).await?;
        self.spawn_catch_up(pending, None, true);
        Ok(())
    }

    /// Closes the gates of the chats that have portals.
    pub(crate) async fn close_gates(
        &self,
        chats: Vec<N::ChatId>,
    ) -> NetworkResult<Vec<Pending<N>>> {
        let mut pending = Vec::new();
        for chat in chats {
            if let Some(portal) = self.portal(&chat).await? {
                let gate = self.close_gate(&chat).await;
                pending.push((portal, gate));
            }
        }
        Ok(pending)
    }

    /// Catches up the gated chats in the background, a few at a time (a bridge with many
    /// portals starting should not hold the last one's live messages behind all the others,
    /// nor ask the network for all at once), opening each gate when its chat is done.
    /// `tell_gap`: whether a chat the network cannot catch up is told.
    pub(crate) fn spawn_catch_up(
        &self,
        pending: Vec<Pending<N>>,
        login: Option<Login<N>>,
        tell_gap: bool,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(CATCH_UP_AT_ONCE));
        let login = login.map(Arc::new);
        for (portal, gate) in pending {
            let (bridge, slots, login) = (self.clone(), slots.clone(), login.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await;
                let login = login.as_deref();
                if let Err(error) = bridge.catch_up_one(&portal, login, tell_gap).await {
                    tracing::warn!(chat = %portal.chat, %error, "could not catch up a chat");
                }
                drop(gate);
            });
        }
    }

    /// The chats a login hears that have portals, their gates closed, for a catch-up.
    pub(crate) async fn close_login_gates(
        &self,
        login: &Login<N>,
    ) -> NetworkResult<Vec<Pending<N>>> {
        let chats = self
            .portals()
            .await?
            .into_iter()
            .map(|p| p.chat)
            .filter(|chat| self.network().login_hears(login, chat))
            .collect();
        self.close_gates(chats).await
    }

    /// Catches up one chat, its gate closed.
    async fn catch_up_one(
        &self,
        portal: &PortalRef<N>,
        login: Option<&Login<N>>,
        tell_gap: bool,
    ) -> NetworkResult<()> {
        let store = self.store()?;
        let chat_key = portal.chat.to_string();
        let (newest, gap_told) = store.history_mark(&chat_key).await?;
        let limit = self.config().history_catch_up;
        let missed = if limit == 0 {
            // Catch-up is off: the portal may miss what was said, and is told so.
            None
        } else {
            let newest: Option<N::MessageId> = newest.and_then(|id| id.parse().ok());
            let (anchor, since) = match newest {
                Some(id) => (HistoryAnchor::After(id), None),
                // Nothing bridged yet: the latest messages, but none from before the portal
                // (a fill would have brought those, if it was on).
                _ => (
                    HistoryAnchor::Latest,
                    store.portal_created_at(&chat_key).await?,
                ),
            };
            let connection = login.and_then(|l| self.connection(&l.user, &l.id));
            let request = HistoryRequest {
                bridge: self,
                chat: &portal.chat,
                anchor,
                limit,
                login,
                connection: connection.as_deref(),
            };
            match self.network().fetch_history(request).await {
                Ok(Some(mut messages)) => {
                    if let Some(since) = since {
                        messages.retain(|m| m.ts.is_none_or(|ts| i64::from(ts.get()) >= since));
                    }
                    Some(messages)
                }
                Ok(None) => None,
                // Not without a login: asked again when one connects.
                Err(BridgeError::Unsupported(_)) => return Ok(()),
                Err(error) => {
                    tracing::warn!(chat = %portal.chat, %error, "could not read what was missed");
                    None
                }
            }
        };
        match missed {
            Some(messages) => self.post_history(portal, messages, limit, login).await,
            None if tell_gap && !gap_told => self.tell_gap(portal).await,
            None => Ok(()),
        }
    }

    /// Posts fetched messages in order (the newest `limit` of them), skipping those bridged
    /// already.
    async fn post_history(
        &self,
        portal: &PortalRef<N>,
        mut messages: Vec<RemoteMessage<N>>,
        limit: usize,
        login: Option<&Login<N>>,
    ) -> NetworkResult<()> {
        if messages.len() > limit {
            messages.drain(..messages.len() - limit);
        }
        let count = messages.len();
        for message in messages {
            if message.chat != portal.chat {
                tracing::warn!(chat = %portal.chat, other = %message.chat, "history of another chat; skipped");
                continue;
            }
            self.post_remote(portal, message).await?;
        }
        tracing::info!(chat = %portal.chat, count, login = ?login.map(|l| &l.id), "history posted");
        Ok(())
    }

    /// Tells a portal that messages sent while the bridge was away may be missing.
    async fn tell_gap(&self, portal: &PortalRef<N>) -> NetworkResult<()> {
        let network = self.network().protocol().displayname;
        let text = format!(
            "Messages sent on {network} while the bridge was disconnected may be missing here."
        );
        self.app()?
            .bot()
            .send(
                &portal.room_id,
                &RoomMessageEventContent::notice_plain(text),
            )
            .await?;
        self.store()?
            .history_gap_told(&portal.chat.to_string())
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::Gates;
    use trestle::sync::MutexExt as _;

    #[tokio::test]
    async fn gates_nobody_holds_are_dropped_and_held_ones_kept() {
        let gates = Gates::default();
        let held = gates.of("busy".into()).lock_owned().await;
        for chat in 0..1000 {
            drop(gates.of(chat.to_string()).lock_owned().await);
        }
        let left = gates.0.lock_unpoisoned().len();
        assert!(left < 300, "{left} gates kept for 1,001 chats");
        assert!(gates.0.lock_unpoisoned().contains_key("busy"));
        // The held gate is still the one in the map: a second taker waits for it.
        let again = gates.of("busy".into());
        assert!(again.try_lock().is_err());
        drop(held);
        assert!(again.try_lock().is_ok());
    }
}
