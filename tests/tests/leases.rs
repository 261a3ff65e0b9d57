//! A room's lease on PostgreSQL, where several processes share the queues: a handler that runs
//! longer than the lease keeps its room (the lease is renewed while it works), and a process
//! that lost its lease drops the handler it was in before another process may take over
//! (fencing), so no event is handled by two processes at once and order holds.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use trestle::{
    Registration, Router,
    router::{EventContext, RawEvent, State},
};
use trestle_tests::appservice::serve_without_homeserver;

/// What the handlers did, in the order they did it.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Start(usize, i64),
    End(usize, i64),
    /// The handler was dropped before it ended.
    Dropped(usize, i64),
}

#[derive(Clone, Default)]
struct Log {
    steps: Arc<Mutex<Vec<Step>>>,
    /// Events already started once: only an event's first run is slow.
    started: Arc<Mutex<Vec<i64>>>,
}

impl Log {
    fn steps(&self) -> Vec<Step> {
        self.steps.lock().unwrap().clone()
    }

    fn push(&self, step: Step) {
        self.steps.lock().unwrap().push(step);
    }

    async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Step]) -> bool) {
        let started = Instant::now();
        while !done(&self.steps()) {
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?}; steps: {:?}",
                self.steps()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Records `Dropped` unless the handler got to its end.
struct DropGuard {
    log: Log,
    instance: usize,
    n: i64,
    ended: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.log.push(Step::Dropped(self.instance, self.n));
        }
    }
}

async fn record(raw: RawEvent, State((instance, log)): State<(usize, Log)>) {
    let event: Value = raw.deserialize().unwrap();
    let n = event["content"]["n"].as_i64().unwrap();
    let slow_ms = event["content"]["slow_ms"].as_u64().unwrap_or(0);
    let first = {
        let mut started = log.started.lock().unwrap();
        let first = !started.contains(&n);
        started.push(n);
        first
    };
    log.push(Step::Start(instance, n));
    let mut guard = DropGuard {
        log: log.clone(),
        instance,
        n,
        ended: false,
    };
    if first {
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    }
    guard.ended = true;
    log.push(Step::End(instance, n));
}

/// `count` appservices on one fresh PostgreSQL database: the database, the registration, the
/// URLs, and what keeps them running.
async fn instances(count: usize, log: &Log) -> (String, Registration, Vec<String>, Vec<Stop>) {
    let url = trestle_tests::postgres::fresh_database().await;
    let reg = Registration::generate("leased", None, "leasedbot", "leased_", "localhost");
    let (mut urls, mut stops) = (Vec::new(), Vec::new());
    for instance in 0..count {
        let router = Router::new()
            .on_type("org.trestle.n", record)
            .with_state((instance, log.clone()));
        let (app_url, stop, _) = serve_without_homeserver(&reg, &url, router).await;
        urls.push(app_url);
        stops.push(stop);
    }
    (url, reg, urls, stops)
}

type Stop = tokio::sync::oneshot::Sender<()>;

const ROOM: &str = "!leased:localhost";

/// Pushes one transaction of events `(n, slow_ms)` in [`ROOM`] to the appservice at `url`.
async fn push(url: &str, reg: &Registration, txn: &str, events: &[(i64, u64)]) {
    let events: Vec<Value> = events
        .iter()
        .map(|(n, slow_ms)| {
            json!({"type": "org.trestle.n", "room_id": ROOM, "sender": "@u:localhost",
                   "event_id": format!("$lease{n}"), "origin_server_ts": 1,
                   "content": {"n": n, "slow_ms": slow_ms}})
        })
        .collect();
    let response = reqwest::Client::new()
        .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
        .bearer_auth(&reg.hs_token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Steps without the instance that made them, to compare the order.
fn order(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|step| match step {
            Step::Start(_, n) => format!("start {n}"),
            Step::End(_, n) => format!("end {n}"),
            Step::Dropped(_, n) => format!("dropped {n}"),
        })
        .collect()
}

#[tokio::test]
async fn a_handler_that_takes_a_minute_keeps_its_room() {
    let log = Log::default();
    let (_, reg, urls, _running) = instances(2, &log).await;
    // A minute: twice the lease's 30 s. Renewed only between events, the lease would run out
    // in the middle, and the other process would take the room and handle the event again.
    push(&urls[0], &reg, "slow", &[(0, 60_000)]).await;
    // Either process may take the room first: both see it pending in the shared store (the
    // other one through its scan, which a lease given back anywhere also wakes).
    log.wait_for("the slow handler starts", Duration::from_secs(30), |s| {
        s.iter().any(|step| matches!(step, Step::Start(_, 0)))
    })
    .await;
    let Step::Start(owner, 0) = log.steps()[0] else {
        panic!(
            "the first step is not the slow handler's start: {:?}",
            log.steps()
        );
    };
    // The rest of the room's events reach the other process, which finds the room leased.
    for n in 1..=3 {
        push(&urls[1 - owner], &reg, &format!("fast{n}"), &[(n, 0)]).await;
    }
    log.wait_for("every event handled", Duration::from_secs(120), |s| {
        (0..=3).all(|n| {
            s.iter()
                .any(|step| matches!(step, Step::End(_, m) if *m == n))
        })
    })
    .await;
    // Time for a handler that should not run (a second run of any event) to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steps = log.steps();
    assert_eq!(
        order(&steps),
        [
            "start 0", "end 0", "start 1", "end 1", "start 2", "end 2", "start 3", "end 3"
        ],
        "each event handled once, in order, the slow one to its end: {steps:?}"
    );
    assert_eq!(
        steps[1],
        Step::End(owner, 0),
        "by the process that started it"
    );
}

#[tokio::test]
async fn a_process_that_lost_its_lease_drops_its_handler_before_another_may_start() {
    let log = Log::default();
    let (db, reg, urls, _running) = instances(1, &log).await;
    push(&urls[0], &reg, "slow", &[(0, 60_000)]).await;
    log.wait_for("the slow handler starts", Duration::from_secs(30), |s| {
        s.contains(&Step::Start(0, 0))
    })
    .await;
    // Another owner takes the room, as one would after this process stalled past the lease.
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let stolen = sqlx::query(
        "UPDATE queue_leases SET owner = 'thief', expires_at = $2 WHERE queue_key = $1",
    )
    .bind(ROOM)
    .bind(trestle::store::now_ms() + 600_000)
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(stolen, 1, "the room's lease was held");
    let taken = Instant::now();
    // The next renewal (a third of the lease, 10 s, at most) finds the lease gone.
    log.wait_for("the handler dropped", Duration::from_secs(15), |s| {
        s.contains(&Step::Dropped(0, 0))
    })
    .await;
    eprintln!("dropped {:?} after the lease was taken", taken.elapsed());
    assert!(!log.steps().contains(&Step::End(0, 0)), "it never ended");
    // The other owner goes away without doing the event: the room is free again, and the
    // event, never marked done, is handled, once.
    sqlx::query("DELETE FROM queue_leases WHERE owner = 'thief'")
        .execute(&pool)
        .await
        .unwrap();
    log.wait_for("handled again", Duration::from_secs(30), |s| {
        s.contains(&Step::End(0, 0))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        order(&log.steps()),
        ["start 0", "dropped 0", "start 0", "end 0"]
    );
}

#[tokio::test]
async fn a_singleton_service_runs_in_one_process_and_moves_when_that_one_stops() {
    let url = trestle_tests::postgres::fresh_database().await;
    let reg = Registration::generate("single", None, "singlebot", "single_", "localhost");
    let runs: Arc<Mutex<Vec<(usize, &'static str)>>> = Arc::default();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for instance in 0..2 {
        let seen = runs.clone();
        let router = Router::new().singleton("ticker", move |app| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((instance, "start"));
                app.stopping().await;
                seen.lock().unwrap().push((instance, "stop"));
                Ok(())
            }
        });
        let (_, stop, task) = serve_without_homeserver(&reg, &url, router).await;
        tasks.push(task);
        stops.push(Some(stop));
    }
    // Long enough for the second process to have looked for the service a few times.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let first = runs.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "one process runs it: {first:?}");
    let (holder, _) = first[0];
    let other = 1 - holder;
    stops[holder].take().unwrap().send(()).unwrap();
    let started = Instant::now();
    while !runs.lock().unwrap().contains(&(other, "start")) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the other process takes it over: {:?}",
            runs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("taken over {:?} after the stop", started.elapsed());
    assert_eq!(
        runs.lock().unwrap().clone(),
        [(holder, "start"), (holder, "stop"), (other, "start")]
    );
    tasks.remove(holder).await.unwrap().unwrap();
}

/// What each handler saw: `(n, take of the room's lease)`, in the order handled.
type Takes = Arc<Mutex<Vec<(i64, u64)>>>;

async fn note_take(raw: RawEvent, ctx: EventContext, State(takes): State<Takes>) {
    let event: Value = raw.deserialize().unwrap();
    let n = event["content"]["n"].as_i64().unwrap();
    let slow_ms = event["content"]["slow_ms"].as_u64().unwrap_or(0);
    takes.lock().unwrap().push((n, ctx.lease_take()));
    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
}

/// An appservice noting takes on the store at `database`: its URL and what keeps it running.
async fn noting(reg: &Registration, database: &str, takes: &Takes) -> (String, Stop) {
    let router = Router::new()
        .on_type("org.trestle.n", note_take)
        .with_state(takes.clone());
    let (url, stop, _) = serve_without_homeserver(reg, database, router).await;
    (url, stop)
}

/// Waits until event `n` was handled; under which take.
async fn handled(takes: &Takes, n: i64) -> u64 {
    let started = Instant::now();
    loop {
        let found = takes.lock().unwrap().iter().find(|(m, _)| *m == n).copied();
        if let Some((_, take)) = found {
            return take;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "event {n} not handled: {takes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no process holds the room's inbox lease: its holder, idle, gave it back.
async fn given_back(pool: &sqlx::PgPool) {
    let started = Instant::now();
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM queue_leases WHERE queue_key = $1 AND appservice_id LIKE 'in:%'",
        )
        .bind(ROOM)
        .fetch_one(pool)
        .await
        .unwrap();
        if held == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the room's lease stays held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which processes take the room is the lanes' test (`framework/src/queues/lanes/processes.rs`,
/// where no scan races the offers); here, that the take reaches the handler.
#[tokio::test]
async fn a_handler_is_told_when_its_rooms_lease_was_taken_again() {
    let database = trestle_tests::postgres::fresh_database().await;
    let reg = Registration::generate("takes", None, "takesbot", "takes_", "localhost");
    let takes = Takes::default();
    let (url, _running) = noting(&reg, &database, &takes).await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    // The process takes the room with event 1, slow; event 2 comes in another transaction
    // while it works: one take.
    push(&url, &reg, "t1", &[(1, 500)]).await;
    let take = handled(&takes, 1).await;
    push(&url, &reg, "t2", &[(2, 0)]).await;
    assert_eq!(handled(&takes, 2).await, take, "one take: {takes:?}");
    // Idle, it gives the room back (another process may take it), and takes it again with
    // event 3: its handler is told.
    given_back(&pool).await;
    push(&url, &reg, "t3", &[(3, 0)]).await;
    assert_ne!(handled(&takes, 3).await, take, "taken again: {takes:?}");
}

#[tokio::test]
async fn on_sqlite_every_event_of_a_room_is_handled_under_one_take() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("store.db").display());
    let reg = Registration::generate("onetake", None, "onetakebot", "onetake_", "localhost");
    let takes = Takes::default();
    let (url, _running) = noting(&reg, &database, &takes).await;
    push(&url, &reg, "t1", &[(1, 0)]).await;
    let take = handled(&takes, 1).await;
    // Long past the moment a worker keeps its room, idle, where processes share the store:
    // here the one process holds every room from its start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    push(&url, &reg, "t2", &[(2, 0)]).await;
    assert_eq!(handled(&takes, 2).await, take);
}
