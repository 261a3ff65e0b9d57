//! An appservice served in the test process against a real Synapse.

use std::{path::PathBuf, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use trestle::{Appservice, Registration, Router, Store};

use crate::synapse::{Synapse, UserClient, free_port};

/// How long end-to-end tests wait for something to show up.
pub const WAIT: Duration = Duration::from_secs(30);

/// Synapse with one registration, and that appservice running in this process.
pub struct Harness {
    /// The homeserver.
    pub synapse: Synapse,
    /// The appservice, for acting and for [`Appservice::idle`].
    pub app: Appservice,
    /// Where the appservice listens.
    pub url: String,
    /// The registration Synapse loaded.
    pub registration: Registration,
    /// The bot's localpart where it is not the registration's sender
    /// ([`Harness::start_with_bot`]).
    pub bot_localpart: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The temporary directory with the registration and the store.
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Starts Synapse with `registration` (its `url` is replaced by a free local port) and serves
    /// `router` for it on a SQLite store in a temporary directory.
    pub async fn start(mut registration: Registration, router: Router) -> Harness {
        Self::start_with(&mut registration, router, "").await
    }

    /// As [`Harness::start`], with extra Synapse configuration.
    pub async fn start_with(
        registration: &mut Registration,
        router: Router,
        extra_yaml: &str,
    ) -> Harness {
        let port = free_port();
        Self::start_at(
            registration,
            router,
            extra_yaml,
            port,
            format!("http://127.0.0.1:{port}"),
        )
        .await
    }

    /// As [`Harness::start_with`], with the bot `@<bot_localpart>`, a user of the namespace
    /// apart from the registration's sender (`AppserviceBuilder::bot`).
    pub async fn start_with_bot(
        registration: &mut Registration,
        bot_localpart: &str,
        router: Router,
        extra_yaml: &str,
    ) -> Harness {
        let port = free_port();
        Self::start_as(
            registration,
            Some(bot_localpart.to_owned()),
            &[],
            router,
            extra_yaml,
            port,
            format!("http://127.0.0.1:{port}"),
        )
        .await
    }

    /// As [`Harness::start_with`], on a Synapse that federates
    /// ([`Synapse::start_federating`]) on `federation_port`: `registration` names the server
    /// [`Synapse::federating_server_name`]`(federation_port)`, and so does the appservice.
    pub async fn start_federating(
        registration: &mut Registration,
        federation_port: u16,
        router: Router,
        extra_yaml: &str,
    ) -> Harness {
        let port = free_port();
        Self::start_on(
            registration,
            None,
            &[],
            router,
            extra_yaml,
            Some(federation_port),
            port,
            format!("http://127.0.0.1:{port}"),
        )
        .await
    }

    /// As [`Harness::start`], with Synapse also loading `others`: registrations of appservices
    /// not served here (e.g. a double puppeting registration with no `url`).
    pub async fn start_beside(
        mut registration: Registration,
        others: &[Registration],
        router: Router,
    ) -> Harness {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        Self::start_as(&mut registration, None, others, router, "", port, url).await
    }

    /// As [`Harness::start_with`], with the appservice listening on `port` while Synapse is told
    /// (the registration's `url`) to reach it at `synapse_url`, e.g. a proxy that forwards to the
    /// port: [`crate::txn_proxy::TxnProxy`].
    pub async fn start_at(
        registration: &mut Registration,
        router: Router,
        extra_yaml: &str,
        port: u16,
        synapse_url: String,
    ) -> Harness {
        Self::start_as(
            registration,
            None,
            &[],
            router,
            extra_yaml,
            port,
            synapse_url,
        )
        .await
    }

    async fn start_as(
        registration: &mut Registration,
        bot_localpart: Option<String>,
        others: &[Registration],
        router: Router,
        extra_yaml: &str,
        port: u16,
        synapse_url: String,
    ) -> Harness {
        Self::start_on(
            registration,
            bot_localpart,
            others,
            router,
            extra_yaml,
            None,
            port,
            synapse_url,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)] // private: the public constructors name what they set
    async fn start_on(
        registration: &mut Registration,
        bot_localpart: Option<String>,
        others: &[Registration],
        router: Router,
        extra_yaml: &str,
        federation_port: Option<u16>,
        port: u16,
        synapse_url: String,
    ) -> Harness {
        // Logs show with a failing test's output (RUST_LOG picks the level).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        registration.url = Some(synapse_url);
        let path: PathBuf = dir.path().join("registration.yaml");
        registration.write_file(&path).unwrap();
        let mut paths = vec![path];
        for (n, other) in others.iter().enumerate() {
            let path = dir.path().join(format!("registration-{n}.yaml"));
            other.write_file(&path).unwrap();
            paths.push(path);
        }
        let synapse = match federation_port {
            Some(federation_port) => {
                Synapse::start_federating(federation_port, &paths, extra_yaml).await
            }
            None => Synapse::start_with(&paths, extra_yaml).await,
        };
        let bot = bot_localpart.as_deref();
        let (app, stop, task) = serve(registration, bot, &synapse, dir.path(), port, router).await;
        synapse
            .wait_for_appservice(&registration.id, &registration.as_token, WAIT)
            .await;
        Harness {
            synapse,
            app,
            url,
            registration: registration.clone(),
            bot_localpart,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// A new user in a new private room, with the bot invited and joined.
    pub async fn user_in_room_with_bot(&self, localpart: &str) -> (UserClient, String) {
        let user = self.synapse.register_user(localpart, "password-1234").await;
        let room = user
            .create_room(serde_json::json!({"name": "test", "preset": "private_chat"}))
            .await;
        let bot = self.app.bot_user_id().to_string();
        user.invite(&room, &bot).await;
        let room_id = trestle::ruma::RoomId::parse(&room).unwrap();
        self.app.bot().join(&room_id).await.unwrap();
        (user, room)
    }

    /// Stops the appservice and starts `router` in its place on the same store and address, as
    /// a new process after a restart would: it finds in the store what the old one left. Returns
    /// once Synapse has delivered what it held back meanwhile
    /// ([`Synapse::wait_appservice_caught_up`] says why).
    pub async fn restart(&mut self, router: Router) {
        self.stop().await;
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let (app, stop, task) = serve(
            &self.registration,
            self.bot_localpart.as_deref(),
            &self.synapse,
            self.dir.path(),
            port,
            router,
        )
        .await;
        self.app = app;
        self.stop = Some(stop);
        self.task = Some(task);
        self.synapse
            .wait_appservice_caught_up(&self.registration.id, WAIT)
            .await;
    }

    /// Stops the appservice and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Serves `router` for `registration` (with `bot` where it is not the sender) on the SQLite
/// store in `dir`, listening on `port`; returns the appservice, what stops it, and its task.
async fn serve(
    registration: &Registration,
    bot: Option<&str>,
    synapse: &Synapse,
    dir: &std::path::Path,
    port: u16,
    router: Router,
) -> (Appservice, oneshot::Sender<()>, JoinHandle<()>) {
    let store = Store::connect(&format!("sqlite://{}", dir.join("store.db").display()))
        .await
        .unwrap();
    let mut builder = Appservice::builder(
        registration.clone(),
        synapse.base_url(),
        synapse.server_name(),
    );
    if let Some(bot) = bot {
        builder = builder.bot(bot);
    }
    let app = builder.router(router).store(store).build().await.unwrap();
    let listener = bind(port).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = app.clone();
    let task = tokio::spawn(async move {
        runner
            .run(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (app, stop, task)
}

/// One appservice process of its own on the store at `database` (several of them on one
/// PostgreSQL database are processes sharing it), with no homeserver behind it: for handlers
/// and services that only record. Serves on a free local port; returns its URL, the sender
/// that stops it (dropping it stops it too), and its task.
pub async fn serve_without_homeserver(
    registration: &Registration,
    database: &str,
    router: Router,
) -> (String, oneshot::Sender<()>, JoinHandle<trestle::Result<()>>) {
    let app = Appservice::builder(registration.clone(), "http://127.0.0.1:9", "localhost")
        .router(router)
        .store(Store::connect(database).await.unwrap())
        .build()
        .await
        .unwrap();
    let port = free_port();
    let listener = bind(port).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(listener, async {
        let _ = stopped.await;
    }));
    (format!("http://127.0.0.1:{port}"), stop, task)
}

/// A listener on `port`. A restart takes the port the appservice had, which the one stopped may
/// still hold for a moment (seen once in CI as `AddrInUse`), so that is waited out for 5 s.
async fn bind(port: u16) -> TcpListener {
    let mut tries = 0;
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("binding 127.0.0.1:{port}: {e}"),
        }
    }
}
