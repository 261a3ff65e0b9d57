//! What the tests of several `trestle run` processes on one database share: the processes,
//! and a load balancer in front of those that take transactions.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::IntoResponse};

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
