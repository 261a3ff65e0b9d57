//! Channels as the bot sees them: who is in each, each member's channel modes (from `NAMES`
//! and `MODE`), and each nick's `user@host` (from `JOIN`). What the modes mean (power levels,
//! who may kick, ban masks) is `moderation.rs`'s to say.

use std::collections::HashMap;

use super::{Hub, lock};
use crate::irc::naming::irc_lowercase;

/// Everything keyed by `(network, name)`, the name lower-cased.
#[derive(Default)]
pub(super) struct Channels {
    /// `(network, channel)` → lower-cased nick → nick as written.
    members: HashMap<(String, String), HashMap<String, String>>,
    /// `(network, channel)` → lower-cased nick → mode letters (`o`, `v`, …).
    modes: HashMap<(String, String), HashMap<String, String>>,
    /// `(network, nick)` → `user@host`.
    hosts: HashMap<(String, String), String>,
}

fn key(network: &str, name: &str) -> (String, String) {
    (network.to_owned(), irc_lowercase(name))
}

impl Hub {
    /// The nicks in a channel, as written.
    pub(crate) fn channel_members(&self, network: &str, channel: &str) -> Vec<String> {
        lock(&self.channels)
            .members
            .get(&key(network, channel))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Channels (lower-cased) a nick is in.
    pub(crate) fn channels_of(&self, network: &str, nick: &str) -> Vec<String> {
        let nick = irc_lowercase(nick);
        lock(&self.channels)
            .members
            .iter()
            .filter(|((n, _), members)| n == network && members.contains_key(&nick))
            .map(|((_, c), _)| c.clone())
            .collect()
    }

    /// A nick is in a channel now, or not any more.
    pub(crate) fn set_member(&self, network: &str, channel: &str, nick: &str, present: bool) {
        let mut channels = lock(&self.channels);
        let set = channels.members.entry(key(network, channel)).or_default();
        if present {
            set.insert(irc_lowercase(nick), nick.to_owned());
        } else {
            set.remove(&irc_lowercase(nick));
        }
    }

    /// Someone joined a channel (with no modes yet), from `user@host`.
    pub(crate) fn track_join(&self, network: &str, channel: &str, nick: &str, mask: &str) {
        let mut channels = lock(&self.channels);
        if !mask.is_empty() {
            channels.hosts.insert(key(network, nick), mask.to_owned());
        }
        channels
            .modes
            .entry(key(network, channel))
            .or_default()
            .remove(&irc_lowercase(nick));
    }

    /// A channel's NAMES: each nick with its modes.
    pub(crate) fn track_names(&self, network: &str, channel: &str, names: &[(String, String)]) {
        let mut channels = lock(&self.channels);
        let modes = channels.modes.entry(key(network, channel)).or_default();
        for (nick, letters) in names {
            modes.insert(irc_lowercase(nick), letters.clone());
        }
    }

    /// A prefix mode given or taken.
    pub(crate) fn track_mode(
        &self,
        network: &str,
        channel: &str,
        nick: &str,
        add: bool,
        mode: char,
    ) {
        let mut channels = lock(&self.channels);
        let modes = channels
            .modes
            .entry(key(network, channel))
            .or_default()
            .entry(irc_lowercase(nick))
            .or_default();
        modes.retain(|m| m != mode);
        if add {
            modes.push(mode);
        }
    }

    /// A nick changed: its modes and host follow.
    pub(crate) fn track_nick(&self, network: &str, old: &str, new: &str) {
        let mut channels = lock(&self.channels);
        if let Some(host) = channels.hosts.remove(&key(network, old)) {
            channels.hosts.insert(key(network, new), host);
        }
        for ((n, _), modes) in channels.modes.iter_mut() {
            if n == network
                && let Some(m) = modes.remove(&irc_lowercase(old))
            {
                modes.insert(irc_lowercase(new), m);
            }
        }
    }

    /// A member's mode letters in a channel, if any were seen.
    pub(crate) fn member_modes(&self, network: &str, channel: &str, nick: &str) -> Option<String> {
        lock(&self.channels)
            .modes
            .get(&key(network, channel))
            .and_then(|m| m.get(&irc_lowercase(nick)))
            .cloned()
    }

    /// Every member's mode letters in a channel, by lower-cased nick.
    pub(crate) fn channel_modes(&self, network: &str, channel: &str) -> Vec<(String, String)> {
        lock(&self.channels)
            .modes
            .get(&key(network, channel))
            .map(|m| m.iter().map(|(n, l)| (n.clone(), l.clone())).collect())
            .unwrap_or_default()
    }

    /// A nick's `user@host`, when its join was seen.
    pub(crate) fn host(&self, network: &str, nick: &str) -> Option<String> {
        lock(&self.channels).hosts.get(&key(network, nick)).cloned()
    }
}
