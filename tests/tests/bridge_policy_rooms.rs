//! Room rules of the policy lists a bridge follows, end to end with the toy network: a portal
//! a rule comes to ban is left (the bot says why and leaves; nothing crosses either way) and
//! bridged again when the rule goes; no portal is made for a banned alias, and a banned room
//! cannot be linked. After a restart, a banned portal is found at start.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::Method;
use serde_json::{Value, json};
use trestle_bridge::{
    Bridge, BridgeConfig, BridgeError, BridgeHandle, MessageContent, RemoteMessage,
};
use trestle_tests::{
    appservice::WAIT,
    bridge_checks::{BOT, command, start_toy_bridge, wait_member},
    synapse::{UserClient, encode},
    toy_network::{Arrived, ToyNetwork},
};

fn arrived_body(body: &str) -> impl Fn(&Arrived) -> bool + '_ {
    move |a| matches!(a, Arrived::Message { body: b, .. } if b == body)
}

fn bot_notice<'a>(needle: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| {
        e["sender"] == BOT
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(needle))
    }
}

/// Bob's message `id` in the toy lobby.
fn from_bob(id: &str, body: &str) -> RemoteMessage<ToyNetwork> {
    RemoteMessage::new(
        "lobby".into(),
        "bob".into(),
        id.into(),
        MessageContent::text(body),
    )
}

/// Bob's message from the network, bridged into the lobby and seen there by `alice`.
async fn bob_says(
    handle: &BridgeHandle<ToyNetwork>,
    alice: &UserClient,
    lobby: &str,
    id: &str,
    body: &str,
) {
    let sent = handle.remote_message(from_bob(id, body)).await.unwrap();
    let sent = sent.expect("bridged");
    alice
        .wait_for_event(lobby, WAIT, |e| e["event_id"] == sent.as_str())
        .await;
}

/// Joining `alias` fails: the homeserver knows no such room.
async fn no_such_room(alice: &UserClient, alias: &str) {
    let path = format!("/_matrix/client/v3/join/{}", encode(alias));
    let (status, answer) = alice.call(Method::POST, &path, Some(&json!({}))).await;
    assert_eq!(status, 404, "{answer}");
}

async fn rule(alice: &UserClient, list: &str, key: &str, content: Value) {
    alice
        .send_state(list, "m.policy.rule.room", key, content)
        .await;
}

#[tokio::test]
async fn rooms_a_followed_list_bans_are_not_bridged_until_the_rule_goes() {
    let config = BridgeConfig::default()
        .relay(true)
        .policy_list("#bans:localhost");
    let (mut harness, handle, world) = start_toy_bridge(config.clone(), false).await;
    let alice = harness
        .synapse
        .register_user("alice", "password-1234")
        .await;
    let bans = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "bans"}))
        .await;

    // Before any rule: a portal is made and bridges both ways.
    let lobby = alice.join("#toy_lobby:localhost").await;
    alice.send_text(&lobby, "before the rule").await;
    world
        .wait_for(
            "the message before the rule",
            arrived_body("before the rule"),
        )
        .await;
    bob_says(&handle, &alice, &lobby, "r1", "hi").await;

    // Rules: one for aliases of chats not bridged yet, one for the lobby's alias (a glob).
    rule(
        &alice,
        &bans,
        "badlands",
        json!({"entity": "#toy_bad*:localhost", "recommendation": "m.ban"}),
    )
    .await;
    rule(
        &alice,
        &bans,
        "lobby",
        json!({"entity": "#toy_lob*:localhost", "recommendation": "m.ban", "reason": "raided"}),
    )
    .await;

    // The bridge says why in the portal and leaves it.
    let notice = alice
        .wait_for_event(&lobby, WAIT, bot_notice("no longer bridged to Toy"))
        .await;
    let body = notice["content"]["body"].as_str().unwrap();
    assert!(
        body.contains(&bans) && body.contains("#toy_lob*:localhost") && body.contains("raided"),
        "{body}"
    );
    wait_member(&alice, &lobby, BOT, false).await;

    // Nothing crosses while the rule stands: not from the network…
    let refused = handle.remote_message(from_bob("r2", "while banned")).await;
    assert!(
        matches!(refused, Err(BridgeError::Forbidden(_))),
        "{refused:?}"
    );
    // …nor from Matrix (checked below, once a later message arrives).
    alice.send_text(&lobby, "said while banned").await;

    // No portal is made for an alias a rule bans: the homeserver hears of no such room.
    no_such_room(&alice, "#toy_badlands:localhost").await;

    // A room banned by its id cannot be linked.
    let mgmt = alice
        .create_room(json!({"invite": [BOT], "is_direct": true, "preset": "trusted_private_chat"}))
        .await;
    alice
        .wait_for_event(&mgmt, WAIT, |e| e["sender"] == BOT)
        .await;
    let yard = alice
        .create_room(
            json!({"preset": "public_chat", "power_level_content_override": {"users": {BOT: 50}}}),
        )
        .await;
    rule(
        &alice,
        &bans,
        "yard",
        json!({"entity": yard, "recommendation": "m.ban", "reason": "not here"}),
    )
    .await;
    let answer = command(
        &alice,
        &mgmt,
        &format!("link {yard} garden"),
        "is not bridged",
    )
    .await;
    assert!(answer.contains("not here"), "{answer}");
    wait_member(&alice, &yard, BOT, false).await;
    assert!(handle.portal(&"garden".into()).await.unwrap().is_none());

    // The lobby's rule goes: the bot is back, and the portal bridges both ways again.
    rule(&alice, &bans, "lobby", json!({})).await;
    alice
        .wait_for_event(&lobby, WAIT, bot_notice("bridged to Toy again"))
        .await;
    wait_member(&alice, &lobby, BOT, true).await;
    bob_says(&handle, &alice, &lobby, "r3", "back again").await;
    alice.send_text(&lobby, "after the lift").await;
    world
        .wait_for("the message after the lift", arrived_body("after the lift"))
        .await;
    // Matrix events reach the bridge in order: had the banned one been bridged, it would be
    // there by now.
    assert!(
        !world
            .arrived()
            .iter()
            .any(arrived_body("said while banned")),
        "{:?}",
        world.arrived()
    );
    // The other rules stand.
    no_such_room(&alice, "#toy_badlands:localhost").await;

    // Banned again, then Trestle restarts: the new process finds the portal banned when it
    // starts, before any event of the room reaches it.
    rule(
        &alice,
        &bans,
        "lobby",
        json!({"entity": "#toy_lobby:localhost", "recommendation": "m.ban"}),
    )
    .await;
    wait_member(&alice, &lobby, BOT, false).await;
    let bridge = Bridge::new(
        ToyNetwork {
            world: world.clone(),
        },
        config,
    );
    let handle = bridge.handle();
    harness.restart(bridge.router()).await;
    let started = std::time::Instant::now();
    while !matches!(
        handle.portal(&"lobby".to_owned()).await,
        Err(BridgeError::Forbidden(_))
    ) {
        assert!(
            started.elapsed() < WAIT,
            "the portal is bridged after the restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = handle.remote_message(from_bob("r4", "after restart")).await;
    assert!(
        matches!(refused, Err(BridgeError::Forbidden(_))),
        "{refused:?}"
    );
    harness.stop().await;
}
