//! A real Synapse for end-to-end tests.
//!
//! Every [`Synapse`] is a fresh homeserver (server name `localhost`, SQLite) in its own temporary
//! directory, listening on its own free port on 127.0.0.1, so tests may run several at once. It is
//! killed when dropped. Tests that need two homeservers talking start each with
//! [`Synapse::start_federating`]: server name `localhost:<port>`, a TLS federation listener on that
//! port, and loopback peers allowed. Synapse itself comes from the virtualenv that `scripts/install-synapse.sh`
//! creates: `$TRESTLE_SYNAPSE_VENV`, else `<workspace>/.local/synapse-venv`. A missing Synapse is a
//! test failure, never a skip.
//!
//! Set `TRESTLE_KEEP_SYNAPSE=1` to keep the temporary directories (config, database, `synapse.log`)
//! after the test; their paths are printed.

mod certificate;
mod client;
mod config;

pub use client::{UserClient, encode};

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// How long Synapse may take to answer `/versions` after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often to try a new port when the one picked was taken before Synapse could bind it.
const START_ATTEMPTS: usize = 3;
/// Log lines shown in panic messages.
const LOG_LINES: usize = 60;

/// A running Synapse; dropping it kills the process and deletes its directory.
pub struct Synapse {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    port: u16,
    server_name: String,
    http: reqwest::Client,
    /// The log tail is already in a panic message; don't print it again on drop.
    log_shown: bool,
}

pub use trestle_postgres_harness::free_port;

/// The virtualenv holding Synapse.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("TRESTLE_SYNAPSE_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent")
            .join(".local/synapse-venv"),
    }
}

fn venv_python() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "Synapse is not installed: {} does not exist. Run scripts/install-synapse.sh \
         (or set TRESTLE_SYNAPSE_VENV to a virtualenv with matrix-synapse).",
        python.display()
    );
    python
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building reqwest client")
}

/// Runs Synapse's `--generate-config` for `server_name` in `dir` (which also makes the signing
/// key) and returns the `homeserver.yaml` it wrote.
async fn generate_config(python: &Path, dir: &Path, server_name: &str) -> String {
    let generate = tokio::process::Command::new(python)
        .args(["-m", "synapse.app.homeserver", "--server-name", server_name])
        .args([
            "--config-path",
            "homeserver.yaml",
            "--generate-config",
            "--report-stats=no",
        ])
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "running {} to generate the Synapse config: {e}",
                python.display()
            )
        });
    assert!(
        generate.status.success(),
        "generating the Synapse config failed ({}):\n{}\n{}",
        generate.status,
        String::from_utf8_lossy(&generate.stdout),
        String::from_utf8_lossy(&generate.stderr)
    );
    std::fs::read_to_string(dir.join("homeserver.yaml")).expect("reading generated homeserver.yaml")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Synapse {
    /// Starts a fresh Synapse on a free loopback port with server name `localhost`, loading the
    /// given appservice registration files. Panics (with the tail of Synapse's log) if Synapse is not
    /// installed or does not start.
    pub async fn start(registrations: &[PathBuf]) -> Synapse {
        Self::start_with(registrations, "").await
    }

    /// Starts Synapse with an appservice `id` (bot `bot`, users `<prefix>…`) that it pushes to
    /// `127.0.0.1:port`, the registration written in `dir`; returns both.
    pub async fn start_pushing_to(
        dir: &std::path::Path,
        (id, bot, prefix): (&str, &str, &str),
        port: u16,
    ) -> (Synapse, trestle::Registration) {
        let mut registration = trestle::Registration::generate(id, None, bot, prefix, "localhost");
        registration.url = Some(format!("http://127.0.0.1:{port}"));
        let path = dir.join("registration.yaml");
        registration.write_file(&path).unwrap();
        (Self::start(std::slice::from_ref(&path)).await, registration)
    }

    /// Like [`Synapse::start`], with extra `homeserver.yaml` content. Each top-level key in
    /// `extra_yaml` replaces the harness's (or the generated) setting of that key as a whole, e.g.
    /// `experimental_features:` must repeat the harness's two MSC flags if they are still wanted.
    pub async fn start_with(registrations: &[PathBuf], extra_yaml: &str) -> Synapse {
        Self::start_as(registrations, extra_yaml, None).await
    }

    /// Like [`Synapse::start_with`], for a homeserver that federates with others started the same
    /// way: its server name is [`Synapse::federating_server_name`]`(federation_port)`, the port
    /// of its own TLS federation listener (a self-signed certificate made here), which its peers
    /// reach directly (an explicit port means no `.well-known` or SRV lookup). It checks no
    /// peer's certificate and may reach loopback addresses, which Synapse refuses by default. Its
    /// client API stays plain HTTP at [`Synapse::base_url`]. The port is the caller's (take a
    /// [`free_port`]) so that registrations naming the server can be written first.
    pub async fn start_federating(
        federation_port: u16,
        registrations: &[PathBuf],
        extra_yaml: &str,
    ) -> Synapse {
        Self::start_as(registrations, extra_yaml, Some(federation_port)).await
    }

    /// The server name of a Synapse federating on `federation_port`: `localhost:<port>`.
    pub fn federating_server_name(federation_port: u16) -> String {
        format!("localhost:{federation_port}")
    }

    async fn start_as(
        registrations: &[PathBuf],
        extra_yaml: &str,
        federation_port: Option<u16>,
    ) -> Synapse {
        let python = venv_python();
        let registrations: Vec<PathBuf> = registrations
            .iter()
            .map(|r| {
                std::fs::canonicalize(r)
                    .unwrap_or_else(|e| panic!("registration file {}: {e}", r.display()))
            })
            .collect();

        let dir = tempfile::Builder::new()
            .prefix("trestle-synapse-")
            .tempdir()
            .expect("creating Synapse temp dir");
        let dir_path = dir.path().to_path_buf();

        let federation = match federation_port {
            Some(port) => {
                let (certificate, private_key) = certificate::self_signed(&python, &dir_path).await;
                Some(config::Federation {
                    port,
                    certificate,
                    private_key,
                })
            }
            None => None,
        };
        let server_name = match &federation {
            Some(federation) => Self::federating_server_name(federation.port),
            None => "localhost".to_owned(),
        };
        let generated = generate_config(&python, &dir_path, &server_name).await;

        let mut synapse = Synapse {
            child: None,
            dir: Some(dir),
            dir_path,
            port: 0,
            server_name,
            http: http_client(),
            log_shown: false,
        };
        for attempt in 1..=START_ATTEMPTS {
            synapse.port = free_port();
            let yaml = config::build(
                &generated,
                synapse.port,
                &registrations,
                federation.as_ref(),
                extra_yaml,
            );
            std::fs::write(synapse.dir_path.join("homeserver.yaml"), yaml)
                .expect("writing homeserver.yaml");
            match synapse.spawn_and_wait(false).await {
                Ok(()) => return synapse,
                Err(e)
                    if attempt < START_ATTEMPTS
                        && synapse.log().contains("Address already in use") =>
                {
                    eprintln!(
                        "Synapse could not bind port {} ({e}); trying another port",
                        synapse.port
                    );
                }
                Err(e) => synapse.fail(&e),
            }
        }
        unreachable!()
    }

    /// Starts the process (config already written) and waits until it answers `/versions`. A
    /// restart appends to the log, so that what happened before it stays readable.
    async fn spawn_and_wait(&mut self, restart: bool) -> Result<(), String> {
        let python = venv_python();
        let mut log = OpenOptions::new()
            .create(true)
            .write(true)
            .append(restart)
            .truncate(!restart)
            .open(self.log_path())
            .map_err(|e| format!("opening synapse.log: {e}"))?;
        if restart {
            writeln!(log, "---- restarted by the test harness ----")
                .map_err(|e| format!("writing synapse.log: {e}"))?;
        }
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cloning log handle: {e}"))?;
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", python.display()))?;
        self.child = Some(child);

        let started = Instant::now();
        let url = format!("{}/_matrix/client/versions", self.base_url());
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("Synapse exited during start-up ({status})"));
            }
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                return Err(format!(
                    "Synapse did not answer {url} within {START_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        self.kill();
        self.log_shown = true;
        panic!(
            "Synapse failed to start: {why}\n(directory {}, venv {})\n---- last {LOG_LINES} lines of synapse.log ----\n{}",
            self.dir_path.display(),
            venv_dir().display(),
            self.log_tail(LOG_LINES)
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills Synapse (SIGKILL) but keeps its directory, so that [`Synapse::restart`] can start it again
    /// with the same database. Use it to test what happens while the homeserver is down.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Stops Synapse if it is running and starts it again on the same port with the same config and
    /// database; waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait(true).await {
            self.fail(&e);
        }
    }

    /// The transactions Synapse has made for the appservice `appservice_id` and not yet seen
    /// accepted, oldest first: `(txn_id, event ids)` from its table `application_services_txns`,
    /// whose rows it deletes once the appservice answers 200. Read from the SQLite database, so it
    /// works while Synapse is stopped too.
    pub async fn pending_appservice_txns(&self, appservice_id: &str) -> Vec<(i64, Vec<String>)> {
        use sqlx::Connection;
        let mut db = self.homeserver_db().await;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT txn_id, event_ids FROM application_services_txns WHERE as_id = ? \
             ORDER BY txn_id",
        )
        .bind(appservice_id)
        .fetch_all(&mut db)
        .await
        .expect("reading application_services_txns");
        let _ = db.close().await;
        rows.into_iter()
            .map(|(id, events)| {
                let events = serde_json::from_str(&events)
                    .unwrap_or_else(|e| panic!("event_ids of appservice txn {id}: {e}"));
                (id, events)
            })
            .collect()
    }

    /// Waits until Synapse has delivered to the appservice `appservice_id` what it held back
    /// while the appservice was down: its state for it is no longer `down` and none of its
    /// transactions is pending (read from the SQLite database). Panics after `timeout`.
    ///
    /// Why a test waits for this: Synapse 1.163 has a race at the end of a recovery. Its
    /// transaction sender reads whether the appservice is up *before* it creates a transaction
    /// (`_TransactionController.send` in `synapse/appservice/scheduler.py`), and its recoverer
    /// marks the appservice up once it finds no transaction left; an event whose transaction is
    /// created between the two is not sent, and waits in `application_services_txns` for the
    /// next outage's recovery, after the events that followed it. No appservice can see that
    /// from its side; a test that sends right after a restart would be testing Synapse's timing.
    pub async fn wait_appservice_caught_up(&self, appservice_id: &str, timeout: Duration) {
        use sqlx::Connection;
        let started = Instant::now();
        // One connection and one statement per look: held back means marked down, or any
        // transaction of its still in the table.
        let mut db = self.homeserver_db().await;
        loop {
            let held_back: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM application_services_state \
                                WHERE as_id = ?1 AND state = 'down') \
                     OR EXISTS (SELECT 1 FROM application_services_txns WHERE as_id = ?1)",
            )
            .bind(appservice_id)
            .fetch_one(&mut db)
            .await
            .expect("reading application_services_state and _txns");
            if !held_back {
                let _ = db.close().await;
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "Synapse did not catch up with appservice {appservice_id} within {timeout:?}\n\
                 ---- Synapse log ----\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A connection to Synapse's SQLite database, which works while Synapse is stopped too.
    async fn homeserver_db(&self) -> sqlx::SqliteConnection {
        use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
        SqliteConnectOptions::new()
            .filename(self.dir_path.join("homeserver.db"))
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("opening Synapse's homeserver.db")
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The local port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `localhost`, or `localhost:<federation port>` for [`Synapse::start_federating`].
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The temporary directory with `homeserver.yaml`, `homeserver.db` and `synapse.log`.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Synapse's stdout and stderr (it logs at INFO to stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("synapse.log")
    }

    fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of Synapse's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// `@localpart:<server name>`
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// A client acting with any access token, e.g. an appservice's `as_token` (then `user_id` is the
    /// `sender_localpart` bot's id).
    pub fn client(&self, user_id: &str, access_token: &str) -> UserClient {
        UserClient::new(
            self.base_url(),
            user_id.to_owned(),
            access_token.to_owned(),
            self.http.clone(),
        )
    }

    /// Registers a user through the open client registration API (`m.login.dummy`) and returns a
    /// client logged in as that user.
    pub async fn register_user(&self, localpart: &str, password: &str) -> UserClient {
        let url = format!("{}/_matrix/client/v3/register", self.base_url());
        let mut body = json!({
            "username": localpart,
            "password": password,
            "initial_device_display_name": "trestle-tests",
        });
        for _ in 0..5 {
            let resp = self
                .http
                .post(&url)
                .json(&body)
                .send()
                .await
                .expect("POST /register");
            let status = resp.status();
            let value: serde_json::Value = resp.json().await.unwrap_or_default();
            if status.is_success() {
                return self.client(
                    value["user_id"]
                        .as_str()
                        .expect("user_id in /register response"),
                    value["access_token"]
                        .as_str()
                        .expect("access_token in /register response"),
                );
            }
            if status.as_u16() == 401 && value.get("session").is_some() {
                body["auth"] = json!({"type": "m.login.dummy", "session": value["session"]});
                continue;
            }
            if status.as_u16() == 429 {
                let ms = value["retry_after_ms"].as_u64().unwrap_or(500);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
            panic!(
                "registering {localpart} failed: {status} {value}\n---- Synapse log ----\n{}",
                self.log_tail(20)
            );
        }
        panic!("registering {localpart}: no success after 5 attempts");
    }

    /// Logs an existing user in with a password.
    pub async fn login(&self, localpart: &str, password: &str) -> UserClient {
        let url = format!("{}/_matrix/client/v3/login", self.base_url());
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        });
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("POST /login");
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "logging in {localpart} failed: {status} {value}"
        );
        self.client(
            value["user_id"]
                .as_str()
                .expect("user_id in /login response"),
            value["access_token"]
                .as_str()
                .expect("access_token in /login response"),
        )
    }

    /// [`Synapse::wait_for_appservice`] for `registration`'s appservice, for up to 30 s.
    pub async fn wait_for_registered(&self, registration: &trestle::Registration) {
        self.wait_for_appservice(
            &registration.id,
            &registration.as_token,
            std::time::Duration::from_secs(30),
        )
        .await;
    }

    /// Asks Synapse to ping an appservice (`POST /_matrix/client/v1/appservice/{id}/ping` with its
    /// `as_token`) until the appservice answers, which also ends any delivery back-off Synapse is in.
    /// Panics after `timeout` with Synapse's last answer.
    pub async fn wait_for_appservice(
        &self,
        appservice_id: &str,
        as_token: &str,
        timeout: Duration,
    ) {
        let url = format!(
            "{}/_matrix/client/v1/appservice/{}/ping",
            self.base_url(),
            client::encode(appservice_id)
        );
        let started = Instant::now();
        loop {
            let last = match self
                .http
                .post(&url)
                .bearer_auth(as_token)
                .json(&json!({}))
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) => format!(
                    "{} {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                ),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > timeout {
                panic!(
                    "appservice {appservice_id} did not answer Synapse's ping within {timeout:?}; last: {last}\n\
                     ---- Synapse log ----\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && !self.log_shown {
            eprintln!(
                "---- test failed; last {LOG_LINES} lines of Synapse log ({}) ----\n{}\n---- end of Synapse log ----",
                self.log_path().display(),
                self.log_tail(LOG_LINES)
            );
        }
        if std::env::var_os("TRESTLE_KEEP_SYNAPSE").is_some_and(|v| !v.is_empty() && v != "0")
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping Synapse directory {}", dir.keep().display());
        }
    }
}
