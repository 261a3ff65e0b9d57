//! The bridge's settings.

use std::path::Path;

use reqwest::Url;
use serde::Deserialize;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use trestle::plugin::Secret;
use trestle_bridge::BridgeConfig;

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
    /// The component secret (`component_secret` in Prosody's configuration): inline,
    /// `{env: NAME}` or `{file: PATH}`, as the host takes its own secrets.
    pub secret: Option<Secret>,
    /// The nick of the bridge's own occupant in each room, which hears the room for the
    /// portal.
    pub bot_nick: String,
    /// Seconds to wait before connecting again after the server closed the component's
    /// stream or refused it.
    pub reconnect_delay: u64,
    /// The JID of the server's HTTP upload service ([XEP-0363](https://xmpp.org/extensions/xep-0363.html)),
    /// through which files from Matrix are shared. Unset: looked for among the items of the
    /// server's domain (the component's domain less its first label); none found, files are
    /// sent as the kit's media links.
    pub upload_service: Option<String>,
    /// Where the server's own upload service serves its files (the start of their URLs, as
    /// `http://localhost:5280/file_share/`): files from XMPP under it are fetched even from a
    /// loopback or private address. Files anywhere else are fetched only from public
    /// addresses.
    pub upload_url: Option<String>,
    /// The XMPP server's client port (`host:port`), for Matrix users who log in with their own
    /// XMPP account (`login <jid> <password>`): the bridge keeps a client connection for each,
    /// over plain TCP (no TLS stack is built in), so the server must allow unencrypted client
    /// streams there; keep it on loopback or a private network. Unset: such logins are
    /// refused.
    pub client_server: Option<String>,
    /// Presence both ways: occupants' availability and status as their ghosts' Matrix
    /// presence, Matrix users' presence as their occupants'. Off by default (the homeserver
    /// must have presence on, and it is much traffic).
    pub presence: bool,
    /// The bridge kit's settings (relay, provisioning, admins, policy lists, how long a
    /// user's messages wait for their JID, media links, delivery status, bridge state).
    pub bridge: BridgeConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            domain: "matrix.localhost".to_owned(),
            secret: None,
            bot_nick: "Matrix".to_owned(),
            reconnect_delay: 5,
            upload_service: None,
            upload_url: None,
            client_server: None,
            presence: false,
            bridge: BridgeConfig::default(),
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
    /// [`Settings::upload_service`], read; the error says why it is no JID.
    pub fn upload_service(&self) -> Result<Option<Jid>, String> {
        self.upload_service
            .as_deref()
            .map(|jid| {
                Jid::new(jid).map_err(|e| format!("upload_service: {jid:?} is not a JID: {e}"))
            })
            .transpose()
    }

    /// [`Settings::upload_url`], read; the error says why it is no http(s) URL.
    pub fn upload_url(&self) -> Result<Option<Url>, String> {
        let Some(url) = self.upload_url.as_deref() else {
            return Ok(None);
        };
        let parsed = Url::parse(url).map_err(|e| format!("upload_url: {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("upload_url: {url:?} is not an http(s) URL"));
        }
        Ok(Some(parsed))
    }

    /// Checks the settings and reads the secret (a file relative to the configuration file
    /// `config`); the error says which field is wrong and why.
    pub fn check(self, config: &Path) -> Result<Checked, String> {
        let bot = BareJid::new(&self.domain)
            .ok()
            .filter(|jid| jid.node().is_none())
            .and_then(|jid| jid.with_resource_str("bridge").ok())
            .ok_or_else(|| format!("domain: {:?} is not a domain", self.domain))?;
        if self.bot_nick.trim().is_empty() {
            return Err("bot_nick: must not be empty".to_owned());
        }
        self.upload_service()?;
        self.upload_url()?;
        if let Some(address) = &self.client_server {
            host_port("client_server", address)?;
        }
        let component = match (&self.server, &self.secret) {
            (None, None) => None,
            (Some(_), None) => return Err("server is set but secret is not".to_owned()),
            (None, Some(_)) => return Err("secret is set but server is not".to_owned()),
            (Some(server), Some(secret)) => {
                host_port("server", server)?;
                let secret = secret.reveal(config, "secret").map_err(|e| e.to_string())?;
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

/// Checks that the field `field` is `host:port`.
fn host_port(field: &str, address: &str) -> Result<(), String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{field}: {address:?} is not host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_secret_go_together_and_are_checked() {
        assert!(
            Settings::default()
                .check(Path::new("trestle.yaml"))
                .unwrap()
                .component
                .is_none()
        );
        let user = Settings {
            domain: "user@example.org".into(),
            ..Settings::default()
        };
        assert!(
            user.check(Path::new("trestle.yaml"))
                .unwrap_err()
                .contains("not a domain")
        );
        let half = Settings {
            server: Some("localhost:5347".into()),
            ..Settings::default()
        };
        assert!(
            half.check(Path::new("trestle.yaml"))
                .unwrap_err()
                .contains("secret is not")
        );
        let bad = Settings {
            server: Some("localhost".into()),
            secret: Some(Secret::Inline("s".into())),
            ..Settings::default()
        };
        assert!(
            bad.check(Path::new("trestle.yaml"))
                .unwrap_err()
                .contains("host:port")
        );
        let client = Settings {
            client_server: Some("localhost".into()),
            ..Settings::default()
        };
        assert!(
            client
                .check(Path::new("trestle.yaml"))
                .unwrap_err()
                .contains("client_server: \"localhost\" is not host:port")
        );
        let env = Settings {
            server: Some("localhost:5347".into()),
            secret: Some(Secret::Env {
                env: "TRESTLE_XMPP_TEST_UNSET_VARIABLE".into(),
            }),
            ..Settings::default()
        };
        assert!(
            env.check(Path::new("trestle.yaml"))
                .unwrap_err()
                .contains("is not set")
        );
        let good = Settings {
            server: Some("localhost:5347".into()),
            secret: Some(Secret::Inline("s3cret".into())),
            ..Settings::default()
        };
        let component = good
            .check(Path::new("trestle.yaml"))
            .unwrap()
            .component
            .unwrap();
        assert_eq!(component.secret, "s3cret");
        assert!(!format!("{component:?}").contains("s3cret"));
        for (service, url, error) in [
            (Some("not a jid@"), None, "upload_service"),
            (None, Some("ftp://localhost/files/"), "not an http(s) URL"),
            (None, Some("/file_share/"), "upload_url"),
        ] {
            let bad = Settings {
                upload_service: service.map(str::to_owned),
                upload_url: url.map(str::to_owned),
                ..Settings::default()
            };
            let refused = bad.check(Path::new("trestle.yaml")).unwrap_err();
            assert!(refused.contains(error), "{refused}");
        }
    }
}
