//! Nothing lost: homeserver outages, rate limits, and several processes on one PostgreSQL
//! database. Each test checks that every message arrives exactly once and in order.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::Row;
use trestle::{
    Registration, Router,
    router::{RawEvent, Room, State},
    ruma::RoomId,
};
use trestle_tests::{
    appservice::{Harness, WAIT, serve_without_homeserver},
    synapse::UserClient,
};

fn registration(id: &str, prefix: &str) -> Registration {
    Registration::generate(id, None, format!("{id}bot"), prefix, "localhost")
}

/// The bodies of the `m.room.message` events `sender` sent to `room`, oldest first.
async fn bodies_from(user: &UserClient, room: &str, sender: &str) -> Vec<String> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_for_bodies(
    user: &UserClient,
    room: &str,
    sender: &str,
    expected: &[String],
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        let got = bodies_from(user, room, sender).await;
        if got.len() >= expected.len() || started.elapsed() > timeout {
            assert_eq!(got, expected, "every message exactly once, in order");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn messages_sent_while_synapse_is_down_arrive_in_order_once_it_is_back() {
    let mut harness = Harness::start(registration("outage", "outage_"), Router::new()).await;
    let (user, room) = harness.user_in_room_with_bot("olga").await;
    let room_id = RoomId::parse(&room).unwrap();
    let bot = harness.app.bot();
    bot.send_text(&room_id, "before").await.unwrap();

    harness.synapse.stop();
    let expected: Vec<String> = (0..200).map(|i| format!("message {i}")).collect();
    let mut deliveries = Vec::new();
    for body in &expected {
        deliveries.push(bot.send_text(&room_id, body).queue().await.unwrap());
    }
    assert_eq!(harness.app.outbox_depth().await.unwrap(), 200);
    // A minute of downtime: long enough for the back-off to reach its ceiling.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        harness.app.outbox_depth().await.unwrap() > 0,
        "nothing can be sent while it is down"
    );
    harness.synapse.restart().await;

    let last = deliveries.pop().unwrap();
    let event_id = tokio::time::timeout(Duration::from_secs(120), last)
        .await
        .unwrap()
        .unwrap();
    assert!(event_id.is_some());
    let mut all = vec!["before".to_owned()];
    all.extend(expected);
    wait_for_bodies(&user, &room, harness.app.bot_user_id().as_str(), &all, WAIT).await;
    assert_eq!(harness.app.outbox_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_rate_limited_burst_arrives_whole_paced_by_retry_after() {
    let mut reg = registration("limited", "limited_");
    reg.rate_limited = Some(true);
    // Two messages a second after a burst of three, for everyone the appservice does not exempt.
    let limits = "rc_message: {per_second: 2, burst_count: 3}";
    let harness = Harness::start_with(&mut reg, Router::new(), limits).await;
    let (user, room) = harness.user_in_room_with_bot("lena").await;
    let room_id = RoomId::parse(&room).unwrap();
    let ghost = harness.app.ghost("limited_burst").unwrap();
    ghost.ensure_joined(&room_id).await.unwrap();

    let expected: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
    let started = Instant::now();
    let mut deliveries = Vec::new();
    for body in &expected {
        deliveries.push(ghost.send_text(&room_id, body).queue().await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let took = started.elapsed();
    wait_for_bodies(&user, &room, "@limited_burst:localhost", &expected, WAIT).await;

    // Synapse refused some with 429 and the outbox waited: 17 messages past the burst at two a
    // second cannot take less than about 8 s.
    let retries: i64 = sqlx::query("SELECT COALESCE(SUM(attempts), 0) FROM outbox")
        .fetch_one(harness.app.store().pool())
        .await
        .unwrap()
        .get(0);
    assert!(retries > 0, "Synapse rate-limited the burst");
    assert!(
        took >= Duration::from_secs(7),
        "paced by retry_after_ms: {took:?}"
    );
}

type Seen = Arc<Mutex<Vec<(usize, String, i64)>>>;

async fn record(raw: RawEvent, Room(room): Room, State((instance, seen)): State<(usize, Seen)>) {
    let event: Value = raw.deserialize().unwrap();
    let n = event["content"]["n"].as_i64().unwrap();
    // Slow enough that both instances have work in flight at once.
    tokio::time::sleep(Duration::from_millis(2)).await;
    seen.lock().unwrap().push((instance, room.to_string(), n));
}

#[tokio::test]
async fn two_instances_on_one_postgres_database_handle_each_event_once_in_order() {
    let url = trestle_tests::postgres::fresh_database().await;
    let reg = registration("shared", "shared_");
    let seen = Seen::default();
    let mut urls = Vec::new();
    // Kept: dropping one stops its instance.
    let mut stops = Vec::new();
    for instance in 0..2 {
        let router = Router::new()
            .on_type("org.trestle.n", record)
            .with_state((instance, seen.clone()));
        let (url, stop, _) = serve_without_homeserver(&reg, &url, router).await;
        urls.push(url);
        stops.push(stop);
    }

    // Transactions spread over both instances, as behind a load balancer; some sent to both.
    let rooms = ["!one:localhost", "!two:localhost", "!three:localhost"];
    let per_room = 60i64;
    let http = reqwest::Client::new();
    for txn in 0..(per_room as usize) {
        let events: Vec<Value> = rooms
            .iter()
            .map(|room| {
                json!({"type": "org.trestle.n", "room_id": room, "sender": "@u:localhost",
                       "event_id": format!("$e{txn}{room}"), "origin_server_ts": 1, "content": {"n": txn}})
            })
            .collect();
        let targets = if txn % 7 == 0 {
            vec![0, 1]
        } else {
            vec![txn % 2]
        };
        for target in targets {
            let response = http
                .put(format!(
                    "{}/_matrix/app/v1/transactions/{txn}",
                    urls[target]
                ))
                .bearer_auth(&reg.hs_token)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }

    let started = Instant::now();
    while seen.lock().unwrap().len() < rooms.len() * per_room as usize && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        rooms.len() * per_room as usize,
        "each event handled exactly once"
    );
    for room in rooms {
        let order: Vec<i64> = seen
            .iter()
            .filter(|(_, r, _)| r == room)
            .map(|(_, _, n)| *n)
            .collect();
        assert_eq!(
            order,
            (0..per_room).collect::<Vec<_>>(),
            "in order in {room}"
        );
    }
    // Which instance did the work depends on timing (whoever holds a room's lease drains it);
    // what matters above is that no event was handled by both, or out of order.
    let by_instance = |i| {
        seen.iter()
            .filter(|(instance, _, _)| *instance == i)
            .count()
    };
    eprintln!(
        "instance 0 handled {}, instance 1 handled {}",
        by_instance(0),
        by_instance(1)
    );
}
