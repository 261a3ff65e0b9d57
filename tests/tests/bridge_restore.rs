//! The bridge kit restoring a login after a restart, against a real Synapse with the toy
//! network: a user with a login is never relayed. Their messages wait for their connection,
//! in order; when it does not come in time, or needs them to log in again, they are told in
//! the room that the message was not delivered; one waiting when Trestle stops is sent after
//! the next start. Logged out, they are relayed again.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use trestle_bridge::{BridgeConfig, ConnectionState};
use trestle_tests::{
    appservice::WAIT,
    bridge_checks::{
        BOT, command, logged_in_toy_user, restart_toy_bridge, start_toy_bridge, wait_after,
    },
    synapse::UserClient,
    toy_network::{Arrived, ToyWorld},
};

/// Who said `body` on the toy network, in the order it arrived.
fn speakers_of(world: &ToyWorld, body: &str) -> Vec<String> {
    world
        .arrived()
        .into_iter()
        .filter_map(|a| match a {
            Arrived::Message {
                speaker, body: b, ..
            } if b == body => Some(speaker),
            _ => None,
        })
        .collect()
}

/// The bodies of the messages that arrived on the toy network, in order.
fn bodies(world: &ToyWorld) -> Vec<String> {
    world
        .arrived()
        .into_iter()
        .filter_map(|a| match a {
            Arrived::Message { body, .. } => Some(body),
            _ => None,
        })
        .collect()
}

/// Waits until a message `body` arrived on the toy network.
async fn arrived(world: &ToyWorld, body: &str) {
    world
        .wait_for(
            body,
            |a| matches!(a, Arrived::Message { body: b, .. } if b == body),
        )
        .await;
}

/// Sends `body` and waits for the bot's notice replying to it; returns the notice's text.
async fn refused(user: &UserClient, room: &str, body: &str) -> String {
    let sent = user.send_text(room, body).await;
    let notice = wait_after(user, room, &sent, |e: &Value| {
        e["sender"] == BOT
            && e["content"]["msgtype"] == "m.notice"
            && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent.as_str()
    })
    .await;
    notice["content"]["body"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_user_with_a_login_waits_for_it_and_is_never_relayed() {
    let config = BridgeConfig::default().relay(true).connection_wait(5);
    let (mut harness, _, world) = start_toy_bridge(config.clone(), false).await;
    let (alice, lobby, mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    alice.send_text(&lobby, "before").await;
    arrived(&world, "before").await;

    // Restarted, with the network slow to let her login in: what she sends meanwhile waits
    // for it, then goes out through it, in order.
    world.hold_connections(true);
    restart_toy_bridge(&mut harness, &world, &config).await;
    alice.send_text(&lobby, "one").await;
    alice.send_text(&lobby, "two").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bodies(&world),
        ["before"],
        "nothing while her login is away"
    );
    world.hold_connections(false);
    arrived(&world, "two").await;
    assert_eq!(bodies(&world), ["before", "one", "two"]);
    assert_eq!(speakers_of(&world, "one"), ["puppet:alice"]);
    assert_eq!(speakers_of(&world, "two"), ["puppet:alice"]);

    // Stopped while a message waits for her login: it is neither relayed nor lost, but left
    // in the inbox for the next start, which sends it once her login is back there.
    world.hold_connections(true);
    restart_toy_bridge(&mut harness, &world, &config).await;
    alice.send_text(&lobby, "across").await;
    let started = std::time::Instant::now();
    while harness.app.inbox_depth().await.unwrap() == 0 {
        assert!(started.elapsed() < WAIT, "the message never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restart_toy_bridge(&mut harness, &world, &config).await;
    world.hold_connections(false);
    arrived(&world, "across").await;
    assert_eq!(speakers_of(&world, "across"), ["puppet:alice"]);

    // Restarted with her login held for longer than `connection_wait`: she is told, in the
    // room, that her message was not delivered; the next one fails at once, without waiting
    // again; neither is relayed.
    world.hold_connections(true);
    restart_toy_bridge(&mut harness, &world, &config).await;
    let told = refused(&alice, &lobby, "too early").await;
    assert_eq!(
        told,
        "Not delivered to Toy: your own connection (toynet) is not back yet; send it again in a while"
    );
    let started = std::time::Instant::now();
    let told = refused(&alice, &lobby, "still too early").await;
    assert!(told.contains("not back yet"), "{told}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "told without waiting out connection_wait again"
    );
    world.hold_connections(false);
    // Once it is back, she speaks through it again.
    alice.send_text(&lobby, "back").await;
    arrived(&world, "back").await;
    assert_eq!(bodies(&world), ["before", "one", "two", "across", "back"]);
    assert_eq!(speakers_of(&world, "back"), ["puppet:alice"]);

    // A login the network threw out needs her: not relayed either, she is told why.
    let kicked = ConnectionState::BadCredentials("kicked by the toy admin".into());
    world
        .handle("alice")
        .expect("connected")
        .set_state(kicked)
        .await
        .unwrap();
    let told = refused(&alice, &lobby, "said while kicked").await;
    assert_eq!(
        told,
        "Not delivered to Toy: your login toynet was disconnected (kicked by the toy admin); log in again to reconnect"
    );
    // Logged out, the relay speaks for her, as for anyone without a login.
    command(&alice, &mgmt, "logout", "Logged out of toynet.").await;
    alice.send_text(&lobby, "relayed words").await;
    arrived(&world, "relayed words").await;
    assert_eq!(speakers_of(&world, "relayed words"), ["relay:alice"]);
    assert_eq!(
        bodies(&world),
        ["before", "one", "two", "across", "back", "relayed words"]
    );
    harness.stop().await;
}
