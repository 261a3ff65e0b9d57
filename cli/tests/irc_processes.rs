//! The IRC bridge in three `trestle run` processes on one PostgreSQL database (a `matrix`, a
//! `connections` and an `all` one), against a real Synapse and a real ngircd: Matrix messages
//! and IRC lines flow both ways while the processes are killed (SIGKILL) and restarted
//! (SIGTERM) in turn. Every message arrives exactly once, in order; the IRC connection is
//! held by one process at a time and is back within the takeover time.
//!
//! ngircd reads at most about three lines a second from a client, the bridge's bot included,
//! so the bursts of [`MESSAGES`] each way (the 500) take about three minutes of
//! ngircd's pace; `TRESTLE_PROCESSES_MESSAGES` sets another number for a quicker try.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/irc_config.rs"]
mod irc_config;
#[allow(dead_code)]
#[path = "../../bridges/irc/tests/support/ngircd.rs"]
mod ngircd;
#[path = "support/processes.rs"]
mod processes;
#[allow(dead_code)]
#[path = "../../bridges/irc/tests/support/raw.rs"]
mod raw;
#[path = "support/registration.rs"]
mod registration;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use irc_config::{TAKEOVER_S, write_config};
use ngircd::Ngircd;
use processes::{make_moderator, start_holder, synapse_for, three_processes};
use raw::RawClient;
use trestle_tests::synapse::UserClient;

/// Each way, in the burst (see the module's documentation).
const MESSAGES: usize = 500;
const ALIAS: &str = "#irc_test_chat:localhost";
const BOB_GHOST: &str = "@irc_test_bob:localhost";

/// What the IRC side saw: the bridge bot's presence in `#chat` and the lines it relayed.
#[derive(Default)]
struct Seen {
    /// Whether the bot is in `#chat`, and since when it was last away.
    present: AtomicBool,
    away_since: Mutex<Option<Instant>>,
    /// How long each absence of the bot lasted.
    absences: Mutex<Vec<Duration>>,
    /// The numbers of the Matrix messages relayed, in the order they came.
    relayed: Mutex<Vec<usize>>,
    /// The numbers of bob's lines as the channel had them, in order, each with whether the
    /// bridge's bot was there to hear it.
    said: Mutex<Vec<(usize, bool)>>,
}

impl Seen {
    /// Bob's lines the bot was there to hear, in order, and how many it was not.
    fn heard(&self) -> (Vec<usize>, usize) {
        let said = self.said.lock().unwrap();
        let heard = said.iter().filter(|(_, by_bot)| *by_bot).map(|(n, _)| *n);
        (
            heard.collect(),
            said.iter().filter(|(_, by_bot)| !by_bot).count(),
        )
    }
}

/// The number in `text` after `prefix` (`mx0042` → 42).
fn number_after(text: &str, prefix: &str) -> Option<usize> {
    let at = text.find(prefix)? + prefix.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Reads `#chat` as `watcher` until the test ends; `ticker` tells it something every few
/// seconds, so that it never waits long for a line (the client gives up after 30 s).
async fn watch(mut watcher: RawClient, mut ticker: RawClient, seen: Arc<Seen>) {
    let nick = watcher.nick.clone();
    tokio::spawn(async move {
        loop {
            ticker.privmsg(&nick, "tick").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    loop {
        let line = watcher.expect(|_| true).await;
        // The bot's nick, or the one it takes while its old connection is still known.
        let bot = line.nick.starts_with("trestle");
        match line.command.as_str() {
            "JOIN" if bot => {
                seen.present.store(true, Ordering::SeqCst);
                if let Some(since) = seen.away_since.lock().unwrap().take() {
                    seen.absences.lock().unwrap().push(since.elapsed());
                }
            }
            "QUIT" | "PART" if bot => {
                seen.present.store(false, Ordering::SeqCst);
                *seen.away_since.lock().unwrap() = Some(Instant::now());
            }
            "PRIVMSG" if bot => {
                if let Some(n) = number_after(line.param(1), "mx") {
                    seen.relayed.lock().unwrap().push(n);
                }
            }
            "PRIVMSG" if line.nick == "bob" => {
                if let Some(n) = number_after(line.param(1), "ix") {
                    let present = seen.present.load(Ordering::SeqCst);
                    seen.said.lock().unwrap().push((n, present));
                }
            }
            _ => {}
        }
    }
}

/// Bob says `ix<n>` for each `n` in `range`, a line every `pace`, while the bridge's bot is in
/// the channel: IRC keeps no history, so what is said while nobody of the bridge listens is not
/// the bridge's to lose. (A line sent just as the bot leaves reaches the channel after it left:
/// the watcher, who sees the channel in the server's order, tells those apart.)
async fn bob_says(bob: &mut RawClient, seen: &Seen, range: std::ops::Range<usize>, pace: Duration) {
    for n in range {
        while !seen.present.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bob.privmsg("#chat", &format!("ix{n:04}")).await;
        tokio::time::sleep(pace).await;
    }
}

/// Kim sends `mx<n>` for each `n` in `range`, a message every `pace`.
async fn kim_says(kim: &UserClient, room: &str, range: std::ops::Range<usize>, pace: Duration) {
    for n in range {
        kim.send_text(room, &format!("mx{n:04}")).await;
        tokio::time::sleep(pace).await;
    }
}

/// The numbers of bob's lines in the room, in timeline order.
async fn bridged_lines(kim: &UserClient, room: &str) -> Vec<usize> {
    kim.messages(room)
        .await
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == BOB_GHOST)
        .filter_map(|e| number_after(e["content"]["body"].as_str()?, "ix"))
        .collect()
}

/// Waits until kim's messages `0..count` reached IRC and bob's lines the bot heard (of
/// `0..count`, all said by now) reached Matrix, then checks both exactly: once each, in order.
async fn expect_all(kim: &UserClient, room: &str, seen: &Seen, count: usize, timeout: Duration) {
    let want: Vec<usize> = (0..count).collect();
    let started = Instant::now();
    loop {
        let relayed = seen.relayed.lock().unwrap().clone();
        let (heard, unheard) = seen.heard();
        let lines = bridged_lines(kim, room).await;
        if relayed.len() >= count && heard.len() + unheard >= count && lines.len() >= heard.len() {
            assert_eq!(relayed, want, "Matrix → IRC: each once, in order");
            assert_eq!(lines, heard, "IRC → Matrix: each once, in order");
            return;
        }
        let missing = |want: &[usize], got: &[usize]| -> Vec<usize> {
            want.iter().filter(|n| !got.contains(n)).copied().collect()
        };
        assert!(
            started.elapsed() < timeout,
            "not everything arrived within {timeout:?}: Matrix → IRC {} of {count} (missing \
             {:?}), IRC → Matrix {} of {} (missing {:?})",
            relayed.len(),
            missing(&want, &relayed),
            lines.len(),
            heard.len(),
            missing(&heard, &lines),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn three_processes_bridge_irc_exactly_once_through_kills_and_restarts() {
    let count: usize = std::env::var("TRESTLE_PROCESSES_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let database = trestle_tests::postgres::fresh_database().await;
    let irc = Ngircd::start().await;
    let (mut all, mut matrix, mut connections, front) = three_processes(dir.path()).await;
    let (synapse, registration) = synapse_for(
        &[&all, &matrix, &connections],
        "irc",
        |config, url, port| write_config(config, url, port, front, &database, irc.port),
    )
    .await;

    // The `all` process alone first: it holds the bridge, and the portal is made.
    let mut watcher = RawClient::connect(irc.port, "watcher").await;
    watcher.join("#chat").await;
    let mut bob = RawClient::connect(irc.port, "bob").await;
    bob.join("#chat").await;
    start_holder(&mut all, &synapse, &registration).await;
    watcher
        .expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let seen = Arc::new(Seen::default());
    seen.present.store(true, Ordering::SeqCst);
    let ticker = RawClient::connect(irc.port, "ticker").await;
    tokio::spawn(watch(watcher, ticker, seen.clone()));
    let kim = synapse.register_user("kim", "password-1234").await;
    let room = kim.join(ALIAS).await;
    matrix.start();
    connections.start();
    matrix.wait_live().await;
    connections.wait_live().await;

    // The burst, both ways at once, while each process in turn goes: the matrix process is
    // killed and started again, then the holder of the bridge (`all`) and the next holder
    // (`connections`) are restarted cleanly.
    // Below ngircd's pace, so that no backlog of bob's lines builds up on the server (it
    // would reach the channel whenever, the bot there or not).
    let pace = Duration::from_millis(350);
    let quarter = count / 4;
    let senders = async {
        tokio::join!(
            kim_says(&kim, &room, 0..count, pace),
            bob_says(&mut bob, &seen, 0..count, pace)
        )
    };
    let disruptions = async {
        let relayed = || seen.relayed.lock().unwrap().len();
        wait_until("a quarter relayed", Duration::from_secs(120), || {
            relayed() >= quarter
        })
        .await;
        matrix.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        matrix.start();
        wait_until("half relayed", Duration::from_secs(120), || {
            relayed() >= 2 * quarter
        })
        .await;
        all.stop().await;
        all.start();
        wait_until("three quarters relayed", Duration::from_secs(120), || {
            relayed() >= 3 * quarter
        })
        .await;
        // The bridge is with `connections` since `all` stopped: it goes back to `all`.
        connections.stop().await;
        connections.start();
    };
    tokio::join!(senders, disruptions);
    expect_all(&kim, &room, &seen, count, Duration::from_secs(180)).await;
    // Each clean handover took the bot away for well under the takeover time, so that hardly
    // any line was said while it was away.
    let (_, unheard) = seen.heard();
    assert!(unheard <= 4, "{unheard} lines said while the bot was away");
    let absences = seen.absences.lock().unwrap().clone();
    assert_eq!(absences.len(), 2, "the bot moved twice: {absences:?}");
    for absence in &absences {
        assert!(
            *absence < Duration::from_secs(TAKEOVER_S),
            "a clean handover: {absences:?}"
        );
    }

    // The holder (`all`) dies: the `connections` process takes the bridge over within the
    // takeover time, and what kim said meanwhile (handed over by the matrix process) goes out
    // then, once, in order.
    connections.wait_live().await;
    let killed = Instant::now();
    all.kill();
    let more = count + 10;
    kim_says(&kim, &room, count..more, Duration::from_millis(100)).await;
    wait_until(
        "the bot back after the holder died",
        Duration::from_secs(TAKEOVER_S + 20),
        || seen.present.load(Ordering::SeqCst) && seen.absences.lock().unwrap().len() == 3,
    )
    .await;
    let back_after = killed.elapsed();
    eprintln!(
        "the bot was away {absences:?} at the clean handovers, {back_after:?} after the kill"
    );
    assert!(
        back_after < Duration::from_secs(TAKEOVER_S + 5),
        "taken over within the takeover time (and a connection's set-up): {back_after:?}"
    );
    bob_says(&mut bob, &seen, count..more, pace).await;
    expect_all(&kim, &room, &seen, more, Duration::from_secs(60)).await;

    // The IRC bridge's own handler, beyond the kit's: a topic received by the matrix process
    // reaches IRC through the holder (`connections`).
    make_moderator(&synapse, &registration, &kim, &room, "@kim:localhost").await;
    kim.send_state(
        &room,
        "m.room.topic",
        "",
        serde_json::json!({"topic": "set across processes"}),
    )
    .await;
    let topic = bob
        .expect(|l| l.command == "TOPIC" && l.param(1) == "set across processes")
        .await;
    assert_eq!(topic.param(0), "#chat");

    // The holder shows what waits for it: nothing, now.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", connections.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trestle_bridge_handoff_depth{appservice=\"irc\"} 0\n"),
        "{metrics}"
    );

    // The matrix process sent nothing to IRC itself: it handed kim's messages over.
    let logs = |role: &str| -> String {
        (1..=3)
            .filter_map(|n| {
                std::fs::read_to_string(dir.path().join(format!("{role}.{n}.log"))).ok()
            })
            .collect()
    };
    let matrix_logs = logs("matrix");
    assert!(
        matrix_logs.contains("handed to the process that holds the logins"),
        "the matrix process hands events over:\n{matrix_logs}"
    );
    assert!(
        matrix_logs.contains("not running the service in this role"),
        "{matrix_logs}"
    );
    assert!(
        matrix_logs.lines().any(|line| line
            .contains("handed to the process that holds the logins")
            && line.contains("event_type=\"m.room.topic\"")),
        "the topic was received by the matrix process: {matrix_logs}"
    );
}
