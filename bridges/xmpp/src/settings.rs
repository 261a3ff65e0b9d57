//! The bridge's settings.

use std::path::PathBuf;

use serde::Deserialize;
use tokio_xmpp::jid::{BareJid, FullJid};

/// The XMPP bridge's settings. Without `server` (or without a secret) the bridge runs and
/// bridges nothing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The XMPP server's component port (XEP-0114), as `host:port`.
    pub server: Option<String>,
    /// The component's domain, as the server's configuration names it (`Component
    /// "matrix.example.org"`): every Matrix user is `<localpart>@` this domain.
    pub domain: String,
    /// The component secret (`component_secret` in Prosody's configuration).
    pub secret: Option<Secret>,
    /// The nick of the bridge's own occupant in each room, which hears the room for the
    /// portal.
    pub bot_nick: String,
    /// Seconds a Matrix user's messages wait for their JID to be ready at start.
    pub connection_wait: u64,
    /// Seconds to wait before connecting again after the server closed the component's
    /// stream or refused it.
    pub reconnect_delay: u64,
    /// The provisioning API's shared secret (the API is off without one).
    pub provisioning_secret: Option<String>,
    /// Matrix users who may link and unlink any room.
    pub admins: Vec<String>,
    /// Policy lists (room ids or aliases) the bridge follows: Matrix users they ban are not
    /// bridged.
    pub policy_lists: Vec<String>,
    /// Whether a message the server took is marked read by the bot and gets a
    /// `com.beeper.message_send_status` event.
    pub delivery_status: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            domain: "matrix.localhost".to_owned(),
            secret: None,
            bot_nick: "Matrix".to_owned(),
            connection_wait: 30,
            reconnect_delay: 5,
            provisioning_secret: None,
            admins: Vec::new(),
            policy_lists: Vec::new(),
            delivery_status: true,
        }
    }
}

/// A secret: inline, from an environment variable, or from a file (whose trailing newline is
/// dropped), the forms the host takes for its own secrets.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// `value`
    Inline(String),
    /// `{env: NAME}`
    Env {
        /// The variable.
        env: String,
    },
    /// `{file: PATH}`
    File {
        /// The file, relative to the directory the host runs in unless absolute.
        file: PathBuf,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: the settings are logged when they are wrong.
        match self {
            Secret::Inline(_) => f.write_str("Secret(<inline>)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

impl Secret {
    /// The secret's value, or why it cannot be read.
    pub fn reveal(&self) -> Result<String, String> {
        match self {
            Secret::Inline(value) => Ok(value.clone()),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))
            }
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("{}: {e}", file.display())),
        }
    }
}

/// Settings checked, with the secret read: what the bridge runs on.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The settings as given.
    pub settings: Settings,
    /// Where to connect and with what secret, when the bridge is configured.
    pub component: Option<ComponentConfig>,
    /// The bridge's own JID (the domain's, with a resource), which hears the rooms.
    pub bot: FullJid,
}

/// How the component connects.
#[derive(Clone)]
pub struct ComponentConfig {
    /// `host:port` of the server's component listener.
    pub server: String,
    /// The component's domain.
    pub domain: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for ComponentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentConfig")
            .field("server", &self.server)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Checks the settings and reads the secret; the error says which field is wrong and why.
    pub fn check(self) -> Result<Checked, String> {
        let bot = BareJid::new(&self.domain)
            .ok()
            .filter(|jid| jid.node().is_none())
            .and_then(|jid| jid.with_resource_str("bridge").ok())
            .ok_or_else(|| format!("domain: {:?} is not a domain", self.domain))?;
        if self.bot_nick.trim().is_empty() {
            return Err("bot_nick: must not be empty".to_owned());
        }
        let component = match (&self.server, &self.secret) {
            (None, None) => None,
            (Some(_), None) => return Err("server is set but secret is not".to_owned()),
            (None, Some(_)) => return Err("secret is set but server is not".to_owned()),
            (Some(server), Some(secret)) => {
                let Some((host, port)) = server.rsplit_once(':') else {
                    return Err(format!("server: {server:?} is not host:port"));
                };
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(format!("server: {server:?} is not host:port"));
                }
                let secret = secret.reveal().map_err(|e| format!("secret: {e}"))?;
                Some(ComponentConfig {
                    server: server.clone(),
                    domain: self.domain.clone(),
                    secret,
                })
            }
        };
        Ok(Checked {
            settings: self,
            component,
            bot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_secret_go_together_and_are_checked() {
        assert!(Settings::default().check().unwrap().component.is_none());
        let user = Settings {
            domain: "user@example.org".into(),
            ..Settings::default()
        };
        assert!(user.check().unwrap_err().contains("not a domain"));
        let half = Settings {
            server: Some("localhost:5347".into()),
            ..Settings::default()
        };
        assert!(half.check().unwrap_err().contains("secret is not"));
        let bad = Settings {
            server: Some("localhost".into()),
            secret: Some(Secret::Inline("s".into())),
            ..Settings::default()
        };
        assert!(bad.check().unwrap_err().contains("host:port"));
        let env = Settings {
            server: Some("localhost:5347".into()),
            secret: Some(Secret::Env {
                env: "TRESTLE_XMPP_TEST_UNSET_VARIABLE".into(),
            }),
            ..Settings::default()
        };
        assert!(env.check().unwrap_err().contains("is not set"));
        let good = Settings {
            server: Some("localhost:5347".into()),
            secret: Some(Secret::Inline("s3cret".into())),
            ..Settings::default()
        };
        let component = good.check().unwrap().component.unwrap();
        assert_eq!(component.secret, "s3cret");
        assert!(!format!("{component:?}").contains("s3cret"));
    }
}
