//! The hub: what the bridge's parts share (settings, our connections, what the bot sees of
//! channels, remembered messages), in one struct the kit owns.
//!
//! The hub is the type the kit knows as the network (`network.rs` implements the kit's
//! `Network` trait for it), so a part takes the kit's handle, [`Kit`], and reaches the hub
//! through `kit.network()`: one argument for both, and no part calls back into `network.rs`.
//! The hub does not hold the handle itself: the kit holds the hub, and a handle inside it
//! would keep both alive for ever.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, atomic::AtomicU64},
    time::Duration,
};
use trestle::sync::MutexExt;

use trestle::ruma::{RoomId, UserId};

use trestle_bridge::BridgeHandle;

use crate::{
    irc::connection::{Client, Config},
    settings::{Checked, NetworkSettings},
};

mod channels;
mod connections;
mod recent;

pub use connections::Puppet;
pub(crate) use connections::{BotState, BotStates};

/// The kit's handle, as every part takes it.
pub type Kit = BridgeHandle<Hub>;

/// What the parts of the bridge share.
pub struct Hub {
    /// The checked settings.
    pub(crate) cfg: Checked,
    /// Each network's bot connection.
    bots: Mutex<HashMap<String, Client>>,
    /// The live puppet connections, whose lines the bots hear as echoes.
    puppets: connections::Registry,
    /// Whether each network's bot is connected, as reported in its portals.
    pub(crate) bot_states: Mutex<BotStates>,
    /// Nicks asked for by puppets and not confirmed yet: `(network, nick)` → Matrix user.
    pending: Mutex<HashMap<(String, String), String>>,
    /// Per network and Matrix user, how many times they left a portal: an idle timer acts only
    /// if no leave came after the one that started it.
    leaves: Mutex<HashMap<(String, String), u64>>,
    /// Who is in which channel with which modes, and users' hosts, as the bot sees them.
    channels: Mutex<channels::Channels>,
    /// Messages sent and received, for reply quotes and edit corrections.
    recent: Mutex<recent::Recent>,
    /// Numbers message ids and puppet connections.
    seq: AtomicU64,
}

impl Hub {
    pub(crate) fn new(cfg: Checked) -> Self {
        Hub {
            cfg,
            bots: Mutex::default(),
            puppets: connections::Registry::default(),
            leaves: Mutex::default(),
            bot_states: Mutex::default(),
            pending: Mutex::default(),
            channels: Mutex::default(),
            recent: Mutex::default(),
            seq: AtomicU64::new(0),
        }
    }

    /// The settings of a network, by name.
    pub(crate) fn network_settings(&self, name: &str) -> Option<&NetworkSettings> {
        self.cfg.settings.networks.iter().find(|n| n.name == name)
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves data that is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock_unpoisoned()
}

/// A connection's configuration from a network's settings.
pub(crate) fn client_config(network: &NetworkSettings, nick: &str) -> Config {
    let mut config = Config::new(&network.host, network.port, nick);
    config.tls = network.tls;
    config.tls_ca_file = network.tls_ca_file.as_ref().map(Into::into);
    config.password = network.password.clone();
    config.flood_burst = network.flood_burst;
    config.flood_rate = network.flood_rate;
    config.reconnect_max = Duration::from_secs(120);
    config
}

/// Whether `user` is joined to `room`, as the bot sees it (`false` when it cannot tell).
pub(crate) async fn is_member(kit: &Kit, room: &RoomId, user: &UserId) -> bool {
    kit.member_content(room, user)
        .await
        .is_some_and(|content| content["membership"] == "join")
}
