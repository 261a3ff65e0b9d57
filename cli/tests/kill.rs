//! The `trestle` binary killed with SIGKILL in the middle of a burst, then started again:
//! every message is answered exactly once, in order.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use trestle::Registration;
use trestle_tests::synapse::{Synapse, UserClient, free_port};

#[path = "support/echo_room.rs"]
mod echo_room;
#[path = "support/registration.rs"]
mod registration;

use echo_room::room_with_echo;
use registration::registration_path;

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

fn trestle(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("trestle.log"))
        .unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(dir.join("trestle.yaml"))
        .arg("run")
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Writes a configuration for `homeserver` (its URL is patched in after Synapse starts) and
/// the echo plugin's registration; returns the registration's path.
fn configure(dir: &Path, homeserver: &str, port: u16) -> std::path::PathBuf {
    let config = dir.join("trestle.yaml");
    let status = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "init",
            "--server-name",
            "localhost",
            "--force",
            "--homeserver-url",
            homeserver,
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .status()
        .unwrap();
    assert!(status.success());
    registration_path(&config, "echo")
}

async fn echoes(user: &UserClient, room: &str) -> Vec<String> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == "@echo:localhost")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn sigkill_during_a_burst_loses_nothing_and_repeats_nothing() {
    interrupted_burst(false, 500).await;
}

#[tokio::test]
async fn sigterm_during_a_burst_stops_cleanly_and_loses_nothing() {
    interrupted_burst(true, 300).await;
}

/// Sends `total` commands while Trestle is stopped mid-way — by SIGTERM (`graceful`) or
/// SIGKILL — and started again; every command must be answered once, in order.
async fn interrupted_burst(graceful: bool, total: usize) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Synapse's port is not known before it starts, but the registration must exist before:
    // write it first, then point the configuration at the started Synapse.
    let registration_path = configure(dir.path(), "http://127.0.0.1:1", port);
    let registration = Registration::from_file(&registration_path).unwrap();
    let synapse = Synapse::start(std::slice::from_ref(&registration_path)).await;
    let wait_up = async || {
        synapse
            .wait_for_appservice(
                &registration.id,
                &registration.as_token,
                Duration::from_secs(30),
            )
            .await
    };

    configure(dir.path(), &synapse.base_url(), port);
    if graceful {
        // This run also checks JSON logs: each handler's lines carry the room and event.
        let config = dir.path().join("trestle.yaml");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("format: text", "format: json");
        std::fs::write(&config, text).unwrap();
    }
    let mut child = trestle(dir.path());
    wait_up().await;
    let (user, room) = room_with_echo(&synapse).await;

    // The burst goes on while Trestle is killed: part of it is answered before, part is
    // acknowledged but not handled at the kill, part reaches Synapse while Trestle is down.
    // Ten senders at once, so commands arrive faster than they are answered and a backlog
    // builds up in the inbox.
    let mut senders = Vec::new();
    for first in 0..10 {
        let sender = user.clone();
        let room = room.clone();
        senders.push(tokio::spawn(async move {
            for i in (first..total).step_by(10) {
                sender.send_text(&room, &format!("!echo {i}")).await;
            }
        }));
    }
    let started = Instant::now();
    loop {
        let answered = echoes(&user, &room).await.len();
        if answered >= 100 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no echoes before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if graceful {
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "SIGTERM did not stop trestle"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "a graceful stop exits 0: {status}");
    } else {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let at_kill = echoes(&user, &room).await.len();
    eprintln!("killed with {at_kill} of {total} commands answered");
    // A graceful stop may finish everything acknowledged, and that is the point of it.
    assert!(
        graceful || at_kill < total,
        "the burst was over before the kill; nothing was tested"
    );
    let store = trestle::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("data/echo.db").display()
    ))
    .await
    .unwrap();
    let backlog = store.inbox_depth("echo").await.unwrap();
    drop(store);
    eprintln!("{backlog} commands acknowledged but not handled at the kill");
    // After SIGTERM there may be none: finishing in-flight work is what it is for.
    if !graceful {
        assert!(
            backlog > 0,
            "the kill left no acknowledged work behind; nothing was tested"
        );
    }
    for sender in senders {
        sender.await.unwrap();
    }
    // Echoes come in the order the commands are in the room.
    let expected: Vec<String> = user
        .messages(&room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == user.user_id.as_str() && e["type"] == "m.room.message")
        .filter_map(|e| {
            e["content"]["body"]
                .as_str()?
                .strip_prefix("!echo ")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(expected.len(), total);

    let mut child = trestle(dir.path());
    wait_up().await;
    let started = Instant::now();
    let got = loop {
        let got = echoes(&user, &room).await;
        if got.len() >= total || started.elapsed() > Duration::from_secs(120) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // A little longer, to catch duplicates that would come after the last expected echo.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_later = echoes(&user, &room).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("trestle.log")).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        got, expected,
        "killed after {at_kill} echoes; trestle log tail:\n{tail}"
    );
    assert_eq!(got_later, expected, "no duplicates after the burst");
    if graceful {
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect();
        assert!(!lines.is_empty(), "no JSON log lines:\n{tail}");
        let in_handler = lines
            .iter()
            .find(|l| l["span"]["room_id"] == room.as_str())
            .unwrap_or_else(|| panic!("no log line with the room id on its span:\n{tail}"));
        assert_eq!(in_handler["span"]["appservice"], "echo");
        assert!(
            in_handler["span"]["event_id"]
                .as_str()
                .is_some_and(|e| e.starts_with('$'))
        );
    }
}
