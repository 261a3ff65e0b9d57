//! Three bots of one host in one room — the moderation bot (whose management room it is), the
//! notification bot and the echo bot — against a real Synapse: each answers its own commands
//! and those named for it, and none answers another's with "unknown command". Alone with
//! people, the moderation bot says so again.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use trestle::Plugin;
use trestle_host::{Host, config::Config, ensure_registration};
use trestle_tests::{
    appservice::WAIT,
    synapse::{Synapse, UserClient, encode, free_port},
};

const PLUGINS: &[Plugin] = &[
    trestle_moderation::PLUGIN,
    trestle_notify::PLUGIN,
    trestle_echo::PLUGIN,
];
const MODERATION: &str = "@moderation:localhost";
const NOTIFY: &str = "@notify:localhost";
const ECHO: &str = "@echo:localhost";

fn config(dir: &std::path::Path, port: u16, homeserver: &str) -> Config {
    let text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\nlisten: 127.0.0.1:{port}\n"
    );
    let path = dir.join("trestle.yaml");
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap()
}

/// Synapse, and the three plugins served by one host.
async fn start(dir: &std::path::Path) -> (Synapse, Host) {
    let port = free_port();
    // Registrations first: Synapse loads them at start.
    let early = config(dir, port, "http://127.0.0.1:1");
    let registrations: Vec<PathBuf> = PLUGINS
        .iter()
        .map(|p| {
            ensure_registration(&early, p).unwrap();
            early.registration_path(p.name)
        })
        .collect();
    let synapse = Synapse::start(&registrations).await;
    let config = config(dir, port, &synapse.base_url());
    let host = Host::new(&config, PLUGINS).await.unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(host.clone().run(listener, std::future::pending()));
    for (_, app) in host.apps() {
        let registration = app.registration();
        synapse
            .wait_for_appservice(&registration.id, &registration.as_token, WAIT)
            .await;
    }
    (synapse, host)
}

/// The bodies of the messages `sender` sent to `room`, oldest first.
async fn said_by(user: &UserClient, room: &str, sender: &str) -> Vec<String> {
    user.messages(room)
        .await
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `sender` has sent `count` messages to `room`; returns their bodies.
async fn wait_for_messages(
    user: &UserClient,
    room: &str,
    sender: &str,
    count: usize,
) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let said = said_by(user, room, sender).await;
        if said.len() >= count {
            return said;
        }
        assert!(
            started.elapsed() < WAIT,
            "{sender} sent {} of {count} messages: {said:#?}",
            said.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn joined(bot: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == bot
            && e["content"]["membership"] == "join"
    }
}

#[tokio::test]
async fn a_room_with_three_bots_where_one_bots_commands_draw_no_answer_from_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (synapse, _host) = start(dir.path()).await;
    let admin = synapse.register_user("admin", "password-1234").await;
    let room = admin.create_room(json!({"preset": "private_chat"})).await;
    // The moderation bot claims the first room a local user invites it to.
    admin.invite(&room, MODERATION).await;
    admin
        .wait_for_event(&room, WAIT, |e| {
            e["sender"] == MODERATION
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("now my management room"))
        })
        .await;
    for bot in [NOTIFY, ECHO] {
        admin.invite(&room, bot).await;
        admin.wait_for_event(&room, WAIT, joined(bot)).await;
    }

    for body in [
        // The notification bot's commands, and its help on one of them.
        "!webhook list",
        "!feed list",
        "!forward list",
        "!help webhook",
        // The echo bot's.
        "!echo hi",
        // Nobody's, so nobody can say whose it is.
        "!frobnicate",
        "!help frobnicate",
        // Named for someone: only they may answer.
        "@admin:localhost: !status",
        "!notify help",
        "!moderation frobnicate",
        "@moderation:localhost: !help ban",
        "moderation: !status",
    ] {
        admin.send_text(&room, body).await;
    }
    // Each bot reads a room's events in order: once it has answered these, it has read all.
    admin.send_text(&room, "!echo done").await;
    admin.send_text(&room, "!notify feed list").await;

    let echo = wait_for_messages(&admin, &room, ECHO, 2).await;
    assert_eq!(echo, ["hi", "done"], "the echo bot answers its own only");
    // webhook, feed, forward, help webhook, notify help, notify feed list.
    let notify = wait_for_messages(&admin, &room, NOTIFY, 6).await;
    assert!(
        notify[3].contains("!webhook"),
        "help on its own command: {notify:#?}"
    );
    assert!(
        notify[4].starts_with("Commands:"),
        "its help when named: {notify:#?}"
    );
    assert!(
        !notify.iter().any(|b| b.contains("There is no command")),
        "{notify:#?}"
    );
    // The greeting, then the three commands named for it.
    let moderation = wait_for_messages(&admin, &room, MODERATION, 4).await;
    assert!(
        moderation[1].starts_with("Unknown command frobnicate"),
        "{moderation:#?}"
    );
    assert!(
        moderation[2].starts_with("!ban [list] <entity> [reason]"),
        "{moderation:#?}"
    );
    assert!(
        moderation[3].starts_with("Management room:"),
        "{moderation:#?}"
    );

    // Alone with people, the moderation bot answers what no one else can.
    for bot in [NOTIFY, ECHO] {
        let path = format!("/_matrix/client/v3/rooms/{}/kick", encode(&room));
        admin
            .call_ok(Method::POST, &path, Some(&json!({"user_id": bot})))
            .await;
    }
    admin.send_text(&room, "!frobnicate").await;
    let moderation = wait_for_messages(&admin, &room, MODERATION, 5).await;
    assert!(
        moderation[4].starts_with("Unknown command frobnicate"),
        "{moderation:#?}"
    );
    // Nothing more came from anyone: no late answers to the commands above.
    assert_eq!(said_by(&admin, &room, MODERATION).await.len(), 5);
    assert_eq!(said_by(&admin, &room, NOTIFY).await.len(), 6);
    assert_eq!(said_by(&admin, &room, ECHO).await.len(), 2);
}
