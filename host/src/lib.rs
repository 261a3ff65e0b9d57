//! The host: several plugins in one process, each its own appservice (own registration,
//! tokens, namespaces, bot and tables), all served on one listener under `/<plugin>`.
//!
//! Synapse appends the API paths to a registration's `url`, so a plugin registered at
//! `http://host:29300/echo` is asked at `http://host:29300/echo/_matrix/app/v1/…`. A handler
//! that fails or panics is contained where it runs (see [`trestle::router`]); one plugin's
//! trouble shows in its logs and metrics and leaves the others serving. A plugin's own web
//! root answers at `/<plugin>/` as well as `/<plugin>` (see [`nest_plugin`]).

use std::{future::Future, path::PathBuf, time::Duration};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get};
use ruma::{OwnedUserId, UserId};
use tokio::net::TcpListener;
use trestle::{
    Appservice, Error, Plugin, Registration, Result, Role, Router, Store,
    encryption::EncryptionOptions, plugin::PluginSettings, store::StoreOptions,
};

pub mod check;
pub mod config;

use config::Config;

/// Installs end-to-end encryption on a plugin's router, keeping its crypto state in the given
/// directory, with the options of the plugin's `encryption` section. The host calls it for each
/// plugin whose section says `encryption: true` (or a map); crate `trestle-crypto` provides one
/// (`trestle_crypto::install_in_host`), which the framework cannot depend on.
pub type EncryptionInstaller = fn(Router, PathBuf, &EncryptionOptions) -> Result<Router>;

/// Plugins served together.
#[derive(Clone, Debug)]
pub struct Host {
    apps: Vec<(Plugin, Appservice)>,
    homeserver_url: String,
    metrics: bool,
}

/// The registration of `plugin`: read from its file, or made (with fresh tokens) and written
/// there. An existing file keeps its tokens — the homeserver has them — and gets the `url`
/// from the configuration.
pub fn ensure_registration(config: &Config, plugin: &Plugin) -> Result<Registration> {
    let path = config.registration_path(plugin.name);
    let url = config.plugin_url(plugin.name);
    let mut registration = if path.exists() {
        Registration::from_file(&path)?
    } else {
        plugin.generate_registration_with_bot(None, &config.homeserver.server_name)
    };
    let before = registration.clone();
    registration.url = Some(url);
    if config
        .plugins
        .get(plugin.name)
        .is_some_and(|s| s.encryption())
    {
        // To-device events and key counts in transactions, and devices the appservice makes.
        registration.receive_ephemeral = Some(true);
        registration.push_ephemeral_unstable = Some(true);
        registration.msc3202 = Some(true);
        registration.msc4190 = Some(true);
    }
    if path.exists() && registration == before {
        return Ok(registration);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
    }
    registration.write_file(&path)?;
    Ok(registration)
}

/// The plugins of `available` that the configuration enables, in order. A plugin without a
/// section runs with its defaults, unless it is off by default (`Plugin::enabled_by_default`);
/// a section for an unknown plugin is an error.
pub fn enabled_plugins(config: &Config, available: &[Plugin]) -> Result<Vec<Plugin>> {
    for name in config.plugins.keys() {
        if !available.iter().any(|p| p.name == name) {
            let known: Vec<_> = available.iter().map(|p| p.name).collect();
            return Err(Error::Config(format!(
                "{}: field `plugins.{name}`: no such plugin; known: {}",
                config.path.display(),
                known.join(", ")
            )));
        }
    }
    Ok(available
        .iter()
        .filter(|p| {
            config
                .plugins
                .get(p.name)
                .map_or(p.enabled_by_default, |s| s.enabled)
        })
        .copied()
        .collect())
}

impl Host {
    /// Builds every enabled plugin: its registration, store and appservice. A plugin with
    /// `encryption: true` is refused: see [`Host::with_encryption`].
    pub async fn new(config: &Config, available: &[Plugin]) -> Result<Host> {
        Self::with_encryption(config, available, None).await
    }

    /// As [`Host::new`], with `encryption` installed on the plugins whose section says
    /// `encryption: true`, each keeping its crypto state in `<data_dir>/crypto/<plugin>`.
    pub async fn with_encryption(
        config: &Config,
        available: &[Plugin],
        encryption: Option<EncryptionInstaller>,
    ) -> Result<Host> {
        let homeserver_url = config.homeserver_url().await?;
        let server_name = &config.homeserver.server_name;
        let mut built = Vec::new();
        for plugin in enabled_plugins(config, available)? {
            let registration = ensure_registration(config, &plugin)?;
            let database = config.database_url(plugin.name)?;
            if config.role != Role::All && database.starts_with("sqlite://") {
                return Err(Error::Config(format!(
                    "{}: field `role` (or `trestle run --role`): role `{}` divides the work of \
                     several processes sharing a PostgreSQL `database`; on SQLite one process \
                     does everything: leave the role at `all`, or set `database`",
                    config.path.display(),
                    config.role
                )));
            }
            if database.starts_with("sqlite://") {
                std::fs::create_dir_all(config.data_dir())
                    .map_err(|e| Error::Config(format!("{}: {e}", config.data_dir().display())))?;
            }
            let options = StoreOptions::default()
                .scope(plugin.name)
                .durability(config.durability)
                .takeover(std::time::Duration::from_secs(config.leases.takeover_s));
            let store = Store::connect_with(&database, options)
                .await
                .map_err(|e| Error::Config(format!("plugin {}: database: {e}", plugin.name)))?;
            let section = config.plugins.get(plugin.name);
            let settings = match section {
                Some(section) => section.plugin_settings(&config.path, plugin.name),
                None => PluginSettings::none(),
            };
            let mut router = (plugin.build)(&settings)?;
            let encrypted = section.and_then(|s| s.encryption_options().map(|o| (s, o)));
            if let Some((section, mut options)) = encrypted {
                let Some(install) = encryption else {
                    return Err(Error::Config(format!(
                        "{}: field `plugins.{}.encryption`: this host was built without \
                         end-to-end encryption",
                        config.path.display(),
                        plugin.name
                    )));
                };
                options.recovery_key = section.recovery_key(&config.path, plugin.name)?;
                let dir = config.crypto_dir(plugin.name);
                router = install(router, dir, &options).map_err(|e| {
                    Error::Config(format!(
                        "{}: field `plugins.{}.encryption`: {e}",
                        config.path.display(),
                        plugin.name
                    ))
                })?;
            }
            let bot_localpart = bot_localpart(config, &plugin, &registration)?;
            let bot = UserId::parse(format!("@{bot_localpart}:{server_name}"))?;
            built.push(Built {
                plugin,
                registration,
                store,
                router,
                bot,
                bot_localpart,
            });
        }
        // Every plugin is built before any appservice, so each can be told the others' bots.
        let command_bots = command_bots(&built);
        let mut apps = Vec::new();
        for (built, others) in built.into_iter().zip(command_bots) {
            let app = Appservice::builder(
                built.registration,
                homeserver_url.clone(),
                server_name.clone(),
            )
            .bot(built.bot_localpart)
            .role(config.role)
            .router(built.router.other_bots(others))
            .store(built.store)
            .max_in_flight(config.max_in_flight)
            .build()
            .await?;
            apps.push((built.plugin, app));
        }
        Ok(Host {
            apps,
            homeserver_url,
            metrics: config.metrics.enabled,
        })
    }

    /// The running plugins.
    pub fn apps(&self) -> impl Iterator<Item = (&Plugin, &Appservice)> {
        self.apps.iter().map(|(p, a)| (p, a))
    }

    /// The homeserver's URL.
    pub fn homeserver_url(&self) -> &str {
        &self.homeserver_url
    }

    /// Every plugin's API under `/<plugin>`, plus `/health/live`, `/health/ready` and
    /// `/metrics`.
    pub fn router(&self) -> axum::Router {
        let mut router = axum::Router::new();
        for (plugin, app) in &self.apps {
            router = nest_plugin(router, plugin.name, app.http_router());
        }
        router = router
            .route("/health/live", get(|| async { "ok" }))
            .route("/health/ready", get(ready).with_state(self.clone()));
        if self.metrics {
            router = router.route("/metrics", get(metrics).with_state(self.clone()));
        }
        router
    }

    /// Serves every plugin on `listener` until `shutdown` completes, then stops accepting and
    /// lets in-flight work finish (what does not finish in time stays in the store for the
    /// next start).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        let names: Vec<_> = self.apps.iter().map(|(p, _)| p.name).collect();
        tracing::info!(%addr, plugins = ?names, "listening");
        let started: Vec<_> = self.apps.iter().map(|(_, app)| app.start()).collect();
        let apps: Vec<_> = self.apps.iter().map(|(_, app)| app.clone()).collect();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                for app in apps {
                    app.begin_stopping();
                }
            })
            .await;
        for ((_, app), started) in self.apps.iter().zip(started) {
            app.stop(started).await;
        }
        tracing::info!("stopped");
        served.map_err(Error::from)
    }

    /// Checks each plugin against the homeserver: asks the homeserver to ping the plugin's
    /// appservice, which proves the registration is loaded, the tokens match both ways, and the
    /// homeserver can reach the plugin. The plugins must be served meanwhile.
    pub async fn check(&self) -> Vec<(String, std::result::Result<Duration, String>)> {
        let mut report = Vec::new();
        for (plugin, app) in &self.apps {
            let outcome = app
                .ping_homeserver()
                .await
                .map_err(|e| explain_ping_failure(&e, plugin.name));
            report.push((plugin.name.to_owned(), outcome));
        }
        report
    }
}

/// For each plugin, the bots of the others that take commands with a prefix that overlaps
/// its own (one starts with the other): in a room with one of them, an unknown command may be
/// theirs (see [`trestle::router::Addressee`]).
fn command_bots(built: &[Built]) -> Vec<Vec<OwnedUserId>> {
    built
        .iter()
        .map(|this| {
            built
                .iter()
                .filter(|other| {
                    other.bot != this.bot && this.router.commands_overlap(&other.router)
                })
                .map(|other| other.bot.clone())
                .collect()
        })
        .collect()
}

/// A plugin made ready to become an appservice.
struct Built {
    plugin: Plugin,
    registration: Registration,
    store: Store,
    router: Router,
    bot: OwnedUserId,
    bot_localpart: String,
}

/// The localpart of `plugin`'s bot: the section's `bot`, which the registration must allow
/// (an error names the file and field otherwise); unset, the plugin's own bot name where the
/// registration allows it (what Trestle generates, old or new), else the registration's
/// `sender_localpart` (a registration written by hand, whose bot stays what it was).
pub fn bot_localpart(
    config: &Config,
    plugin: &Plugin,
    registration: &Registration,
) -> Result<String> {
    let server_name = &config.homeserver.server_name;
    let configured = config.plugins.get(plugin.name).and_then(|s| s.bot());
    let Some((bot, line)) = configured else {
        return Ok(
            if registration.can_be_bot(plugin.bot_localpart, server_name) {
                plugin.bot_localpart.to_owned()
            } else {
                registration.sender_localpart.clone()
            },
        );
    };
    let field = |problem: String| {
        Error::Config(format!(
            "{}: line {line}: field `plugins.{}.bot`: {problem}",
            config.path.display(),
            plugin.name
        ))
    };
    let user_id = format!("@{bot}:{server_name}");
    UserId::parse(&user_id).map_err(|e| field(format!("`{bot}` is not a valid localpart: {e}")))?;
    if !registration.can_be_bot(bot, server_name) {
        return Err(field(format!(
            "{user_id} is neither the `sender_localpart` of {} nor in an exclusive user \
             namespace of it (`namespaces.users`): the homeserver would not let the plugin act \
             as it",
            config.registration_path(plugin.name).display()
        )));
    }
    Ok(bot.to_owned())
}

/// `plugin`'s routes (an [`Appservice::http_router`]) under `/<name>` in `router`, the way the
/// host serves each plugin. The plugin's root answers at `/<name>/` as well as at `/<name>`:
/// axum's `nest` matches only the form without the slash, and people and links use both.
pub fn nest_plugin(router: axum::Router, name: &str, plugin: axum::Router) -> axum::Router {
    use tower::ServiceExt;
    let prefix = format!("/{name}");
    let root = plugin.clone().map_request(to_root);
    router
        .nest(&prefix, plugin)
        .route_service(&format!("{prefix}/"), root)
}

/// The request for `/<name>/?query` as the plugin's own `/?query`, which `nest` would have
/// made of `/<name>?query`. The host's router has already recorded the `OriginalUri`.
fn to_root(mut request: axum::extract::Request) -> axum::extract::Request {
    let root = match request.uri().query() {
        Some(query) => format!("/?{query}"),
        None => "/".to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = root.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// Plain words for why a homeserver-side ping failed.
fn explain_ping_failure(error: &Error, plugin: &str) -> String {
    use ruma::api::error::ErrorKind;
    let hint = match error.kind() {
        Some(ErrorKind::Forbidden) | Some(ErrorKind::UnknownToken(_)) => {
            "the homeserver does not know this plugin's as_token: add its registration file to the homeserver's \
             app_service_config_files (or copy the current file there) and restart the homeserver"
        }
        Some(ErrorKind::UrlNotSet) => {
            "the registration's url is null, so the homeserver cannot push to the plugin"
        }
        Some(ErrorKind::BadStatus(_)) => {
            "the plugin answered the homeserver's ping with an error: the homeserver's hs_token does not match this \
             plugin's registration (reload the registration file into the homeserver)"
        }
        Some(ErrorKind::ConnectionFailed) => {
            "the homeserver cannot connect to the plugin: check public_url / listen, and that the URL in the homeserver's \
             copy of the registration is current"
        }
        Some(ErrorKind::ConnectionTimeout) => "the homeserver's connection to the plugin timed out",
        _ => match error {
            Error::Http(_) => "the homeserver is not reachable at the configured URL",
            _ => "unexpected answer",
        },
    };
    format!("{plugin}: {hint} ({error})")
}

async fn ready(State(host): State<Host>) -> impl IntoResponse {
    for (plugin, app) in &host.apps {
        if let Some(reason) = app.stalled() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: {reason}", plugin.name),
            );
        }
        if let Err(error) = app.inbox_depth().await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: store: {error}", plugin.name),
            );
        }
    }
    (StatusCode::OK, "ready".to_owned())
}

async fn metrics(State(host): State<Host>) -> impl IntoResponse {
    let apps: Vec<_> = host.apps.iter().map(|(p, app)| (p.name, app)).collect();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        trestle::metrics::exposition(apps).await,
    )
}

#[cfg(test)]
mod tests;
