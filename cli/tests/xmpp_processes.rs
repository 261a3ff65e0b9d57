//! The XMPP bridge in three `trestle run` processes on one PostgreSQL database (a `matrix`, a
//! `connections` and an `all` one), against a real Synapse and a real Prosody: the component
//! is connected by one process at a time, the holder of the bridge, and messages cross both
//! ways, each once, before and after the holder is stopped (SIGTERM) and killed (SIGKILL). A
//! topic and a presence the matrix process receives reach XMPP too, through the holder.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/processes.rs"]
mod processes;
#[path = "support/registration.rs"]
mod registration;
#[path = "../../bridges/xmpp/tests/support/all.rs"]
mod support;

use std::{path::Path, time::Duration};

use processes::{make_moderator, start_holder, synapse_for, three_processes, write_bridge_config};
use serde_json::json;
use support::{
    client::{XmppClient, body},
    prosody::{COMPONENT, MUC, Prosody, SECRET},
    room::{bob_away_for_lunch, bob_joins_on},
};
use tokio_xmpp::{
    Stanza,
    parsers::{message::MessageType, presence::Type as PresenceType},
};
use trestle_tests::{appservice::WAIT, synapse::UserClient};

/// `leases.takeover_s`: how soon a process that died is taken over.
const TAKEOVER_S: u64 = 4;
const ALICE_GHOST: &str = "@xmpp_chat=40conference.localhost=2falice:localhost";

/// A configuration with the XMPP bridge alone on `database`, listening on `port`, reached by
/// the homeserver through the balancer on `front`.
fn write_config(
    path: &Path,
    homeserver: &str,
    port: u16,
    front: u16,
    database: &str,
    prosody: &Prosody,
) {
    let settings = format!(
        "      server: {server}\n      domain: {COMPONENT}\n      secret: {SECRET}\n\
         \x20     reconnect_delay: 1\n      presence: true\n      bridge: {{delivery_status: false}}\n",
        server = prosody.component_address(),
    );
    write_bridge_config(
        path, homeserver, port, front, database, TAKEOVER_S, "xmpp", &settings,
    );
}

/// alice waits until bob's occupant says `wanted` in the room, keeping the bodies of every
/// message of his she gets meanwhile in `heard`.
async fn alice_hears(
    alice: &mut XmppClient,
    bob_occupant: &str,
    heard: &mut Vec<String>,
    wanted: &str,
) {
    alice
        .expect(&format!("bob's {wanted}"), |stanza| {
            let Stanza::Message(message) = stanza else {
                return None;
            };
            let from_bob = message
                .from
                .as_ref()
                .is_some_and(|f| f.to_string() == bob_occupant);
            let said = body(&message).filter(|_| from_bob)?.to_owned();
            heard.push(said.clone());
            (said == wanted).then_some(())
        })
        .await;
}

/// alice waits until the bridge's occupant is (back) in the room.
async fn bot_in_room(alice: &mut XmppClient, room: &str) {
    let bot = format!("{room}/Matrix");
    alice
        .expect_presence("the bridge's occupant in the room", |p| {
            p.type_ == PresenceType::None && p.from.as_ref().is_some_and(|f| f.to_string() == bot)
        })
        .await;
}

/// One room and its portal, as bob and alice see them.
struct Room<'a> {
    /// The room's JID.
    room: &'a str,
    portal: &'a str,
    /// bob's occupant in the room.
    bob_occupant: &'a str,
    /// alice's ghost in the portal.
    alice_ghost: &'a str,
}

/// A message each way: bob's `mx<n>` reaches the room from his occupant, alice's `ix<n>` the
/// portal from her ghost.
async fn both_ways(
    n: usize,
    bob: &UserClient,
    alice: &mut XmppClient,
    at: &Room<'_>,
    heard: &mut Vec<String>,
) {
    bob.send_text(at.portal, &format!("mx{n}")).await;
    alice_hears(alice, at.bob_occupant, heard, &format!("mx{n}")).await;
    alice
        .say(
            MessageType::Groupchat,
            at.room,
            &format!("i{n}"),
            &format!("ix{n}"),
        )
        .await;
    let said = format!("ix{n}");
    bob.wait_for_event(at.portal, WAIT, |e| {
        e["type"] == "m.room.message"
            && e["sender"] == at.alice_ghost
            && e["content"]["body"] == said
    })
    .await;
}

/// The logs of `role`'s runs so far.
fn logs(dir: &Path, role: &str) -> String {
    (1..=4)
        .filter_map(|n| std::fs::read_to_string(dir.join(format!("{role}.{n}.log"))).ok())
        .collect()
}

#[tokio::test]
async fn three_processes_hold_one_xmpp_component_through_a_stop_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let database = trestle_tests::postgres::fresh_database().await;
    let prosody = Prosody::start(&["alice"]).await;
    let room = format!("chat@{MUC}");
    let mut alice = XmppClient::connect(&prosody, "alice").await;
    alice.join(&room, "alice").await;
    let (mut all, mut matrix, mut connections, front) = three_processes(dir.path()).await;
    let (synapse, registration) = synapse_for(
        &[&all, &matrix, &connections],
        "xmpp",
        |config, url, port| write_config(config, url, port, front, &database, &prosody),
    )
    .await;

    // The `all` process alone first: it holds the bridge, and the portal is made.
    start_holder(&mut all, &synapse, &registration).await;
    let (bob, portal, bob_occupant) = bob_joins_on(&synapse, &mut alice, &room).await;
    matrix.start();
    connections.start();
    matrix.wait_live().await;
    connections.wait_live().await;
    // Long enough for a second component to try to connect, were one to.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut heard = Vec::new();
    let chat = Room {
        room: &room,
        portal: &portal,
        bob_occupant: &bob_occupant,
        alice_ghost: ALICE_GHOST,
    };
    both_ways(1, &bob, &mut alice, &chat, &mut heard).await;

    // The XMPP bridge's own handlers, beyond the kit's: a topic and a presence received by
    // the matrix process reach XMPP through the holder (`all`).
    make_moderator(&synapse, &registration, &bob, &portal, "@bob:localhost").await;
    bob.send_state(
        &portal,
        "m.room.topic",
        "",
        json!({"topic": "talk across processes"}),
    )
    .await;
    alice
        .expect_message("bob's topic as the subject", |m| {
            m.subjects.values().any(|s| s == "talk across processes")
        })
        .await;
    bob_away_for_lunch(&bob, &mut alice, &bob_occupant).await;

    // The holder stops cleanly: `connections` takes the bridge over, and its component.
    all.stop().await;
    bot_in_room(&mut alice, &room).await;
    all.start();
    all.wait_live().await;
    both_ways(2, &bob, &mut alice, &chat, &mut heard).await;

    // The holder (`connections`) dies: `all` takes over within the takeover time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    connections.kill();
    bot_in_room(&mut alice, &room).await;
    both_ways(3, &bob, &mut alice, &chat, &mut heard).await;

    // A portal made by the matrix process (which got the alias query): the holder's bot joins
    // its room at bob's join, and the conversation crosses there too.
    let other = format!("other@{MUC}");
    alice.join(&other, "alice").await;
    let other_portal = bob.join(&format!("#xmpp_other_{MUC}:localhost")).await;
    bot_in_room(&mut alice, &other).await;
    let bob_elsewhere = format!("{other}/bob");
    alice
        .expect_presence("bob in the other room", |p| {
            p.from
                .as_ref()
                .is_some_and(|f| f.to_string() == bob_elsewhere)
        })
        .await;
    let mut heard_elsewhere = Vec::new();
    let elsewhere = Room {
        room: &other,
        portal: &other_portal,
        bob_occupant: &bob_elsewhere,
        alice_ghost: "@xmpp_other=40conference.localhost=2falice:localhost",
    };
    both_ways(4, &bob, &mut alice, &elsewhere, &mut heard_elsewhere).await;
    assert_eq!(heard_elsewhere, ["mx4"]);

    // Nothing twice, either way.
    bob.send_text(&portal, "mx-end").await;
    alice_hears(&mut alice, &bob_occupant, &mut heard, "mx-end").await;
    assert_eq!(
        heard,
        ["mx1", "mx2", "mx3", "mx-end"],
        "Matrix → XMPP, each once"
    );
    let events = bob.messages(&portal).await;
    let from_alice: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == ALICE_GHOST)
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        from_alice,
        ["ix1", "ix2", "ix3"],
        "XMPP → Matrix, each once"
    );

    // One component at a time: each holder connected it once in its turn, nobody else tried
    // (Prosody refuses a second connection of a component), and the matrix process handed
    // bob's messages over.
    let (all_logs, connections_logs, matrix_logs) = (
        logs(dir.path(), "all"),
        logs(dir.path(), "connections"),
        logs(dir.path(), "matrix"),
    );
    let connected = |logs: &str| logs.matches("connected to XMPP as a component").count();
    assert_eq!(connected(&all_logs), 2, "{all_logs}");
    assert_eq!(connected(&connections_logs), 1, "{connections_logs}");
    assert_eq!(connected(&matrix_logs), 0, "{matrix_logs}");
    for logs in [&all_logs, &connections_logs] {
        assert!(!logs.contains("no component connection to XMPP"), "{logs}");
    }
    assert!(
        matrix_logs.contains("made a portal chat=muc:other@conference.localhost"),
        "{matrix_logs}"
    );
    assert!(
        matrix_logs.contains("handed to the process that holds the logins"),
        "{matrix_logs}"
    );
    // The topic and the presence were received there, not by the holder.
    for event_type in ["m.room.topic", "m.presence"] {
        assert!(
            matrix_logs.lines().any(|line| line
                .contains("handed to the process that holds the logins")
                && line.contains(&format!("event_type=\"{event_type}\""))),
            "{event_type}: {matrix_logs}"
        );
    }
}
