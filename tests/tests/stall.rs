//! No stall without a sound (issue 18): when the inbox journal cannot be committed, the
//! appservice turns not-ready with the reason, logs an error, counts it in `/metrics`, and
//! refuses transactions so that Synapse keeps them; once the cause goes away it is ready again
//! and every event is handled exactly once.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::net::TcpListener;
use trestle_host::{Host, config::Config, ensure_registration};
use trestle_tests::synapse::{Synapse, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// Log lines, kept to be read by the test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn lines(&self, level: &str, containing: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && l.contains(containing))
            .count()
    }
}

fn config(dir: &std::path::Path, port: u16, homeserver: &str) -> Config {
    let text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\nlisten: 127.0.0.1:{port}\n\
         durability: disk\nplugins:\n  echo:\n    settings:\n      command_prefix: \"!\"\n"
    );
    let path = dir.join("trestle.yaml");
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap()
}

/// Polls `check` every 100 ms until it is true; panics after [`WAIT`] saying `what`.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_journal_that_cannot_be_committed_is_not_ready_until_it_can_and_loses_nothing() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("warn,trestle=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let early = config(dir.path(), port, "http://127.0.0.1:1");
    ensure_registration(&early, &trestle_echo::PLUGIN).unwrap();
    let registrations: Vec<PathBuf> = vec![early.registration_path("echo")];
    let synapse = Synapse::start(&registrations).await;
    let config = config(dir.path(), port, &synapse.base_url());
    let host = Host::new(&config, &[trestle_echo::PLUGIN]).await.unwrap();
    let app = host.apps().next().unwrap().1.clone();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(host.clone().run(listener, std::future::pending()));
    let registration = app.registration();
    synapse
        .wait_for_appservice(&registration.id, &registration.as_token, WAIT)
        .await;

    let user = synapse.register_user("ines", "password-1234").await;
    let room = user.create_room(json!({"preset": "private_chat"})).await;
    user.invite(&room, "@echo:localhost").await;
    user.wait_for_event(&room, WAIT, |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == "@echo:localhost"
            && e["content"]["membership"] == "join"
    })
    .await;
    let echoed = |body: &'static str| {
        move |e: &serde_json::Value| {
            e["sender"] == "@echo:localhost" && e["content"]["body"] == body
        }
    };
    user.send_text(&room, "!echo before").await;
    user.wait_for_event(&room, WAIT, echoed("before")).await;

    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let metric = async |name: &str| -> f64 {
        let line = format!("{name}{{appservice=\"echo\"}} ");
        let (_, text) = get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert_eq!(get("/health/ready").await.0, 200);
    assert_eq!(metric("trestle_journal_stalled").await, 0.0);
    assert_eq!(metric("trestle_journal_commit_failures_total").await, 0.0);

    // The cause: every insert into the inbox fails in SQLite, as on a full disk.
    sqlx::query(
        "CREATE TRIGGER disk_full BEFORE INSERT ON inbox \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END",
    )
    .execute(app.store().pool())
    .await
    .unwrap();
    user.send_text(&room, "!echo during 1").await;
    until("not ready", async || get("/health/ready").await.0 == 503).await;
    let (_, reason) = get("/health/ready").await;
    assert!(
        reason.starts_with("echo: the inbox journal cannot be committed to the database")
            && reason.contains("database or disk is full (simulated)")
            && reason.contains("check the disk space and the permissions of")
            && reason.contains("echo.db"),
        "{reason}"
    );
    assert_eq!(metric("trestle_journal_stalled").await, 1.0);
    assert!(metric("trestle_journal_commit_failures_total").await >= 3.0);
    // What Synapse gets meanwhile: an error, so it keeps the transaction and retries.
    let refused = reqwest::Client::new()
        .put(format!("{base}/echo/_matrix/app/v1/transactions/probe"))
        .bearer_auth(&registration.hs_token)
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 500);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNKNOWN");
    user.send_text(&room, "!echo during 2").await;
    user.send_text(&room, "!echo during 3").await;
    // Still stalled after more failures, and said once (at most once a minute).
    until("more failures", async || {
        metric("trestle_journal_commit_failures_total").await >= 6.0
    })
    .await;
    assert_eq!(get("/health/ready").await.0, 503);
    assert_eq!(
        logs.lines("ERROR", "Received transactions are refused"),
        1,
        "{}",
        logs.text()
    );

    // The cause goes away: ready again, and every event handled once.
    sqlx::query("DROP TRIGGER disk_full")
        .execute(app.store().pool())
        .await
        .unwrap();
    until("ready again", async || get("/health/ready").await.0 == 200).await;
    assert_eq!(metric("trestle_journal_stalled").await, 0.0);
    assert_eq!(
        logs.lines("INFO", "taking transactions again"),
        1,
        "{}",
        logs.text()
    );
    for body in ["during 1", "during 2", "during 3"] {
        user.wait_for_event(&room, WAIT, echoed(body)).await;
    }
    user.send_text(&room, "!echo after").await;
    user.wait_for_event(&room, WAIT, echoed("after")).await;
    let echoes: Vec<String> = user
        .messages(&room)
        .await
        .iter()
        .filter(|e| e["sender"] == "@echo:localhost" && e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        echoes,
        ["before", "during 1", "during 2", "during 3", "after"],
        "each event handled exactly once, in order"
    );
}
