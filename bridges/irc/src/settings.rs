//! The bridge's settings.

use serde::Deserialize;
use trestle_bridge::MediaLinkConfig;

use crate::irc::naming::Pattern;

/// The IRC bridge's settings. With none, the bridge runs and bridges nothing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The IRC networks to bridge.
    pub networks: Vec<NetworkSettings>,
    /// Portal aliases: `{network}` and `{channel}` (the channel without its `#`).
    pub alias_pattern: String,
    /// Ghosts of IRC users: `{network}` and `{nick}`.
    pub ghost_pattern: String,
    /// Nicks of Matrix users who log in: `{name}` is the display name, sanitised.
    pub nick_pattern: String,
    /// Whether the bot speaks for Matrix users who have no IRC connection of their own.
    pub relay: bool,
    /// Seconds a Matrix user's messages wait for their own connection when it is not there
    /// yet (restored at start, being made): they are never relayed meanwhile, and are told
    /// when it does not come in time.
    pub connection_wait: u64,
    /// Whether channel modes +o/+h/+v give ghosts power levels 50/25/10 in portals.
    pub mode_power_levels: bool,
    /// Links to media for IRC users: signed links the bridge serves itself, which stream the
    /// file from the homeserver on the bot's behalf (see `trestle_bridge::media`). Used unless
    /// `media_url` is set.
    pub media_links: MediaLinkConfig,
    /// An address that serves the homeserver's media without authentication
    /// (`https://matrix.example` for `…/_matrix/client/v1/media/download/…`), for a server or
    /// proxy that does: media are then linked there instead of through `media_links`.
    pub media_url: Option<String>,
    /// A Matrix message of more lines than this goes to IRC as its first line and a link to
    /// the whole text, uploaded to the homeserver's media repository. Off (`None`): every line
    /// is sent.
    pub paste_over_lines: Option<usize>,
    /// The provisioning API's shared secret (the API is off without one).
    pub provisioning_secret: Option<String>,
    /// Matrix users who may link and unlink any room.
    pub admins: Vec<String>,
    /// Policy lists (room ids or aliases) the bridge follows: Matrix users they ban (by a user
    /// rule, or a server rule on their server) are not bridged to IRC. Empty: no checks.
    pub policy_lists: Vec<String>,
    /// Whether a message the IRC server confirmed is marked read by the bot and gets a
    /// `com.beeper.message_send_status` event (and one that failed a status saying why).
    pub delivery_status: bool,
    /// Where changes of the users' connection states are posted as JSON (none when unset).
    pub bridge_state_url: Option<String>,
    /// Milliseconds a connection may be lost before that counts as a change of its state.
    pub bridge_state_debounce_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            networks: Vec::new(),
            alias_pattern: "irc_{network}_{channel}".to_owned(),
            ghost_pattern: "irc_{network}_{nick}".to_owned(),
            nick_pattern: "{name}[m]".to_owned(),
            relay: true,
            connection_wait: 30,
            mode_power_levels: true,
            media_links: MediaLinkConfig::default(),
            media_url: None,
            paste_over_lines: None,
            provisioning_secret: None,
            admins: Vec::new(),
            policy_lists: Vec::new(),
            delivery_status: true,
            bridge_state_url: None,
            bridge_state_debounce_ms: 10_000,
        }
    }
}

/// One IRC network.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// A short name, used in aliases and ghost names (`libera`).
    pub name: String,
    /// The server's host name.
    pub host: String,
    /// The server's port (6667 unless set).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Whether to connect over TLS (off unless set).
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of certificates to trust for TLS besides the system's (a self-signed
    /// server's certificate, or a private CA's).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// The server password (`PASS`).
    #[serde(default)]
    pub password: Option<String>,
    /// SASL PLAIN for the bot.
    #[serde(default)]
    pub sasl_account: Option<String>,
    /// The password of `sasl_account`; set both or neither.
    #[serde(default)]
    pub sasl_password: Option<String>,
    /// The bot's nick.
    #[serde(default = "default_nick")]
    pub nick: String,
    /// Channels the bot joins and bridges from the start.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Flood control: lines at once, then lines per second.
    #[serde(default = "default_burst")]
    pub flood_burst: u32,
    /// Flood control: lines per second once the burst is spent.
    #[serde(default = "default_rate")]
    pub flood_rate: f64,
    /// Whether a Matrix user who joins a portal of this network gets their own IRC connection
    /// (nick from their display name). Off: they are relayed (where relay is on) until they
    /// `login`.
    #[serde(default = "default_true")]
    pub auto_connect: bool,
    /// Seconds after which an automatic connection whose user is in no portal of this network
    /// (channels and direct chats) any more is closed.
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
}

impl NetworkSettings {
    /// A network at `host:port` with the defaults: plain text, nick `trestle`, no channels,
    /// automatic connections for Matrix users.
    pub fn new(name: &str, host: &str, port: u16) -> Self {
        NetworkSettings {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            tls: false,
            tls_ca_file: None,
            password: None,
            sasl_account: None,
            sasl_password: None,
            nick: default_nick(),
            channels: Vec::new(),
            flood_burst: default_burst(),
            flood_rate: default_rate(),
            auto_connect: true,
            idle_timeout: default_idle(),
        }
    }
}

fn default_port() -> u16 {
    6667
}
fn default_nick() -> String {
    "trestle".to_owned()
}
fn default_burst() -> u32 {
    5
}
fn default_rate() -> f64 {
    2.0
}
fn default_true() -> bool {
    true
}
fn default_idle() -> u64 {
    3600
}

/// Settings checked and ready.
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    pub settings: Settings,
    pub aliases: Pattern,
    pub ghosts: Pattern,
}

impl Settings {
    /// Checks the patterns and network names.
    pub(crate) fn check(self) -> Result<Checked, String> {
        let aliases = Pattern::new(&self.alias_pattern, "channel")
            .map_err(|e| format!("alias_pattern: {e}"))?;
        let ghosts =
            Pattern::new(&self.ghost_pattern, "nick").map_err(|e| format!("ghost_pattern: {e}"))?;
        if !self.nick_pattern.contains("{name}") {
            return Err("nick_pattern: must contain {name}".into());
        }
        if self.media_links.lifetime == 0 {
            return Err("media_links.lifetime: must be at least one second".into());
        }
        if let Some(url) = &self.media_links.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "media_links.public_url: expected an http:// or https:// URL, not {url:?}"
            ));
        }
        if let Some(url) = &self.bridge_state_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "bridge_state_url: {url:?} is not an http:// or https:// URL"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for network in &self.networks {
            let ok = !network.name.is_empty()
                && network
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(format!(
                    "networks: the name {:?} may only have a-z, 0-9 and '-'",
                    network.name
                ));
            }
            if !seen.insert(network.name.clone()) {
                return Err(format!("networks: {:?} is listed twice", network.name));
            }
            if let Some(file) = &network.tls_ca_file {
                if !network.tls {
                    return Err(format!(
                        "networks.{}: tls_ca_file is set but tls is not",
                        network.name
                    ));
                }
                if !std::path::Path::new(file).is_file() {
                    return Err(format!(
                        "networks.{}: tls_ca_file {file:?} is not a readable file",
                        network.name
                    ));
                }
            }
            if network.sasl_account.is_some() != network.sasl_password.is_some() {
                return Err(format!(
                    "networks.{}: sasl_account and sasl_password go together",
                    network.name
                ));
            }
        }
        Ok(Checked {
            settings: self,
            aliases,
            ghosts,
        })
    }
}
