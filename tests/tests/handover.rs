//! Two real processes (the test appservice, `src/bin/trestle-test-app.rs`) on one PostgreSQL
//! database: one that stops cleanly (SIGTERM) hands its rooms and its singleton service to the
//! other at once, and one that dies (SIGKILL) is taken over within the configured takeover time.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use trestle::Registration;
use trestle_tests::synapse::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_trestle-test-app");
const ROOM: &str = "!handover:localhost";

/// What the processes said, in the order the test read it.
#[derive(Clone, Default)]
struct Said(Arc<Mutex<Vec<Value>>>);

impl Said {
    fn lines(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }

    /// The first line of `app` with `step` (and event `n`).
    fn find(&self, app: &str, step: &str, n: Option<i64>) -> Option<Value> {
        self.lines()
            .into_iter()
            .find(|l| l["app"] == app && l["step"] == step && n.is_none_or(|n| l["n"] == json!(n)))
    }

    async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) {
        let started = Instant::now();
        while !done(&self.lines()) {
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?}; said: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct App {
    child: Child,
    url: String,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the test appservice `name` on `database`, its lines gathered in `said`, and waits
/// until it listens.
async fn start(
    name: &str,
    registration: &std::path::Path,
    database: &str,
    takeover_s: u64,
    said: &Said,
) -> App {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([name, registration.to_str().unwrap(), database])
        .arg(port.to_string())
        .arg(takeover_s.to_string())
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = said.0.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                lines.lock().unwrap().push(value);
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/_matrix/app/v1/ping"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} listens"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    App { child, url }
}

/// Pushes events `n` in [`ROOM`], each slow (`slow_ms`) where handled by `slow_in`.
async fn push(app: &App, reg: &Registration, txn: &str, events: &[(i64, u64, &str)]) {
    let events: Vec<Value> = events
        .iter()
        .map(|(n, slow_ms, slow_in)| {
            json!({"type": "org.trestle.n", "room_id": ROOM, "sender": "@u:localhost",
                   "event_id": format!("$handover{n}"), "origin_server_ts": 1,
                   "content": {"n": n, "slow_ms": slow_ms, "slow_in": slow_in}})
        })
        .collect();
    let response = reqwest::Client::new()
        .put(format!("{}/_matrix/app/v1/transactions/{txn}", app.url))
        .bearer_auth(&reg.hs_token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn at(line: &Value) -> i64 {
    line["at"].as_i64().unwrap()
}

/// A database, the registration both processes serve, and its file.
async fn setup(dir: &tempfile::TempDir) -> (String, Registration, std::path::PathBuf) {
    let database = trestle_tests::postgres::fresh_database().await;
    let reg = Registration::generate("handover", None, "handoverbot", "handover_", "localhost");
    let path = dir.path().join("registration.yaml");
    reg.write_file(&path).unwrap();
    (database, reg, path)
}

#[tokio::test]
async fn a_process_stopped_with_sigterm_hands_its_room_and_singleton_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (database, reg, path) = setup(&dir).await;
    let said = Said::default();
    // The default takeover (15 s): what a clean stop must not wait for.
    let mut a = start("a", &path, &database, 15, &said).await;
    said.wait_for("a runs the singleton", Duration::from_secs(10), |l| {
        l.iter()
            .any(|l| l["app"] == "a" && l["step"] == "ticker start")
    })
    .await;
    let _b = start("b", &path, &database, 15, &said).await;
    // Ten events of half a second each: five seconds of work, which a stops in the middle of.
    let events: Vec<(i64, u64, &str)> = (0..10).map(|n| (n, 500, "a")).collect();
    push(&a, &reg, "burst", &events).await;
    said.wait_for("a handles event 3", Duration::from_secs(20), |l| {
        l.iter()
            .any(|l| l["app"] == "a" && l["step"] == "start" && l["n"] == 3)
    })
    .await;
    let kill = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    said.wait_for("every event handled", Duration::from_secs(40), |l| {
        (0..10).all(|n| l.iter().any(|l| l["step"] == "end" && l["n"] == n))
    })
    .await;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "a stops");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean stop exits 0: {status}");
    said.wait_for("b runs the singleton", Duration::from_secs(20), |l| {
        l.iter()
            .any(|l| l["app"] == "b" && l["step"] == "ticker start")
    })
    .await;
    // Time for a second run of anything to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = said.lines();
    let handled: Vec<(String, String, i64)> = lines
        .iter()
        .filter(|l| l["step"] == "start" || l["step"] == "end")
        .map(|l| {
            (
                l["app"].as_str().unwrap().to_owned(),
                l["step"].as_str().unwrap().to_owned(),
                l["n"].as_i64().unwrap(),
            )
        })
        .collect();
    // Each event once, in order: a finished the one in hand, b did the rest.
    let last_of_a = handled
        .iter()
        .filter(|(app, step, _)| app == "a" && step == "end")
        .map(|(_, _, n)| *n)
        .max()
        .unwrap();
    assert!(
        (3..9).contains(&last_of_a),
        "a finished event 3 or a little later, not the burst: {handled:?}"
    );
    let mut expected = Vec::new();
    for n in 0..10 {
        let app = if n <= last_of_a { "a" } else { "b" };
        expected.push((app.to_owned(), "start".to_owned(), n));
        expected.push((app.to_owned(), "end".to_owned(), n));
    }
    assert_eq!(handled, expected, "each event once, in order");
    // b took the room at once: within a second of a's last event, not a lease's life later.
    let a_done = at(&said.find("a", "end", Some(last_of_a)).unwrap());
    let b_first = at(&said.find("b", "start", Some(last_of_a + 1)).unwrap());
    assert!(
        b_first - a_done < 1000,
        "b took the room {} ms after a's last event",
        b_first - a_done
    );
    let a_stop = at(&said.find("a", "ticker stop", None).unwrap());
    let b_start = at(&said.find("b", "ticker start", None).unwrap());
    assert!(
        b_start - a_stop < 1000,
        "b took the singleton {} ms after a stopped it",
        b_start - a_stop
    );
}

#[tokio::test]
async fn a_killed_process_is_taken_over_within_the_takeover_time() {
    let dir = tempfile::tempdir().unwrap();
    let (database, reg, path) = setup(&dir).await;
    let said = Said::default();
    let takeover_s = 3;
    let mut a = start("a", &path, &database, takeover_s, &said).await;
    said.wait_for("a runs the singleton", Duration::from_secs(10), |l| {
        l.iter()
            .any(|l| l["app"] == "a" && l["step"] == "ticker start")
    })
    .await;
    let b = start("b", &path, &database, takeover_s, &said).await;
    // An event a never finishes, and one behind it.
    push(&a, &reg, "slow", &[(0, 600_000, "a"), (1, 0, "a")]).await;
    said.wait_for("a starts event 0", Duration::from_secs(20), |l| {
        l.iter()
            .any(|l| l["app"] == "a" && l["step"] == "start" && l["n"] == 0)
    })
    .await;
    // Long enough for a's leases to have been renewed at least once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    // The leases run out after the takeover time; b looks for free work every 2 s.
    let within = Duration::from_secs(takeover_s + 3);
    said.wait_for("b takes the room over", within, |l| {
        l.iter()
            .any(|l| l["app"] == "b" && l["step"] == "end" && l["n"] == 1)
    })
    .await;
    said.wait_for("b takes the singleton over", within, |l| {
        l.iter()
            .any(|l| l["app"] == "b" && l["step"] == "ticker start")
    })
    .await;
    eprintln!("taken over within {:?} of the kill", killed.elapsed());
    // b counts what it took over (the room's queue and the singleton), at its next heartbeat.
    let started = Instant::now();
    loop {
        let text = reqwest::get(format!("{}/metrics", b.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let taken: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("trestle_lease_takeovers_total{appservice=\"handover\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if taken >= 2.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_handled: Vec<(String, i64)> = said
        .lines()
        .iter()
        .filter(|l| l["app"] == "b" && (l["step"] == "start" || l["step"] == "end"))
        .map(|l| {
            (
                l["step"].as_str().unwrap().to_owned(),
                l["n"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
        .map(|(s, n)| (s.to_owned(), n))
        .to_vec();
    assert_eq!(b_handled, expected, "b did both, in order, once");
}
