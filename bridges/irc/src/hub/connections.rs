//! Our connections: each network's bot, the Matrix users' puppets, the nicks they hold or
//! asked for, and the state of the bots as reported.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering},
};

use trestle_bridge::{BridgeError, NetworkResult};

use super::{Hub, lock};
use crate::irc::{connection::Client, naming::irc_lowercase};

/// The live puppet connections by a number of their own: network, Matrix user, client.
pub(super) type Registry = Arc<Mutex<HashMap<u64, (String, String, Client)>>>;

/// A Matrix user's own IRC connection.
pub struct Puppet {
    /// The connection.
    pub client: Client,
    task: tokio::task::JoinHandle<()>,
    registry: Registry,
    id: u64,
}

impl Drop for Puppet {
    fn drop(&mut self) {
        self.task.abort();
        lock(&self.registry).remove(&self.id);
    }
}

/// Where a bot connection is, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum BotState {
    /// Not registered yet since the bridge started: nothing to report.
    #[default]
    Starting,
    Up,
    Down,
}

/// Each network's bot state.
#[derive(Default)]
pub(crate) struct BotStates(HashMap<String, BotState>);

impl BotStates {
    /// Records a new state; returns the previous one.
    pub(crate) fn set(&mut self, network: &str, state: BotState) -> BotState {
        self.0.insert(network.to_owned(), state).unwrap_or_default()
    }
}

impl Hub {
    /// Counts a leave of a portal by a Matrix user on a network; returns the count.
    pub(crate) fn count_leave(&self, network: &str, user: &str) -> u64 {
        let mut leaves = lock(&self.leaves);
        let count = leaves
            .entry((network.to_owned(), user.to_owned()))
            .or_default();
        *count += 1;
        *count
    }

    /// Whether no leave was counted since `count`.
    pub(crate) fn last_leave(&self, network: &str, user: &str, count: u64) -> bool {
        lock(&self.leaves).get(&(network.to_owned(), user.to_owned())) == Some(&count)
    }

    pub(crate) fn set_bot(&self, network: &str, client: Client) {
        lock(&self.bots).insert(network.to_owned(), client);
    }

    pub(crate) fn bot(&self, network: &str) -> NetworkResult<Client> {
        lock(&self.bots)
            .get(network)
            .cloned()
            .ok_or_else(|| BridgeError::NoPortal(format!("no IRC network {network:?}")))
    }

    /// Registers a Matrix user's new connection, known as ours from now on (before the bot
    /// can hear it join, so it never gets a ghost); returns its number for [`Hub::puppet`].
    pub(crate) fn add_puppet(&self, network: &str, user: &str, client: Client) -> u64 {
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.puppets).insert(id, (network.to_owned(), user.to_owned(), client));
        id
    }

    /// The puppet for a connection registered as `id`, with the task bridging its events;
    /// dropping it stops the task and forgets the connection.
    pub(crate) fn puppet(
        &self,
        id: u64,
        client: Client,
        task: tokio::task::JoinHandle<()>,
    ) -> Puppet {
        Puppet {
            client,
            task,
            registry: self.puppets.clone(),
            id,
        }
    }

    /// Whether a nick is one of our connections' (the bot's, a puppet's) on a network: their
    /// lines are echoes, and they get no ghosts. Read from the connections themselves, so a
    /// nick that changed (taken at registration, changed later) is always the current one.
    pub(crate) fn is_own_nick(&self, network: &str, nick: &str) -> bool {
        self.nick_owner(network, nick).is_some()
    }

    /// The nicks of our connections on a network: the bot's and the puppets'.
    pub(crate) fn own_nicks(&self, network: &str) -> Vec<String> {
        let mut nicks: Vec<String> = lock(&self.bots)
            .get(network)
            .map(|bot| bot.state().nick)
            .into_iter()
            .collect();
        nicks.extend(
            self.puppets_on(network)
                .into_iter()
                .map(|(_, c)| c.state().nick),
        );
        nicks
    }

    /// The puppet connections on a network, with their Matrix users.
    pub(crate) fn puppets_on(&self, network: &str) -> Vec<(String, Client)> {
        lock(&self.puppets)
            .values()
            .filter(|(n, _, _)| n == network)
            .map(|(_, user, client)| (user.clone(), client.clone()))
            .collect()
    }

    /// Who holds a nick among our connections: `Some("")` for the bot, a Matrix user id for
    /// a puppet.
    pub(crate) fn nick_owner(&self, network: &str, nick: &str) -> Option<String> {
        let nick = irc_lowercase(nick);
        let holds = |client: &Client| irc_lowercase(&client.state().nick) == nick;
        if lock(&self.bots).get(network).is_some_and(holds) {
            return Some(String::new());
        }
        let puppet = lock(&self.puppets)
            .values()
            .find(|(n, _, client)| n == network && holds(client))
            .map(|(_, user, _)| user.clone());
        puppet.or_else(|| {
            lock(&self.pending)
                .get(&(network.to_owned(), nick))
                .cloned()
        })
    }

    /// A nick one of our connections asked for and the server has not confirmed yet: ours
    /// already, so that the bot, hearing the change first, makes no ghost for it.
    pub(crate) fn expect_nick(&self, network: &str, nick: &str, user: &str) {
        lock(&self.pending).insert((network.to_owned(), irc_lowercase(nick)), user.to_owned());
    }

    /// The server answered a user's nick change (took it, or refused it).
    pub(crate) fn settle_nick(&self, network: &str, user: &str) {
        lock(&self.pending).retain(|(n, _), u| !(n == network && u == user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_remember_the_previous_one_per_network() {
        let mut states = BotStates::default();
        assert_eq!(states.set("a", BotState::Up), BotState::Starting);
        assert_eq!(states.set("a", BotState::Down), BotState::Up);
        assert_eq!(states.set("a", BotState::Down), BotState::Down);
        assert_eq!(states.set("b", BotState::Down), BotState::Starting);
        assert_eq!(states.set("a", BotState::Up), BotState::Down);
    }
}
