//! One appservice run on its own, outside the `trestle` host: what the programs in
//! `framework/examples/` start with. The host reads a configuration file and serves many
//! plugins; a single small bot needs only a handful of settings, so it takes them from the
//! environment and writes its own registration the first time.

use std::{net::SocketAddr, path::PathBuf};

use tokio::net::TcpListener;
use trestle_registration::Registration;

use crate::{Appservice, Error, Result, Router, Store};

/// Where a stand-alone appservice finds its homeserver, registration and store, and where it
/// listens. [`from_env`](Standalone::from_env) reads each from a variable, with a default
/// that suits a Synapse on the same machine:
///
/// | variable | field | default |
/// |---|---|---|
/// | `TRESTLE_HOMESERVER_URL` | `homeserver_url` | `http://127.0.0.1:8008` |
/// | `TRESTLE_SERVER_NAME` | `server_name` | `localhost` |
/// | `TRESTLE_LISTEN` | `listen` | `127.0.0.1:29310` |
/// | `TRESTLE_REGISTRATION` | `registration` | `<id>-registration.yaml` |
/// | `TRESTLE_DATABASE` | `database` | `sqlite://<id>.db` |
///
/// ```no_run
/// # async fn run() -> trestle::Result<()> {
/// let router = trestle::Router::new().accept_invites(true);
/// trestle::Standalone::from_env("mybot", "mybot", "mybot_")?.run(router).await
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Standalone {
    /// The appservice's id in its registration.
    pub id: String,
    /// The bot's localpart.
    pub bot_localpart: String,
    /// The prefix of the ghosts' localparts: the registration's user namespace.
    pub ghost_prefix: String,
    /// The homeserver's client-server API.
    pub homeserver_url: String,
    /// The part after `:` in the homeserver's user ids.
    pub server_name: String,
    /// Where the Application Service API (and [`Router::web`] routes) are served.
    pub listen: SocketAddr,
    /// The registration file, written on the first run.
    pub registration: PathBuf,
    /// The store's URL (see [`Store::connect`]).
    pub database: String,
}

fn var(name: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(name).unwrap_or_else(|_| default())
}

impl Standalone {
    /// The settings from the environment (see the table above).
    pub fn from_env(id: &str, bot_localpart: &str, ghost_prefix: &str) -> Result<Self> {
        let listen = var("TRESTLE_LISTEN", || "127.0.0.1:29310".into());
        Ok(Standalone {
            id: id.to_owned(),
            bot_localpart: bot_localpart.to_owned(),
            ghost_prefix: ghost_prefix.to_owned(),
            homeserver_url: var("TRESTLE_HOMESERVER_URL", || "http://127.0.0.1:8008".into()),
            server_name: var("TRESTLE_SERVER_NAME", || "localhost".into()),
            listen: listen
                .parse()
                .map_err(|e| Error::Config(format!("TRESTLE_LISTEN={listen}: {e}")))?,
            registration: var("TRESTLE_REGISTRATION", || format!("{id}-registration.yaml")).into(),
            database: var("TRESTLE_DATABASE", || format!("sqlite://{id}.db")),
        })
    }

    /// Reads the registration file; on the first run, writes a new one (fresh tokens, the
    /// bot and `<ghost_prefix>…` as exclusive users, a hidden `sender_localpart`, pushed to at
    /// `listen`) and returns `None`, since the homeserver must load it before it sends
    /// anything.
    pub fn registration(&self) -> Result<Option<Registration>> {
        if self.registration.exists() {
            return Ok(Some(Registration::from_file(&self.registration)?));
        }
        let url = format!("http://{}", self.listen);
        Registration::generate_with_bot(
            self.id.as_str(),
            Some(url),
            self.bot_localpart.as_str(),
            &self.ghost_prefix,
            &self.server_name,
        )
        .write_file(&self.registration)?;
        Ok(None)
    }

    /// Serves `router` until Ctrl-C. On the first run it only writes the registration and
    /// says what to do with it.
    pub async fn run(self, router: Router) -> Result<()> {
        let Some(registration) = self.registration()? else {
            eprintln!(
                "wrote {0}: add it to the homeserver's app_service_config_files \
                 (Synapse), restart the homeserver, then run this again",
                self.registration.display()
            );
            return Ok(());
        };
        // The bot is `bot_localpart` where the registration allows it; a registration written
        // by hand before, whose sender is another user, keeps that sender as its bot.
        let bot = if registration.can_be_bot(&self.bot_localpart, &self.server_name) {
            self.bot_localpart.clone()
        } else {
            registration.sender_localpart.clone()
        };
        let app = Appservice::builder(registration, self.homeserver_url, self.server_name)
            .bot(bot)
            .store(Store::connect(&self.database).await?)
            .router(router)
            .build()
            .await?;
        let listener = TcpListener::bind(self.listen).await?;
        let ctrl_c = async {
            // An error means no signal handler could be installed: then only a kill stops us.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        app.run(listener, ctrl_c).await
    }
}
