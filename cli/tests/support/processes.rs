//! What the tests of several `trestle run` processes on one database share: the processes,
//! and a load balancer in front of those that take transactions.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::IntoResponse};
use trestle::Registration;
use trestle_tests::synapse::{Synapse, UserClient, encode, free_port};

use super::registration::registration_path;

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

/// One `trestle run` process, killed when dropped.
pub struct Process {
    pub role: &'static str,
    pub config: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// How many times it was started, for its log's name.
    starts: usize,
}

impl Process {
    pub fn new(dir: &Path, role: &'static str, port: u16) -> Process {
        Process {
            role,
            config: dir.join(format!("{role}.yaml")),
            log: dir.join(format!("{role}.log")),
            port,
            child: None,
            starts: 0,
        }
    }

    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.log.with_extension(format!("{}.log", self.starts));
        let log = std::fs::File::create(log).unwrap();
        self.child = Some(
            Command::new(BIN)
                .arg("--config")
                .arg(&self.config)
                .args(["run", "--role", self.role])
                .env("RUST_LOG", "info,sqlx=warn,trestle_bridge::handoff=debug")
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
    }

    /// SIGKILL: it dies holding whatever it held.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and waits for it to exit (it hands over what it holds first).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} did not stop within 30 s",
                self.role
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until it answers `/health/live`.
    pub async fn wait_live(&self) {
        let url = format!("http://127.0.0.1:{}/health/live", self.port);
        let started = Instant::now();
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} is not live within 60 s",
                self.role
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Writes a configuration with the bridge `plugin` alone on `database`, listening on `port`,
/// reached by the homeserver through the balancer on `front`, taken over `takeover_s` after its
/// process dies. `settings` are the plugin's, as YAML lines indented six spaces.
#[allow(clippy::too_many_arguments)]
pub fn write_bridge_config(
    path: &Path,
    homeserver: &str,
    port: u16,
    front: u16,
    database: &str,
    takeover_s: u64,
    plugin: &str,
    settings: &str,
) {
    let mut text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\n\
         listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{front}\n\
         data_dir: data\ndatabase: {database}\n\
         leases:\n  takeover_s: {takeover_s}\nplugins:\n"
    );
    for other in [
        "echo",
        "timeline",
        "ping",
        "moderation",
        "notify",
        "irc",
        "xmpp",
    ] {
        if other != plugin {
            text.push_str(&format!("  {other}: {{enabled: false}}\n"));
        }
    }
    text.push_str(&format!(
        "  {plugin}:\n    enabled: true\n    settings:\n{settings}"
    ));
    std::fs::write(path, text).unwrap();
}

/// An `all`, a `matrix` and a `connections` process in `dir`, and the balancer through which
/// Synapse reaches the two that take transactions (the matrix process first, while it is up).
pub async fn three_processes(dir: &Path) -> (Process, Process, Process, u16) {
    let all = Process::new(dir, "all", free_port());
    let matrix = Process::new(dir, "matrix", free_port());
    let connections = Process::new(dir, "connections", free_port());
    let front = balancer(vec![matrix.port, all.port]).await;
    (all, matrix, connections, front)
}

/// Synapse, started for `processes` on one database: `write(config, homeserver_url, port)`
/// writes a process's configuration. The first process's is written once before Synapse starts,
/// with no homeserver yet, so that the registration of `plugin`, which Synapse reads at its
/// start, exists; then every process's is written with Synapse's URL.
pub async fn synapse_for(
    processes: &[&Process],
    plugin: &str,
    write: impl Fn(&Path, &str, u16),
) -> (Synapse, Registration) {
    let first = processes[0];
    write(&first.config, "http://127.0.0.1:1", first.port);
    let registration_file = registration_path(&first.config, plugin);
    let registration = Registration::from_file(&registration_file).unwrap();
    let synapse = Synapse::start(std::slice::from_ref(&registration_file)).await;
    for process in processes {
        write(&process.config, &synapse.base_url(), process.port);
    }
    (synapse, registration)
}

/// Starts `process`, the first to hold the bridge, and waits until Synapse reaches the
/// appservice.
pub async fn start_holder(process: &mut Process, synapse: &Synapse, registration: &Registration) {
    process.start();
    process.wait_live().await;
    synapse.wait_for_registered(registration).await;
}

/// Makes `user` a moderator (50) of the portal `room`, as `viewer` reads its levels: portals
/// give Matrix users no power by default, and their creator (the bridge's bot) may, through
/// the appservice's token.
pub async fn make_moderator(
    synapse: &Synapse,
    registration: &Registration,
    viewer: &UserClient,
    room: &str,
    user: &str,
) {
    let state = viewer
        .call_ok(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/rooms/{}/state", encode(room)),
            None,
        )
        .await;
    let creator = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .unwrap()["sender"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        encode(room)
    );
    let mut levels = viewer.call_ok(reqwest::Method::GET, &path, None).await;
    levels["users"][user] = serde_json::json!(50);
    synapse
        .client(&creator, &registration.as_token)
        .call_ok(
            reqwest::Method::PUT,
            &format!("{path}?user_id={}", encode(&creator)),
            Some(&levels),
        )
        .await;
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A load balancer in front of the processes that take transactions: each request goes to the
/// first of them that answers, as a balancer's health checks would have it.
pub async fn balancer(backends: Vec<u16>) -> u16 {
    async fn forward(
        State(backends): State<Arc<Vec<u16>>>,
        method: axum::http::Method,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let client = reqwest::Client::new();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        for port in backends.iter() {
            let mut request = client
                .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
                .body(body.clone());
            for name in ["authorization", "content-type"] {
                if let Some(value) = headers.get(name) {
                    request = request.header(name, value.clone());
                }
            }
            if let Ok(response) = request.send().await {
                let status = response.status();
                let bytes = response.bytes().await.unwrap_or_default();
                return (status, [("content-type", "application/json")], bytes).into_response();
            }
        }
        axum::http::StatusCode::BAD_GATEWAY.into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(Arc::new(backends));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}
