//! The host's configuration file: one YAML file for the homeserver, the database, the
//! listener, logging, metrics, and a section per plugin.
//!
//! Errors name the file, the line and the field, and say what was expected. Secrets (the
//! database URL, say) can be given as `{env: NAME}` or `{file: PATH}` instead of inline.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use trestle::{
    Error, Plugin, Result, Role, encryption::EncryptionOptions, plugin::PluginSettings,
    store::Durability,
};

mod runtime;

pub use runtime::RuntimeConfig;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Where the homeserver is.
    pub homeserver: HomeserverConfig,
    /// The address the appservices listen on, all plugins on one listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How the homeserver reaches the listener; each plugin is under `<public_url>/<plugin>`.
    /// Defaults to `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Where SQLite databases (one per plugin) and registration files live, relative to the
    /// configuration file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL to use instead of SQLite; each plugin gets its own schema.
    #[serde(default)]
    pub database: Option<Secret>,
    /// `os-cache` (the default) or `disk`: whether a transaction is synced to disk before the
    /// homeserver is answered, on SQLite (see [`Durability`] and `docs/durability.md`).
    #[serde(default)]
    pub durability: Durability,
    /// Events handed to a plugin's handlers and not yet handled past which its next
    /// transaction waits (at most 10 s), so that a burst waits in the homeserver's queue
    /// rather than behind the handlers; `trestle::DEFAULT_MAX_IN_FLIGHT` unless set.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// What this process does where several share the PostgreSQL `database`: `all` (the
    /// default), `matrix` (transactions and handlers) or `connections` (services); see
    /// [`trestle::Role`] and `docs/scaling.md`. `trestle run --role` overrides it.
    #[serde(default)]
    pub role: Role,
    /// The leases that divide rooms and services between processes sharing the PostgreSQL
    /// `database`.
    #[serde(default)]
    pub leases: LeasesConfig,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The tokio runtime `trestle run` starts: how many threads run the plugins.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// One section per plugin, by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSection>,
    /// The file this was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Where the homeserver is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HomeserverConfig {
    /// The server name: the part after `:` in user ids.
    pub server_name: String,
    /// The client-server API URL. Without it, it is discovered through
    /// `https://<server_name>/.well-known/matrix/client`.
    #[serde(default)]
    pub url: Option<String>,
}

/// The leases that divide rooms and services between processes sharing a PostgreSQL database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LeasesConfig {
    /// How many seconds after a process dies (no clean stop) the others take over its rooms
    /// and services: 15 unless set (see [`StoreOptions::takeover`](trestle::store::StoreOptions::takeover)).
    #[serde(default = "default_takeover_s")]
    pub takeover_s: u64,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig {
            takeover_s: default_takeover_s(),
        }
    }
}

fn default_takeover_s() -> u64 {
    trestle::store::DEFAULT_TAKEOVER.as_secs()
}

/// Logging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// A filter such as `info` or `info,trestle=debug`; `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
    /// `text` (the default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Whether `/metrics` is served.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// A plugin's section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PluginSection {
    /// Whether the plugin runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `bot`: the localpart of the plugin's bot (read with [`PluginSection::bot`]). It must be
    /// the registration's `sender_localpart` or lie in an exclusive user namespace of it.
    /// Unset, the bot is the plugin's own name (`echo`) where the registration allows that,
    /// else the registration's `sender_localpart` (see `docs/registration.md`).
    #[serde(default)]
    bot: Option<Spanned<String>>,
    /// `encryption`: whether the plugin works in end-to-end encrypted rooms: its bot gets a device and
    /// decrypts and encrypts (see docs/e2ee.md). Needs a host built with encryption (the
    /// `trestle` binary is); the homeserver may push to-device events (MSC2409, MSC3202) or not
    /// (each device then fetches them with `/sync`, the bot too where it is not the
    /// registration's sender); the plugin's
    /// registration gets `org.matrix.msc3202` and `io.element.msc4190`.
    /// `true` or `false`, or a map: `{enabled: true, accept_unsigned_devices: false}`
    /// (`enabled` defaults to true there; `accept_unsigned_devices`, default true, decrypts
    /// messages from devices their owner did not cross-sign).
    /// Checked by [`Config::parse`] (so a bad value names the field), read with
    /// [`PluginSection::encryption`] and [`PluginSection::encryption_options`].
    #[serde(default)]
    encryption: Option<Spanned<serde_json::Value>>,
    /// The plugin's own settings, read by the plugin (see [`PluginSection::settings`]).
    #[serde(default)]
    settings: Option<Spanned<serde_json::Value>>,
}

/// A secret: inline, `{env: NAME}` or `{file: PATH}` (the framework's, so that plugins take
/// the same forms in their settings).
pub use trestle::plugin::Secret;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 29300))
}

fn default_max_in_flight() -> usize {
    trestle::DEFAULT_MAX_IN_FLIGHT
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

fn yes() -> bool {
    true
}

fn config_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {message}", path.display()))
}

/// The fields of an `encryption` map.
const ENCRYPTION_FIELDS: &str = "enabled, accept_unsigned_devices, verify_users, recovery_key";

/// Reads `encryption`: the options when encryption is on, `None` when off, or the field (after
/// `encryption`) that is wrong and why.
fn read_encryption(
    value: &serde_json::Value,
) -> std::result::Result<Option<EncryptionOptions>, (String, String)> {
    use serde_json::Value;
    let map = match value {
        Value::Null | Value::Bool(false) => return Ok(None),
        Value::Bool(true) => return Ok(Some(EncryptionOptions::default())),
        Value::Object(map) => map,
        other => {
            let message =
                format!("expected true, false or a map ({ENCRYPTION_FIELDS}), found {other}");
            return Err((String::new(), message));
        }
    };
    let mut options = EncryptionOptions::default();
    let mut enabled = true;
    for (key, value) in map {
        if key == "verify_users" {
            options.verify_users = Some(read_globs(value).ok_or_else(|| {
                let message = format!("expected a list of user id globs, found {value}");
                (format!(".{key}"), message)
            })?);
            continue;
        }
        if key == "recovery_key" {
            // A secret, revealed when the host starts (see `PluginSection::recovery_key`).
            Secret::deserialize(value).map_err(|_| {
                let message =
                    format!("expected a string, {{env: NAME}} or {{file: PATH}}, found {value}");
                (format!(".{key}"), message)
            })?;
            continue;
        }
        let field = match key.as_str() {
            "enabled" => &mut enabled,
            "accept_unsigned_devices" => &mut options.accept_unsigned_devices,
            _ => {
                let message = format!("unknown field; known: {ENCRYPTION_FIELDS}");
                return Err((format!(".{key}"), message));
            }
        };
        *field = value.as_bool().ok_or_else(|| {
            (
                format!(".{key}"),
                format!("expected true or false, found {value}"),
            )
        })?;
    }
    Ok(enabled.then_some(options))
}

/// A list of strings, such as `["@*:example.org"]`.
fn read_globs(value: &serde_json::Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|glob| glob.as_str().map(str::to_owned))
        .collect()
}

impl PluginSection {
    /// The configured `bot` localpart and the line it is on, if set.
    pub fn bot(&self) -> Option<(&str, u64)> {
        let bot = self.bot.as_ref()?;
        Some((bot.value.as_str(), bot.referenced.line()))
    }

    /// Whether the plugin works in end-to-end encrypted rooms (`encryption: true`, or a map
    /// whose `enabled` is not false).
    pub fn encryption(&self) -> bool {
        self.encryption_options().is_some()
    }

    /// The encryption options of a plugin that works in encrypted rooms, else `None`.
    pub fn encryption_options(&self) -> Option<EncryptionOptions> {
        let value = &self.encryption.as_ref()?.value;
        read_encryption(value).ok().flatten()
    }

    /// The recovery key of the bot's key backup (`encryption: {recovery_key: …}`, a secret:
    /// inline, `{env: NAME}` or `{file: PATH}`), if set.
    pub fn recovery_key(&self, config: &Path, plugin: &str) -> Result<Option<String>> {
        let Some(value) = self
            .encryption
            .as_ref()
            .and_then(|e| e.value.get("recovery_key"))
        else {
            return Ok(None);
        };
        let field = format!("plugins.{plugin}.encryption.recovery_key");
        let secret = Secret::deserialize(value)
            .map_err(|e| config_error(config, format!("field `{field}`: {e}")))?;
        secret.reveal(config, &field).map(Some)
    }

    /// `encryption` is `true`, `false`, absent, or a map of known fields: booleans, and the
    /// recovery key as a secret.
    fn check_encryption(&self, config: &Path, plugin: &str) -> Result<()> {
        let Some(spanned) = &self.encryption else {
            return Ok(());
        };
        read_encryption(&spanned.value)
            .map(drop)
            .map_err(|(field, message)| {
                config_error(
                    config,
                    format!(
                        "line {}: field `plugins.{plugin}.encryption{field}`: {message}",
                        spanned.referenced.line(),
                    ),
                )
            })
    }

    /// Reads the plugin's settings into its own type; absent settings give the default.
    /// Errors name the file, the line of the settings block, and the field.
    pub fn settings<T: serde::de::DeserializeOwned + Default>(
        &self,
        config: &Path,
        plugin: &str,
    ) -> Result<T> {
        self.plugin_settings(config, plugin).get()
    }

    /// The plugin's settings, as the plugin reads them ([`PluginSettings::get`]).
    pub fn plugin_settings<'a>(&'a self, config: &'a Path, plugin: &'a str) -> PluginSettings<'a> {
        let line = self.settings.as_ref().map_or(0, |s| s.referenced.line());
        PluginSettings::new(
            config,
            plugin,
            self.settings.as_ref().map(|s| &s.value),
            line,
        )
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = serde_saphyr::from_str(text).map_err(|e| {
            // The parser's first line says where and what; its snippet follows.
            config_error(path, e.to_string().trim_start_matches("error: "))
        })?;
        config.path = path.to_owned();
        for (name, section) in &config.plugins {
            section.check_encryption(path, name)?;
        }
        if let Some(url) = &config.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(config_error(
                path,
                "field `public_url`: expected an http:// or https:// URL",
            ));
        }
        if let Some(url) = &config.homeserver.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(config_error(
                path,
                "field `homeserver.url`: expected an http:// or https:// URL",
            ));
        }
        if config.runtime.threads == Some(0) {
            return Err(config_error(
                path,
                "field `runtime.threads`: expected at least 1 (1 runs the plugins on the main \
                 thread; unset, one thread per CPU)",
            ));
        }
        if config.max_in_flight == 0 {
            return Err(config_error(
                path,
                "field `max_in_flight`: expected at least 1 (events that may wait for the \
                 handlers before the next transaction waits)",
            ));
        }
        Ok(config)
    }

    /// The directory paths are relative to.
    pub fn base_dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir().join(&self.data_dir)
    }

    /// Where plugin `name` keeps its end-to-end encryption state (`encryption: true`).
    pub fn crypto_dir(&self, name: &str) -> PathBuf {
        self.data_dir().join("crypto").join(name)
    }

    /// The URL the homeserver reaches plugin `name` at.
    pub fn plugin_url(&self, name: &str) -> String {
        let base = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen));
        format!("{}/{name}", base.trim_end_matches('/'))
    }

    /// Where plugin `name`'s registration file lives.
    pub fn registration_path(&self, name: &str) -> PathBuf {
        self.data_dir()
            .join("registrations")
            .join(format!("{name}.yaml"))
    }

    /// The database URL for plugin `name`: its own SQLite file, or the shared PostgreSQL
    /// database (where the plugin gets its own schema).
    pub fn database_url(&self, name: &str) -> Result<String> {
        match &self.database {
            Some(secret) => secret.reveal(&self.path, "database"),
            None => Ok(format!(
                "sqlite://{}",
                self.data_dir().join(format!("{name}.db")).display()
            )),
        }
    }

    /// The homeserver's client-server URL: configured, or discovered through
    /// `/.well-known/matrix/client`.
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#well-known-uris>
    pub async fn homeserver_url(&self) -> Result<String> {
        if let Some(url) = &self.homeserver.url {
            return Ok(url.trim_end_matches('/').to_owned());
        }
        let origin = format!("https://{}", self.homeserver.server_name);
        self.discover(&origin).await
    }

    /// Reads `<origin>/.well-known/matrix/client` for the homeserver's base URL.
    async fn discover(&self, origin: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct WellKnown {
            #[serde(rename = "m.homeserver")]
            homeserver: BaseUrl,
        }
        #[derive(Deserialize)]
        struct BaseUrl {
            base_url: String,
        }
        let well_known = format!("{origin}/.well-known/matrix/client");
        let found: WellKnown = reqwest::get(&well_known)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                config_error(
                    &self.path,
                    format!("field `homeserver.url` is not set and {well_known} failed: {e}"),
                )
            })?
            .json()
            .await
            .map_err(|e| {
                config_error(
                    &self.path,
                    format!("{well_known}: not the expected JSON: {e}"),
                )
            })?;
        Ok(found.homeserver.base_url.trim_end_matches('/').to_owned())
    }
}

/// A commented configuration to start from.
pub fn default_config(
    server_name: &str,
    homeserver_url: &str,
    listen: SocketAddr,
    plugins: &[Plugin],
) -> String {
    let mut out = format!(
        "# Trestle's configuration. Every field but homeserver.server_name has a default.\n\
         \n\
         homeserver:\n\
         \x20 # The part after `:` in user ids.\n\
         \x20 server_name: {server_name}\n\
         \x20 # The client-server API. Leave it out to discover it through\n\
         \x20 # https://<server_name>/.well-known/matrix/client.\n\
         \x20 url: {homeserver_url}\n\
         \n\
         # All plugins listen here, each under /<plugin>.\n\
         listen: {listen}\n\
         # How the homeserver reaches the listener, if not http://<listen>.\n\
         # public_url: http://trestle.internal:29300\n\
         \n\
         # SQLite databases and registration files, relative to this file.\n\
         data_dir: data\n\
         # PostgreSQL instead of SQLite (each plugin gets its own schema). The URL can also come\n\
         # from the environment or a file: {{env: TRESTLE_DATABASE_URL}} or {{file: /run/secrets/db}}.\n\
         # database: postgres://trestle:secret@localhost/trestle\n\
         # What an answer to the homeserver promises, on SQLite: os-cache (the transaction is in\n\
         # the operating system's cache: it survives a crash of Trestle) or disk (synced to disk\n\
         # first: it survives a power loss too, at some cost; see docs/durability.md).\n\
         durability: os-cache\n\
         # Events received and not yet handled (per plugin) past which the homeserver's next\n\
         # transaction waits for the handlers, so a burst waits in the homeserver's queue.\n\
         # max_in_flight: {max_in_flight}\n\
         # With PostgreSQL, several processes can share the work (docs/scaling.md): role is\n\
         # all (the default), matrix (transactions and handlers) or connections (services).\n\
         # role: all\n\
         # leases:\n\
         #   takeover_s: 15   # a process that died is taken over after this\n\
         # Threads that run the plugins: 1 runs them on the main thread, which costs less CPU\n\
         # per event on a single core; unset, one per CPU, or the main thread on one CPU.\n\
         # runtime:\n\
         #   threads: 1\n\
         \n\
         logging:\n\
         \x20 level: info        # or e.g. info,trestle=debug; RUST_LOG overrides it\n\
         \x20 format: text       # or json\n\
         \n\
         metrics:\n\
         \x20 enabled: true      # Prometheus text at /metrics\n\
         \n\
                  plugins:{}\n",
        if plugins.is_empty() { " {}" } else { "" },
        max_in_flight = trestle::DEFAULT_MAX_IN_FLIGHT,
    );
    for plugin in plugins {
        out.push_str(&format!(
            "  {}:\n    enabled: {}\n    encryption: false  # true: works in encrypted rooms (docs/e2ee.md)\n    \
             # bot: {}  # the bot's localpart, in the registration's namespace (docs/registration.md)\n",
            plugin.name, plugin.enabled_by_default, plugin.bot_localpart
        ));
        for line in plugin.settings_help.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// Writes a configuration file readable by its owner only (mode 0600 on Unix), like the
/// registration files: it may hold secrets inline (a database password, a bridge's network
/// passwords, a provisioning secret). A new file is created so; an existing one is emptied and
/// narrowed before the new text goes in, so no secret is ever readable by others.
pub fn write_config(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let failed = |e: std::io::Error| config_error(path, e);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
    }
    file.write_all(text.as_bytes()).map_err(failed)
}

#[cfg(test)]
mod tests;
