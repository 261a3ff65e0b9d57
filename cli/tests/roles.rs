//! `trestle run --role`: a matrix-role and a connections-role process on one PostgreSQL
//! database, against Synapse. Commands are answered (by the matrix process, which the
//! homeserver pushes to), the singleton service runs in the connections process only, and a
//! transaction pushed to the connections process is refused with a Matrix error. On SQLite,
//! a role other than `all` is refused at start.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use trestle::Registration;
use trestle_tests::synapse::{Synapse, free_port};

#[path = "support/echo_room.rs"]
mod echo_room;
#[path = "support/registration.rs"]
mod registration;

use echo_room::room_with_echo;
use registration::registration_path;

#[path = "support/running.rs"]
mod running;

use running::Running;

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

fn trestle_run(config: &Path, role: &str, log: &Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    Running(
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(["run", "--role", role])
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

/// A configuration listening on `port`, reached by the homeserver at `public_port`, with the
/// echo and timeline plugins on `database`.
fn write_config(path: &Path, homeserver: &str, port: u16, public_port: u16, database: &str) {
    let text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\n\
         listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{public_port}\n\
         data_dir: data\ndatabase: {database}\n\
         plugins:\n  echo: {{enabled: true}}\n  timeline: {{enabled: true}}\n\
         \x20 ping: {{enabled: false}}\n  moderation: {{enabled: false}}\n\
         \x20 notify: {{enabled: false}}\n  irc: {{enabled: false}}\n  xmpp: {{enabled: false}}\n"
    );
    std::fs::write(path, text).unwrap();
}

async fn wait_for_log(log: &Path, what: &str, timeout: Duration, found: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(&found) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not in {} within {timeout:?}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_matrix_and_a_connections_process_share_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let database = trestle_tests::postgres::fresh_database().await;
    let (matrix_port, connections_port) = (free_port(), free_port());
    let matrix_config = dir.path().join("matrix.yaml");
    let connections_config = dir.path().join("connections.yaml");
    // The registrations exist before Synapse, which reads them at start; its URL comes after.
    write_config(
        &matrix_config,
        "http://127.0.0.1:1",
        matrix_port,
        matrix_port,
        &database,
    );
    let registrations: Vec<PathBuf> = ["echo", "timeline"]
        .iter()
        .map(|p| registration_path(&matrix_config, p))
        .collect();
    let echo = Registration::from_file(&registrations[0]).unwrap();
    let synapse = Synapse::start(&registrations).await;
    write_config(
        &matrix_config,
        &synapse.base_url(),
        matrix_port,
        matrix_port,
        &database,
    );
    // Its own listener, but the homeserver is told the matrix process's URL.
    write_config(
        &connections_config,
        &synapse.base_url(),
        connections_port,
        matrix_port,
        &database,
    );
    let (matrix_log, connections_log) = (
        dir.path().join("matrix.log"),
        dir.path().join("connections.log"),
    );
    let _connections = trestle_run(&connections_config, "connections", &connections_log);
    let _matrix = trestle_run(&matrix_config, "matrix", &matrix_log);
    synapse
        .wait_for_appservice(&echo.id, &echo.as_token, Duration::from_secs(30))
        .await;

    // Commands are answered.
    let (user, room) = room_with_echo(&synapse).await;
    user.send_text(&room, "!echo across roles").await;
    user.wait_for_event(&room, Duration::from_secs(30), |e| {
        e["sender"] == "@echo:localhost" && e["content"]["body"] == "across roles"
    })
    .await;

    // The singleton runs in the connections process, and only there.
    wait_for_log(
        &connections_log,
        "the connections process runs the singleton",
        Duration::from_secs(30),
        |l| l.contains("running the service") && l.contains("timeline-backfill"),
    )
    .await;
    wait_for_log(
        &matrix_log,
        "the matrix process leaves the services out",
        Duration::from_secs(30),
        |l| l.contains("not running the service in this role") && l.contains("timeline-backfill"),
    )
    .await;
    let matrix_text = std::fs::read_to_string(&matrix_log).unwrap();
    assert!(
        !matrix_text.contains("running the service service"),
        "the matrix process runs no service:\n{matrix_text}"
    );

    // `trestle status` reads the database: both processes with their roles, and the
    // singleton's lease held by the connections process.
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&matrix_config)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{status}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let timeline = status
        .split("timeline:")
        .nth(1)
        .unwrap_or_else(|| panic!("no timeline paragraph:\n{status}"));
    let process_lines: Vec<&str> = timeline
        .lines()
        .filter(|l| l.starts_with("  process "))
        .collect();
    assert_eq!(process_lines.len(), 2, "{status}");
    assert!(
        process_lines.iter().any(|l| l.contains("role matrix")),
        "{status}"
    );
    let connections_at = timeline.find("role connections").unwrap();
    let held = &timeline[connections_at..];
    let held = held.split("  process ").next().unwrap();
    assert!(
        held.contains("holds service:timeline timeline-backfill"),
        "the connections process holds the singleton:\n{status}"
    );
    assert!(
        !timeline.contains("of a process gone"),
        "every lease is a live process's:\n{status}"
    );
    // And `/metrics` of each: the connections process holds the singleton's lease.
    let metrics = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let held_line = "trestle_leases_held{appservice=\"timeline\"} ";
    let started = Instant::now();
    loop {
        let text = metrics(connections_port).await;
        if text.contains(&format!("{held_line}1\n")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        metrics(matrix_port)
            .await
            .contains(&format!("{held_line}0\n"))
    );

    // A transaction pushed to the connections process is refused, and says why.
    let response = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{connections_port}/echo/_matrix/app/v1/transactions/stray"
        ))
        .bearer_auth(&echo.hs_token)
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNKNOWN");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("`connections` role") && error.contains("takes no transactions"),
        "{error}"
    );
}

#[test]
fn a_role_other_than_all_is_refused_on_sqlite_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    std::fs::write(
        &config,
        "homeserver:\n  server_name: localhost\n  url: http://127.0.0.1:1\n\
         plugins:\n  echo: {enabled: true}\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["run", "--role", "matrix"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("field `role`")
            && stderr.contains("--role")
            && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
}
