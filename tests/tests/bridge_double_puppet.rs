//! Double puppeting in the bridge kit, end to end against a real Synapse loaded with a second
//! registration (no `url`, a non-exclusive namespace of every local user) whose token the
//! bridge is given: a user who turns it on sees their own messages, edits, reactions and
//! deletions from the toy network come from their own account, marked, and none of them goes
//! back to the network; with it off, their ghost speaks. Turning it on is refused, with the
//! reason, where the bridge has no secret for the server or its token cannot act; a token that
//! stops working gives the ghost back and the user is told.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Instant};

use reqwest::Method;
use serde_json::Value;
use trestle::Registration;
use trestle_bridge::{
    Bridge, BridgeConfig, BridgeHandle, MessageContent, RemoteEdit, RemoteMessage, RemoteReaction,
    double_puppet::DOUBLE_PUPPET_SOURCE,
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{self, command, logged_in_toy_user, provision},
    synapse::UserClient,
    toy_network::{Arrived, ToyNetwork, ToyWorld},
};

const SECRET: &str = "provisioning-secret-dp";

/// The second registration, as mautrix documents it for the appservice method.
fn double_puppet_registration() -> Registration {
    bridge_checks::double_puppet_registration("toy-double-puppet")
}

/// The toy bridge with `config`, on a Synapse that also loads `double_puppet`.
async fn start(
    config: BridgeConfig,
    double_puppet: &Registration,
) -> (Harness, BridgeHandle<ToyNetwork>, Arc<ToyWorld>) {
    let network = ToyNetwork::default();
    let world = network.world.clone();
    let bridge = Bridge::new(network, config);
    let registration = Registration::generate("toy", None, "toybot", "toy_", "localhost");
    let harness = Harness::start_beside(
        registration,
        std::slice::from_ref(double_puppet),
        bridge.router(),
    )
    .await;
    (harness, bridge.handle(), world)
}

/// Serves a new toy bridge with `config` on the same store and toy world, as after a restart
/// with another configuration; returns its handle, attached.
async fn restart(
    harness: &mut Harness,
    world: &Arc<ToyWorld>,
    config: BridgeConfig,
) -> BridgeHandle<ToyNetwork> {
    let network = ToyNetwork {
        world: world.clone(),
    };
    let bridge = Bridge::new(network, config);
    harness.restart(bridge.router()).await;
    let handle = bridge.handle();
    handle.attach(&harness.app).await.unwrap();
    handle
}

fn text(body: &str) -> MessageContent {
    MessageContent::text(body)
}

async fn event(user: &UserClient, room: &str, event_id: &str) -> Value {
    user.wait_for_event(room, WAIT, |e| e["event_id"] == event_id)
        .await
}

/// Waits until the toy network has connected alice's login.
async fn connected(world: &ToyWorld) {
    let started = Instant::now();
    while world.handle("alice").is_none() {
        assert!(started.elapsed() < WAIT, "alice's login never connected");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn own_messages_from_the_network_come_from_the_users_own_account() {
    let double_puppet = double_puppet_registration();
    let config = BridgeConfig::default()
        .provisioning_secret(SECRET)
        .double_puppet("localhost", format!("as_token:{}", double_puppet.as_token));
    let (harness, handle, world) = start(config, &double_puppet).await;
    let (alice, lobby, mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    connected(&world).await;
    let status = "/provision/v1/double_puppet?user_id=@alice:localhost";

    // Off by default: what alice says on the toy network comes from her ghost.
    let (code, answer) = provision(&harness, Method::GET, status, Some(SECRET), None).await;
    assert_eq!((code, answer["enabled"].as_bool()), (200, Some(false)));
    let remote = RemoteMessage::new("lobby".into(), "alice".into(), "r1".into(), text("ghostly"));
    let ghostly = handle.remote_message(remote).await.unwrap().unwrap();
    let ghostly = event(&alice, &lobby, ghostly.as_str()).await;
    assert_eq!(ghostly["sender"], "@toy_alice:localhost");
    assert!(ghostly["content"].get(DOUBLE_PUPPET_SOURCE).is_none());

    // On: her message, edit, reaction and deletion come from her own account, marked.
    command(&alice, &mgmt, "double-puppet on", "Double puppeting is on").await;
    let (code, answer) = provision(&harness, Method::GET, status, Some(SECRET), None).await;
    assert_eq!((code, answer["enabled"].as_bool()), (200, Some(true)));
    let remote = RemoteMessage::new("lobby".into(), "alice".into(), "r2".into(), text("mine"))
        .reply_to("r1".into());
    let mine_id = handle.remote_message(remote).await.unwrap().unwrap();
    let mine = event(&alice, &lobby, mine_id.as_str()).await;
    assert_eq!(mine["sender"], "@alice:localhost", "{mine}");
    assert_eq!(mine["content"][DOUBLE_PUPPET_SOURCE], "toy", "{mine}");
    assert_eq!(mine["content"]["body"], "mine");
    assert_eq!(
        mine["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        ghostly["event_id"]
    );
    let edit = RemoteEdit::new(
        "lobby".into(),
        "alice".into(),
        "r2".into(),
        text("mine, edited"),
    );
    let edit = handle.remote_edit(edit).await.unwrap().unwrap();
    let edit = event(&alice, &lobby, edit.as_str()).await;
    assert_eq!(edit["sender"], "@alice:localhost", "{edit}");
    assert_eq!(edit["content"][DOUBLE_PUPPET_SOURCE], "toy");
    assert_eq!(edit["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        mine_id.as_str()
    );
    assert_eq!(edit["content"]["m.new_content"]["body"], "mine, edited");
    let reaction = RemoteReaction::new("lobby".into(), "alice".into(), "r1".into(), "👍");
    let reaction = handle.remote_reaction(reaction).await.unwrap().unwrap();
    let reaction = event(&alice, &lobby, reaction.as_str()).await;
    assert_eq!(reaction["sender"], "@alice:localhost", "{reaction}");
    assert_eq!(reaction["content"][DOUBLE_PUPPET_SOURCE], "toy");
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    let deleted = handle
        .remote_redaction(&"lobby".into(), &"alice".into(), &"r2".into())
        .await
        .unwrap();
    assert!(deleted);
    let redaction = alice
        .wait_for_event(&lobby, WAIT, |e| {
            e["type"] == "m.room.redaction"
                && (e["redacts"] == mine_id.as_str() || e["content"]["redacts"] == mine_id.as_str())
        })
        .await;
    assert_eq!(redaction["sender"], "@alice:localhost", "{redaction}");

    // None of it came back to the toy network: a message alice types in Matrix afterwards
    // arrives (the room's events are handled in order), and nothing before it did.
    alice.send_text(&lobby, "typed in Matrix").await;
    world
        .wait_for(
            "the message typed in Matrix",
            |a| matches!(a, Arrived::Message { body, .. } if body == "typed in Matrix"),
        )
        .await;
    let echoes: Vec<Arrived> = world
        .arrived()
        .into_iter()
        .filter(|a| match a {
            Arrived::Message { body, .. } => body.starts_with("mine"),
            Arrived::Edit { .. } | Arrived::Redaction { .. } => true,
            _ => false,
        })
        .collect();
    assert!(echoes.is_empty(), "bridged back: {echoes:#?}");

    // Off again through the provisioning API: the ghost speaks.
    let (code, answer) = provision(
        &harness,
        Method::PUT,
        status,
        Some(SECRET),
        Some(r#"{"enabled": false}"#),
    )
    .await;
    assert_eq!((code, answer["enabled"].as_bool()), (200, Some(false)));
    let (code, answer) = provision(
        &harness,
        Method::PUT,
        status,
        Some(SECRET),
        Some(r#"{"enabled": "yes"}"#),
    )
    .await;
    assert_eq!(
        (code, answer["errcode"].as_str()),
        (400, Some("M_BAD_JSON"))
    );
    let remote = RemoteMessage::new("lobby".into(), "alice".into(), "r3".into(), text("ghost"));
    let ghost = handle.remote_message(remote).await.unwrap().unwrap();
    let ghost = event(&alice, &lobby, ghost.as_str()).await;
    assert_eq!(ghost["sender"], "@toy_alice:localhost");
    assert!(ghost["content"].get(DOUBLE_PUPPET_SOURCE).is_none());
}

#[tokio::test]
async fn refused_or_given_up_where_the_token_cannot_act() {
    let double_puppet = double_puppet_registration();
    let good = format!("as_token:{}", double_puppet.as_token);
    let config = BridgeConfig::default().provisioning_secret(SECRET);
    let (mut harness, _handle, world) = start(config, &double_puppet).await;
    let (alice, lobby, mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    connected(&world).await;
    let status = "/provision/v1/double_puppet?user_id=@alice:localhost";

    // The command is listed.
    command(
        &alice,
        &mgmt,
        "help",
        "double-puppet [on|off]: Shows your messages",
    )
    .await;

    // No secret for the server: refused, in the room and over the provisioning API.
    command(
        &alice,
        &mgmt,
        "double-puppet on",
        "double-puppet failed: double puppeting is not set up for localhost on this bridge",
    )
    .await;
    let body = Some(r#"{"enabled": true}"#);
    let (code, answer) = provision(&harness, Method::PUT, status, Some(SECRET), body).await;
    assert_eq!(code, 403, "{answer}");
    assert_eq!(answer["errcode"], "M_FORBIDDEN");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not set up for localhost"),
        "{answer}"
    );

    // A token the homeserver does not know: refused, saying so.
    let wrong = || {
        BridgeConfig::default()
            .provisioning_secret(SECRET)
            .double_puppet("localhost", "as_token:not-a-registered-token")
    };
    restart(&mut harness, &world, wrong()).await;
    let refusal = command(&alice, &mgmt, "double-puppet on", "double-puppet failed").await;
    assert!(
        refusal.contains("the bridge cannot act as @alice:localhost"),
        "{refusal}"
    );
    command(&alice, &mgmt, "double-puppet", "Double puppeting is off").await;

    // On with the right token; then the token stops working (the bridge comes back with the
    // wrong one): alice's next message from the network comes from her ghost, double
    // puppeting is off, and she is told.
    let right = BridgeConfig::default()
        .provisioning_secret(SECRET)
        .double_puppet("localhost", good);
    restart(&mut harness, &world, right).await;
    command(&alice, &mgmt, "double-puppet on", "Double puppeting is on").await;
    let handle = restart(&mut harness, &world, wrong()).await;
    let remote = RemoteMessage::new("lobby".into(), "alice".into(), "r1".into(), text("later"));
    let later = handle.remote_message(remote).await.unwrap().unwrap();
    let later = event(&alice, &lobby, later.as_str()).await;
    assert_eq!(later["sender"], "@toy_alice:localhost", "{later}");
    alice
        .wait_for_event(&mgmt, WAIT, |e| {
            e["content"]["body"].as_str().is_some_and(|b| {
                b.starts_with("Double puppeting is off: the bridge can no longer act as you")
            })
        })
        .await;
    let (code, answer) = provision(&harness, Method::GET, status, Some(SECRET), None).await;
    assert_eq!((code, answer["enabled"].as_bool()), (200, Some(false)));
}
