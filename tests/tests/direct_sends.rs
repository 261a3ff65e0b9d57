//! An appservice on PostgreSQL against Synapse: a handler's awaited sends to a room whose
//! outbox lease this process holds, idle, go to the homeserver directly, without an outbox
//! row and its outcome (two commits each), in order; the first, which finds no worker holding
//! the lease, goes through the outbox and leaves its worker holding it.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;
use tokio::net::TcpListener;
use trestle::{Appservice, Router, Store, router::Room};
use trestle_tests::synapse::{Synapse, free_port};

const SENDS: usize = 5;

#[tokio::test]
async fn awaited_sends_under_a_held_outbox_lease_make_no_outbox_rows() {
    let dir = tempfile::tempdir().unwrap();
    let database = trestle_tests::postgres::fresh_database().await;
    let port = free_port();
    let (synapse, registration) =
        Synapse::start_pushing_to(dir.path(), ("direct", "directbot", "direct_"), port).await;
    // Each send awaited, the next a moment later: the outbox's worker, idle after the first,
    // keeps the room's lease a quarter of a second.
    let router = Router::new().command("five", |Room(room): Room, app: Appservice| async move {
        for n in 0..SENDS {
            app.bot().send_text(&room, &format!("send {n}")).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, trestle::Error>(())
    });
    let app = Appservice::builder(registration.clone(), synapse.base_url(), "localhost")
        .router(router)
        .store(Store::connect(&database).await.unwrap())
        .build()
        .await
        .unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(app.clone().run(listener, std::future::pending()));
    synapse.wait_for_registered(&registration).await;

    let user = synapse.register_user("dana", "password-1234").await;
    let room = user
        .create_room(json!({"name": "direct", "preset": "private_chat"}))
        .await;
    let bot = app.bot_user_id().to_string();
    user.invite(&room, &bot).await;
    let room_id = trestle::ruma::RoomId::parse(&room).unwrap();
    app.bot().join(&room_id).await.unwrap();
    let rows_before = outbox_rows(&app, &room).await;

    user.send_text(&room, "!five").await;
    let last = format!("send {}", SENDS - 1);
    user.wait_for_event(&room, Duration::from_secs(60), |e| {
        e["sender"] == bot.as_str() && e["content"]["body"] == last.as_str()
    })
    .await;
    // Every send arrived, in order.
    let said: Vec<String> = user
        .messages(&room)
        .await
        .iter()
        .filter(|e: &&Value| e["sender"] == bot.as_str())
        .filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned))
        .filter(|body| body.starts_with("send "))
        .collect();
    let expected: Vec<String> = (0..SENDS).map(|n| format!("send {n}")).collect();
    assert_eq!(said, expected);
    // Through the outbox: the first, which found no worker holding the room's lease, and any
    // that came just as the worker let it go (a loaded machine). Without direct sends, all five.
    let rows = outbox_rows(&app, &room).await - rows_before;
    assert!(
        (1..=2).contains(&rows),
        "{rows} of {SENDS} sends went through the outbox"
    );
}

/// The room's rows in the outbox (a send's row stays a day after it is sent).
async fn outbox_rows(app: &Appservice, room: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM outbox WHERE queue_key = $1")
        .bind(room)
        .fetch_one(app.store().pool())
        .await
        .unwrap()
        .get(0)
}
