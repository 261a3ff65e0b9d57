//! What a host needs to know to run a plugin: its name, its users, its settings, its router.

use std::{future::Future, path::Path, pin::Pin};

use serde::de::DeserializeOwned;
use trestle_registration::Registration;

use crate::{Error, Result, Router};

/// A bundled plugin: a bot or a bridge that the `trestle` host can run.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Plugin {
    /// The plugin's name: its appservice id, its section in the configuration, and its path
    /// under the host's listener.
    pub name: &'static str,
    /// The bot's localpart.
    pub bot_localpart: &'static str,
    /// The prefix of the plugin's ghosts' localparts.
    pub ghost_prefix: &'static str,
    /// Builds the plugin's router from its settings.
    pub build: fn(&PluginSettings<'_>) -> Result<Router>,
    /// The plugin's settings with their defaults, as commented YAML lines for `trestle init`
    /// (empty for none).
    pub settings_help: &'static str,
    /// Third-party protocols the plugin answers lookups for (`protocols` in its registration).
    pub protocols: &'static [&'static str],
    /// Whether a host runs the plugin when its configuration does not mention it (and writes
    /// it enabled in a new configuration). Off for a plugin that needs a server of its own
    /// before it does anything (see [`Plugin::off_by_default`]).
    pub enabled_by_default: bool,
    /// What the plugin takes from ephemeral events (typing notifications, read receipts), in
    /// plain words; `None` if it takes nothing. A host's check then wants the registration's
    /// `receive_ephemeral` ([MSC2409](https://github.com/matrix-org/matrix-spec-proposals/pull/2409)).
    pub ephemeral: Option<&'static str>,
    /// The plugin's own check of what it needs besides the homeserver (a bridge's network),
    /// for `trestle check` (see [`Plugin::with_check`]).
    pub check: Option<Check>,
}

/// What one step of a plugin's check found, in plain words: what was checked, and when it
/// fails, why and what to change (the configuration file and the field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// It works.
    Ok(String),
    /// Worth knowing, not wrong (nothing is configured to check, say).
    Note(String),
    /// It does not work.
    Fail(String),
}

/// A plugin's check: it reads its settings, then looks at what it needs (connects to its
/// network, for a bridge) and says what it found, a [`Finding`] each.
pub type Check = fn(&PluginSettings<'_>) -> Pin<Box<dyn Future<Output = Vec<Finding>> + Send>>;

/// A secret in a configuration: inline, from an environment variable, or from a file (whose
/// trailing newline is dropped). The host reads its own secrets so (the database URL), and a
/// plugin's settings may take one the same way.
#[derive(Clone, serde::Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
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
        /// The file, relative to the configuration file's directory unless absolute.
        file: std::path::PathBuf,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is never printed.
        match self {
            Secret::Inline(_) => f.write_str("Secret(<inline>)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

impl Secret {
    /// The secret's value, read for the configuration file `config` (a file's path is relative
    /// to its directory). `field` names it in errors.
    pub fn reveal(&self, config: &Path, field: &str) -> Result<String> {
        let config_error = |message: String| {
            Error::Config(format!("{}: field `{field}`: {message}", config.display()))
        };
        match self {
            Secret::Inline(value) => Ok(value.clone()),
            Secret::Env { env } => std::env::var(env)
                .map_err(|_| config_error(format!("environment variable {env} is not set"))),
            Secret::File { file } => {
                let file = config.parent().unwrap_or(Path::new(".")).join(file);
                std::fs::read_to_string(&file)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                    .map_err(|e| config_error(format!("{}: {e}", file.display())))
            }
        }
    }
}

/// A plugin's settings section, for the plugin to read into its own type.
#[derive(Clone, Copy, Debug)]
pub struct PluginSettings<'a> {
    settings: Option<&'a serde_json::Value>,
    line: u64,
    config: &'a Path,
    plugin: &'a str,
}

impl<'a> PluginSettings<'a> {
    /// No settings: every plugin's defaults.
    pub fn none() -> PluginSettings<'static> {
        PluginSettings {
            settings: None,
            line: 0,
            config: Path::new("<defaults>"),
            plugin: "",
        }
    }

    /// The settings of `plugin` as its host read them from the file `config`, where they start
    /// at `line` (`None`: no settings, the plugin's defaults). Public so that a host reading
    /// its own configuration format (crate `trestle-host` reads YAML) hands them to plugins,
    /// and their errors still name the file, the line and the field.
    pub fn new(
        config: &'a Path,
        plugin: &'a str,
        settings: Option<&'a serde_json::Value>,
        line: u64,
    ) -> Self {
        PluginSettings {
            settings,
            line,
            config,
            plugin,
        }
    }

    /// The configuration file the settings were read from, for reading the secrets they
    /// name ([`Secret::reveal`]).
    pub fn config_path(&self) -> &'a Path {
        self.config
    }

    /// Reads the settings into the plugin's type; missing settings give its default. Errors
    /// name the configuration file, the line and the field.
    pub fn get<T: DeserializeOwned + Default>(&self) -> Result<T> {
        match self.settings {
            None => Ok(T::default()),
            Some(settings) if settings.is_null() => Ok(T::default()),
            Some(settings) => serde_json::from_value(settings.clone()).map_err(|e| {
                Error::Config(format!(
                    "{}: line {}: field `plugins.{}.settings`: {e}",
                    self.config.display(),
                    self.line,
                    self.plugin
                ))
            }),
        }
    }
}

impl PluginSettings<'_> {
    /// Reads the settings into the plugin's type and checks them with `check`, for a plugin's
    /// [`Check`]: an error is a failing [`Finding`] that names the section and the file.
    pub fn read_for_check<T, U>(
        &self,
        check: impl FnOnce(T) -> std::result::Result<U, String>,
    ) -> std::result::Result<U, Finding>
    where
        T: DeserializeOwned + Default,
    {
        self.get::<T>()
            .map_err(|e| e.to_string())
            .and_then(check)
            .map_err(|error| {
                Finding::Fail(format!(
                    "{}: settings: {error} (`plugins.{}.settings` in {})",
                    self.plugin,
                    self.plugin,
                    self.config.display()
                ))
            })
    }
}

impl Plugin {
    /// A plugin from its parts.
    pub const fn new(
        name: &'static str,
        bot_localpart: &'static str,
        ghost_prefix: &'static str,
        build: fn(&PluginSettings<'_>) -> Result<Router>,
    ) -> Self {
        Plugin {
            name,
            bot_localpart,
            ghost_prefix,
            build,
            settings_help: "",
            protocols: &[],
            enabled_by_default: true,
            ephemeral: None,
            check: None,
        }
    }

    /// The same plugin, taking `what` from ephemeral events (e.g. "typing notifications and
    /// read receipts"): its registration must ask for them.
    pub const fn with_ephemeral(mut self, what: &'static str) -> Self {
        self.ephemeral = Some(what);
        self
    }

    /// The same plugin with a check of its own for `trestle check`.
    pub const fn with_check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// Runs the plugin's own check on `settings` (nothing to say for a plugin without one).
    pub async fn run_check(&self, settings: &PluginSettings<'_>) -> Vec<Finding> {
        match self.check {
            Some(check) => check(settings).await,
            None => Vec::new(),
        }
    }

    /// The same plugin, run only where the configuration enables it.
    pub const fn off_by_default(mut self) -> Self {
        self.enabled_by_default = false;
        self
    }

    /// The same plugin with settings documentation for `trestle init`.
    pub const fn with_settings_help(mut self, help: &'static str) -> Self {
        self.settings_help = help;
        self
    }

    /// The same plugin answering third-party lookups for `protocols`.
    pub const fn with_protocols(mut self, protocols: &'static [&'static str]) -> Self {
        self.protocols = protocols;
        self
    }

    /// A fresh registration for this plugin on `server_name`, pushed to at `url`, whose bot is
    /// its `sender_localpart` ([`Registration::generate`]): an appservice built for it needs
    /// no [`AppserviceBuilder::bot`](crate::AppserviceBuilder::bot). See
    /// [`Plugin::generate_registration_with_bot`] for what the `trestle` host writes.
    pub fn generate_registration(&self, url: Option<String>, server_name: &str) -> Registration {
        let registration = Registration::generate(
            self.name,
            url,
            self.bot_localpart,
            self.ghost_prefix,
            server_name,
        );
        self.with_protocols_listed(registration)
    }

    /// A fresh registration for this plugin on `server_name`, pushed to at `url`: its bot
    /// `@<bot_localpart>` and its ghosts in the exclusive namespace, and a hidden
    /// `sender_localpart` that never acts ([`Registration::generate_with_bot`]). Build its
    /// appservice with `AppserviceBuilder::bot(plugin.bot_localpart)`.
    pub fn generate_registration_with_bot(
        &self,
        url: Option<String>,
        server_name: &str,
    ) -> Registration {
        let registration = Registration::generate_with_bot(
            self.name,
            url,
            self.bot_localpart,
            self.ghost_prefix,
            server_name,
        );
        self.with_protocols_listed(registration)
    }

    fn with_protocols_listed(&self, mut registration: Registration) -> Registration {
        if !self.protocols.is_empty() {
            registration.protocols = Some(self.protocols.iter().map(|p| (*p).to_owned()).collect());
        }
        registration
    }

    /// The plugin's router with default settings.
    pub fn router(&self) -> Result<Router> {
        (self.build)(&PluginSettings::none())
    }
}
