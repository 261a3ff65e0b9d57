//! Two appservice processes on one PostgreSQL database against Synapse: a ghost's leave seen
//! by one (the homeserver pushes to it) does not turn the other's next send into an
//! `M_FORBIDDEN` its membership cache caused. The one that saw the leave tells the other
//! (`LISTEN`/`NOTIFY`), which joins the ghost again before sending; and where nobody saw the
//! leave, the refused send is retried once after a join.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot};
use trestle::{Appservice, Registration, Router, Store, ruma::OwnedRoomId};
use trestle_tests::synapse::{Synapse, UserClient, free_port};

/// One process: an appservice on `database`, served on `port`.
async fn process(
    registration: &Registration,
    synapse: &Synapse,
    database: &str,
    port: u16,
) -> (Appservice, oneshot::Sender<()>) {
    let app = Appservice::builder(registration.clone(), synapse.base_url(), "localhost")
        .router(Router::new())
        .store(Store::connect(database).await.unwrap())
        .build()
        .await
        .unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.clone().run(listener, async {
        let _ = stopped.await;
    }));
    (app, stop)
}

async fn kick(user: &UserClient, room: &str, ghost: &str) {
    user.call_ok(
        reqwest::Method::POST,
        &format!("/_matrix/client/v3/rooms/{room}/kick"),
        Some(&json!({"user_id": ghost})),
    )
    .await;
    user.wait_for_event(room, Duration::from_secs(30), |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == ghost
            && e["content"]["membership"] == "leave"
    })
    .await;
}

async fn said(user: &UserClient, room: &str, ghost: &str, body: &str) {
    user.wait_for_event(room, Duration::from_secs(30), |e| {
        e["sender"] == ghost && e["content"]["body"] == body
    })
    .await;
}

#[tokio::test]
async fn a_leave_seen_by_one_process_does_not_fail_the_others_send() {
    let dir = tempfile::tempdir().unwrap();
    let database = trestle_tests::postgres::fresh_database().await;
    // The homeserver pushes to the first process only.
    let port_a = free_port();
    let (synapse, registration) =
        Synapse::start_pushing_to(dir.path(), ("shared", "sharedbot", "shared_"), port_a).await;
    let (a, stop_a) = process(&registration, &synapse, &database, port_a).await;
    let (b, _stop_b) = process(&registration, &synapse, &database, free_port()).await;
    synapse.wait_for_registered(&registration).await;

    let user = synapse.register_user("kim", "password-1234").await;
    let room = user.create_room(json!({"preset": "public_chat"})).await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let ghost = b.ghost("shared_g").unwrap();
    let ghost_id = "@shared_g:localhost";
    // b joins the ghost and remembers it joined.
    ghost.send_text(&room_id, "one").await.unwrap();
    said(&user, &room, ghost_id, "one").await;

    // The ghost is kicked; a, which the homeserver tells, records the leave.
    kick(&user, &room, ghost_id).await;
    a.idle().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ghost.send_text(&room_id, "two").await.unwrap();
    said(&user, &room, ghost_id, "two").await;

    // Nobody sees the next kick (a is gone, and b takes no transactions): b's cache is stale
    // and the store with it, so the homeserver refuses the send; b joins again and retries.
    let _ = stop_a.send(());
    tokio::time::sleep(Duration::from_secs(1)).await;
    kick(&user, &room, ghost_id).await;
    ghost.send_text(&room_id, "three").await.unwrap();
    said(&user, &room, ghost_id, "three").await;
}
