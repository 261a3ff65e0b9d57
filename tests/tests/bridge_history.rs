//! History in the bridge kit, end to end against a real Synapse with the toy network: a new
//! portal is filled with the chat's last messages, in order, by their senders' ghosts, with
//! their original timestamps; what was said while Trestle was stopped is caught up when it
//! starts, once, in order, before the live message after it; and a further restart posts
//! nothing twice. A login's connection back after an outage is caught up the same way; where
//! the network keeps no history, the portal is told once that messages may be missing (not
//! for a blip, not again while nothing was said since).

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use trestle_bridge::{BridgeConfig, ConnectionState, MessageContent, RemoteMessage};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{BOT, logged_in_toy_user, restart_toy_bridge, start_toy_bridge},
    synapse::UserClient,
    toy_network::{ToyNetwork, ToyWorld},
};

/// What the kit tells a portal whose network cannot say what was missed.
const GAP: &str = "Messages sent on Toy while the bridge was disconnected may be missing here.";

/// When the toy chats' past messages were said: 2023-11-14, a minute apart.
const PAST: u64 = 1_700_000_000_000;

/// The messages of the toy ghosts in the room, in the room's order: (sender, body, ts).
async fn ghost_messages(user: &UserClient, room: &str) -> Vec<(String, String, u64)> {
    user.messages(room)
        .await
        .iter()
        .filter(|e| {
            e["type"] == "m.room.message"
                && e["sender"].as_str().is_some_and(|s| s.starts_with("@toy_"))
        })
        .map(|e: &Value| {
            (
                e["sender"].as_str().unwrap().to_owned(),
                e["content"]["body"].as_str().unwrap().to_owned(),
                e["origin_server_ts"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the room has `count` ghost messages, and returns them.
async fn wait_ghost_messages(
    user: &UserClient,
    room: &str,
    count: usize,
) -> Vec<(String, String, u64)> {
    let started = std::time::Instant::now();
    loop {
        let messages = ghost_messages(user, room).await;
        if messages.len() >= count {
            return messages;
        }
        assert!(
            started.elapsed() < WAIT,
            "{count} ghost messages never came; the room has {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_new_portal_is_filled_with_the_chats_last_messages() {
    let config = BridgeConfig::default().history_fill(25);
    let (harness, handle, world) = start_toy_bridge(config, false).await;
    // Thirty messages before the portal exists, by two people; the fill takes the last 25.
    for i in 1..=30u64 {
        let sender = if i % 2 == 0 { "bob" } else { "carol" };
        world.say("past", sender, &format!("past {i}"), PAST + i * 60_000);
    }
    let alice = harness
        .synapse
        .register_user("alice", "password-1234")
        .await;
    let room = alice.join("#toy_past:localhost").await;

    let filled = wait_ghost_messages(&alice, &room, 25).await;
    let expected: Vec<(String, String, u64)> = (6..=30u64)
        .map(|i| {
            let sender = if i % 2 == 0 { "bob" } else { "carol" };
            (
                format!("@toy_{sender}:localhost"),
                format!("past {i}"),
                PAST + i * 60_000,
            )
        })
        .collect();
    assert_eq!(
        filled, expected,
        "in order, by their ghosts, at their times"
    );

    // A live message after the fill comes after it, and the fill is not repeated.
    let live = world.say("past", "bob", "live now", PAST + 31 * 60_000);
    handle.remote_message(live).await.unwrap();
    let all = wait_ghost_messages(&alice, &room, 26).await;
    assert_eq!(all.len(), 26, "{all:#?}");
    assert_eq!(all[25].1, "live now");
}

#[tokio::test]
async fn what_was_said_while_trestle_was_stopped_is_caught_up_once_in_order() {
    let config = BridgeConfig::default();
    let (mut harness, _handle, world) = start_toy_bridge(config.clone(), false).await;
    let (alice, lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    let login = world.handle("alice").unwrap();
    let first = world.say("lobby", "bob", "before the stop", PAST);
    login.remote_message(first).await.unwrap();
    wait_ghost_messages(&alice, &lobby, 1).await;

    // Stopped; ten messages are said meanwhile.
    harness.stop().await;
    for i in 1..=10u64 {
        world.say("lobby", "bob", &format!("missed {i}"), PAST + i * 1_000);
    }
    // Started again, with the network slow to answer for its history: a live message that
    // comes meanwhile (through alice's restored connection) waits for what was missed.
    world.hold_history(true);
    world.forget_handle("alice");
    let reads = world.history_reads();
    restart_toy_bridge(&mut harness, &world, &config).await;
    let started = std::time::Instant::now();
    let login = loop {
        if let Some(login) = world.handle("alice") {
            break login;
        }
        assert!(started.elapsed() < WAIT, "her login was never restored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Live, and not in the history the catch-up reads: only the gate keeps it after.
    let live = RemoteMessage::new(
        "lobby".to_owned(),
        "bob".to_owned(),
        "live-1".to_owned(),
        MessageContent::text("live after the restart"),
    );
    let sent = tokio::spawn(async move { login.remote_message(live).await });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        ghost_messages(&alice, &lobby).await.len(),
        1,
        "nothing posted while what was missed is not read yet"
    );
    world.hold_history(false);
    sent.await.unwrap().unwrap();
    assert!(world.history_reads() > reads, "history was read");

    let mut expected: Vec<String> = vec!["before the stop".into()];
    expected.extend((1..=10).map(|i| format!("missed {i}")));
    expected.push("live after the restart".into());
    let messages = wait_ghost_messages(&alice, &lobby, expected.len()).await;
    let bodies: Vec<&str> = messages.iter().map(|(_, b, _)| b.as_str()).collect();
    assert_eq!(bodies, expected, "once each, in order, the live one last");
    for (i, (sender, _, ts)) in messages[1..=10].iter().enumerate() {
        assert_eq!(sender, "@toy_bob:localhost");
        assert_eq!(*ts, PAST + (i as u64 + 1) * 1_000, "its original time");
    }

    // Restarted again with nothing new: nothing is posted twice.
    let reads = world.history_reads();
    restart_toy_bridge(&mut harness, &world, &config).await;
    let started = std::time::Instant::now();
    while world.history_reads() == reads {
        assert!(started.elapsed() < WAIT, "the restart never read history");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness.app.idle().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = ghost_messages(&alice, &lobby).await;
    let bodies: Vec<&str> = again.iter().map(|(_, b, _)| b.as_str()).collect();
    assert_eq!(bodies, expected, "nothing twice");
    harness.stop().await;
}

/// A live toy message that is in no history: only the gate keeps it after a catch-up.
fn live(id: &str, body: &str) -> RemoteMessage<ToyNetwork> {
    RemoteMessage::new(
        "lobby".to_owned(),
        "bob".to_owned(),
        id.to_owned(),
        MessageContent::text(body),
    )
}

/// The room's gap notices and ghost messages, in the room's order.
async fn told(user: &UserClient, room: &str) -> Vec<String> {
    user.messages(room)
        .await
        .iter()
        .filter(|e| {
            e["type"] == "m.room.message"
                && (e["sender"].as_str().is_some_and(|s| s.starts_with("@toy_"))
                    || (e["sender"] == BOT && e["content"]["body"] == GAP))
        })
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until history was read after `reads` reads, then until the bridge is quiet.
async fn read_since(harness: &Harness, world: &ToyWorld, reads: u64) {
    let started = std::time::Instant::now();
    while world.history_reads() == reads {
        assert!(started.elapsed() < WAIT, "history was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness.app.idle().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_login_back_after_an_outage_is_caught_up_or_its_portals_told_once() {
    let config = BridgeConfig::default().bridge_state_debounce_ms(1_000);
    let (harness, _handle, world) = start_toy_bridge(config, false).await;
    let (alice, lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    let login = world.handle("alice").unwrap();
    let hello = world.say("lobby", "bob", "hello", PAST);
    login.remote_message(hello).await.unwrap();
    wait_ghost_messages(&alice, &lobby, 1).await;

    // Lost past the debounce; three messages meanwhile. Back, they are caught up before the
    // next live one.
    let down = || ConnectionState::TransientDisconnect("down".into());
    login.set_state(down()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for i in 1..=3u64 {
        world.say("lobby", "bob", &format!("while down {i}"), PAST + i * 1_000);
    }
    world.hold_history(true);
    login.set_state(ConnectionState::Connected).await.unwrap();
    let next = login.clone();
    let sent = tokio::spawn(async move {
        next.remote_message(live("live-2", "after the outage"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        told(&alice, &lobby).await,
        ["hello"],
        "held behind the catch-up"
    );
    world.hold_history(false);
    sent.await.unwrap().unwrap();
    let expected = [
        "hello",
        "while down 1",
        "while down 2",
        "while down 3",
        "after the outage",
    ];
    assert_eq!(told(&alice, &lobby).await, expected);

    // The network keeps no history now. A blip, back within the debounce, tells nothing.
    world.keep_history(false);
    let mut expected: Vec<&str> = expected.to_vec();
    let reads = world.history_reads();
    login.set_state(down()).await.unwrap();
    login.set_state(ConnectionState::Connected).await.unwrap();
    read_since(&harness, &world, reads).await;
    assert_eq!(told(&alice, &lobby).await, expected, "no notice for a blip");

    // An outage: one notice, before the next live message.
    login.set_state(down()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    login.set_state(ConnectionState::Connected).await.unwrap();
    login
        .remote_message(live("live-3", "after the second outage"))
        .await
        .unwrap();
    expected.extend([GAP, "after the second outage"]);
    assert_eq!(told(&alice, &lobby).await, expected);

    // Another: told again, since something was said after the last notice. Then one more
    // with nothing said since: nothing new to tell.
    for _ in 0..2 {
        let reads = world.history_reads();
        login.set_state(down()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        login.set_state(ConnectionState::Connected).await.unwrap();
        read_since(&harness, &world, reads).await;
    }
    expected.push(GAP);
    assert_eq!(told(&alice, &lobby).await, expected, "once per gap");
}
