//! Who speaks on the network for a Matrix user in a portal: their own connection, or the
//! relay.
//!
//! A user with a login is never relayed. Their login's connection may not be there yet when
//! their event is handled: the bridge's service restores every stored login at start while
//! the inbox already handles what came meanwhile, and `login` stores a login before it
//! connects. Then the event waits for the connection, and since a room's events are handled
//! one after another, the events after it wait too, so order is kept. The wait is bounded
//! ([`BridgeConfig::connection_wait`](super::BridgeConfig::connection_wait)); past it, or when
//! the login needs the user to log in again, the user is told in the room that the event was
//! not delivered, and why.

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard},
    time::Duration,
};
use trestle::sync::MutexExt;

use ruma::{OwnedUserId, UserId};
use tokio::{sync::watch, time::Instant};
use trestle::transaction::TimelineEvent;

use super::{
    BridgeError, BridgeHandle, ConnectionState, Login, Network, NetworkResult, PortalRef, Via,
    delivery::Outcome,
};

/// Who speaks for a Matrix user in a portal, owned so that a [`Via`] can borrow it.
pub(crate) enum Speaker<N: Network> {
    Puppet(Login<N>, std::sync::Arc<N::Connection>),
    Relay(String),
}

impl<N: Network> Speaker<N> {
    pub(crate) fn via(&self) -> Via<'_, N> {
        match self {
            Speaker::Puppet(login, connection) => Via::Puppet {
                login,
                connection: connection.as_ref(),
            },
            Speaker::Relay(name) => Via::Relay { name: name.clone() },
        }
    }
}

/// What events waiting for a login's connection watch.
#[derive(Default)]
pub(crate) struct Waits {
    /// Bumped whenever a connection comes or goes or a login changes: waiting events look
    /// again.
    changed: watch::Sender<u64>,
    /// Logins (user, login id) whose connection an event waited for in vain: later events
    /// fail at once instead of holding up their rooms again, until the connection is there
    /// or the user logs in anew.
    given_up: Mutex<HashSet<(OwnedUserId, String)>>,
}

impl Waits {
    fn given_up(&self) -> MutexGuard<'_, HashSet<(OwnedUserId, String)>> {
        self.given_up.lock_unpoisoned()
    }
}

/// What a user's logins allow in a portal now.
enum Choice<N: Network> {
    /// A connection of theirs speaks.
    Speak(Speaker<N>),
    /// Logins of theirs that cover the chat, whose connections are not there yet.
    Wait(Vec<String>),
    /// Their logins that cover the chat cannot speak: why, for them (`Retriable` when it
    /// may pass).
    Fail(BridgeError),
    /// No login of theirs covers the chat.
    NoLogin,
}

impl<N: Network> BridgeHandle<N> {
    /// Wakes the events waiting for a connection, to look again.
    pub(crate) fn connections_changed(&self) {
        self.shared
            .waits
            .changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A login's connection is there, or the user logs in anew: their events wait for it
    /// again when it is missing.
    pub(crate) fn expect_connection(&self, user: &UserId, login_id: &str) {
        self.shared
            .waits
            .given_up()
            .remove(&(user.to_owned(), login_id.to_owned()));
        self.connections_changed();
    }

    /// Who speaks for the sender of `event` in `portal`: their first connected login that
    /// covers the chat (waited for while not there yet), else the relay if the portal has it
    /// on and they have no such login. When their login cannot speak, they are told in the
    /// room, in a notice replying to the event, and nobody speaks (`None`).
    pub(crate) async fn speaker_for(
        &self,
        portal: &PortalRef<N>,
        event: &TimelineEvent,
    ) -> NetworkResult<Option<Speaker<N>>> {
        match self.speaker(portal, &event.sender).await {
            Err(error) => match Outcome::of(&error) {
                Some((outcome, reason)) => {
                    self.not_delivered(portal, &event.event_id, reason, outcome)
                        .await;
                    Ok(None)
                }
                None => Err(error),
            },
            other => other,
        }
    }

    /// As [`Self::speaker_for`], without waiting and without telling: for what is worth
    /// nothing late (typing, read receipts). Without `relay`, only the sender's own login
    /// speaks: for what the relay cannot say for anyone (that they read something).
    pub(crate) async fn speaker_now(
        &self,
        portal: &PortalRef<N>,
        sender: &UserId,
        relay: bool,
    ) -> NetworkResult<Option<Speaker<N>>> {
        Ok(match self.choose(portal, sender).await? {
            Choice::Speak(speaker) => Some(speaker),
            Choice::NoLogin if relay => self.relay(portal, sender).await,
            Choice::NoLogin | Choice::Wait(_) | Choice::Fail(_) => None,
        })
    }

    /// Who speaks for `sender`, waiting up to `connection_wait` for a connection of theirs
    /// that is not there yet. `Err(Remote)` or `Err(Retriable)`: their login cannot speak,
    /// and why.
    async fn speaker(
        &self,
        portal: &PortalRef<N>,
        sender: &UserId,
    ) -> NetworkResult<Option<Speaker<N>>> {
        let app = self.app()?;
        let mut deadline = None;
        loop {
            // Watched before looking, so that a change in between is not missed.
            let mut changed = self.shared.waits.changed.subscribe();
            let waiting = match self.choose(portal, sender).await? {
                Choice::Speak(speaker) => return Ok(Some(speaker)),
                Choice::NoLogin => return Ok(self.relay(portal, sender).await),
                Choice::Fail(failure) => return Err(failure),
                Choice::Wait(logins) => logins,
            };
            let wait = Duration::from_secs(self.config().connection_wait);
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep_until(deadline) => self.give_up(sender, waiting),
                () = app.stopping() => {
                    // Stopping closes the connections. Never finishing, the event is not
                    // marked done (the stop gives up on it after its grace for unfinished
                    // work): the next start handles it again, and waits for the connection
                    // restored there.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    fn give_up(&self, user: &UserId, logins: Vec<String>) {
        tracing::info!(%user, ?logins, "their connection did not come in time; not delivered");
        self.shared
            .waits
            .given_up()
            .extend(logins.into_iter().map(|id| (user.to_owned(), id)));
        self.connections_changed();
    }

    async fn relay(&self, portal: &PortalRef<N>, sender: &UserId) -> Option<Speaker<N>> {
        if !portal.relay {
            return None;
        }
        Some(Speaker::Relay(
            self.display_name(&portal.room_id, sender).await,
        ))
    }

    async fn choose(&self, portal: &PortalRef<N>, sender: &UserId) -> NetworkResult<Choice<N>> {
        let mut waiting = Vec::new();
        let mut failure = None;
        for login in self.logins(sender).await? {
            if login.state == ConnectionState::LoggedOut
                || !self.network().login_covers(&login, &portal.chat)
            {
                continue;
            }
            if let ConnectionState::BadCredentials(reason) = &login.state {
                failure.get_or_insert_with(|| {
                    BridgeError::Remote(format!(
                        "your login {} was disconnected ({reason}); log in again to reconnect",
                        login.id
                    ))
                });
                continue;
            }
            // A connection that is down for a while still speaks: the network may hold
            // messages until it is back.
            if let Some(connection) = self.connection(sender, &login.id) {
                return Ok(Choice::Speak(Speaker::Puppet(login, connection)));
            }
            let key = (sender.to_owned(), login.id.clone());
            if self.shared.waits.given_up().contains(&key) {
                let why = match &login.state {
                    ConnectionState::TransientDisconnect(reason) => format!(" ({reason})"),
                    _ => String::new(),
                };
                failure.get_or_insert_with(|| {
                    BridgeError::Retriable(format!(
                        "your own connection ({}) is not back yet{why}; send it again in a while",
                        login.id
                    ))
                });
                continue;
            }
            waiting.push(login.id);
        }
        Ok(match failure {
            _ if !waiting.is_empty() => Choice::Wait(waiting),
            Some(failure) => Choice::Fail(failure),
            None => Choice::NoLogin,
        })
    }
}
