//! The host: several plugins from one process on one listener, each its own appservice, with
//! health, metrics, and one plugin's panics contained.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, time::Duration};

use serde_json::json;
use tokio::net::TcpListener;
use trestle::{Plugin, Router, plugin::PluginSettings, router::Command};
use trestle_host::{Host, config::Config, ensure_registration};
use trestle_tests::synapse::{Synapse, free_port};

const WAIT: Duration = Duration::from_secs(30);

async fn boom(_: Command) {
    panic!("a plugin bug");
}

fn panicky(_: &PluginSettings<'_>) -> trestle::Result<Router> {
    Ok(Router::new().accept_invites(true).command("boom", boom))
}

const PANICKY: Plugin = Plugin::new("panicky", "panicky", "panicky_", panicky);
const PLUGINS: &[Plugin] = &[trestle_echo::PLUGIN, trestle_ping::PLUGIN, PANICKY];

fn config(dir: &std::path::Path, port: u16, homeserver: &str) -> Config {
    let text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\nlisten: 127.0.0.1:{port}\n\
         plugins:\n  echo:\n    settings:\n      command_prefix: \"!\"\n"
    );
    let path = dir.join("trestle.yaml");
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test]
async fn plugins_share_a_listener_and_one_plugins_panic_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Registrations first: Synapse loads them at start.
    let early = config(dir.path(), port, "http://127.0.0.1:1");
    let registrations: Vec<PathBuf> = PLUGINS
        .iter()
        .map(|p| {
            let registration = ensure_registration(&early, p).unwrap();
            assert_eq!(
                registration.url.as_deref(),
                Some(format!("http://127.0.0.1:{port}/{}", p.name).as_str())
            );
            early.registration_path(p.name)
        })
        .collect();
    let synapse = Synapse::start(&registrations).await;
    let config = config(dir.path(), port, &synapse.base_url());
    let host = Host::new(&config, PLUGINS).await.unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(host.clone().run(listener, std::future::pending()));
    for (_, app) in host.apps() {
        let registration = app.registration();
        synapse
            .wait_for_appservice(&registration.id, &registration.as_token, WAIT)
            .await;
    }
    // The tokens stay the same when the registration is made again.
    let again = ensure_registration(&config, &trestle_echo::PLUGIN).unwrap();
    assert_eq!(
        again.as_token,
        host.apps().next().unwrap().1.registration().as_token
    );

    let user = synapse.register_user("hana", "password-1234").await;
    let room = user.create_room(json!({"preset": "private_chat"})).await;
    for bot in ["@echo:localhost", "@ping:localhost", "@panicky:localhost"] {
        user.invite(&room, bot).await;
        user.wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bot
                && e["content"]["membership"] == "join"
        })
        .await;
    }

    user.send_text(&room, "!boom").await;
    user.send_text(&room, "!boom").await;
    user.send_text(&room, "!echo still here").await;
    user.send_text(&room, "!ping").await;
    user.wait_for_event(&room, WAIT, |e| {
        e["sender"] == "@echo:localhost" && e["content"]["body"] == "still here"
    })
    .await;
    let pong = user
        .wait_for_event(&room, WAIT, |e| {
            e["sender"] == "@ping:localhost"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("pong ("))
        })
        .await;
    assert!(pong["content"]["m.relates_to"]["m.in_reply_to"]["event_id"].is_string());

    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap() }
    };
    assert_eq!(get("/health/live").await.status(), 200);
    assert_eq!(get("/health/ready").await.status(), 200);
    // Every plugin sees every message of the room: echo may still be handling `!ping` (not its
    // command) when ping has answered. Its inbox must drain, not be empty at this instant.
    let started = std::time::Instant::now();
    let metrics = loop {
        let metrics = get("/metrics").await.text().await.unwrap();
        if metrics.contains("trestle_inbox_depth{appservice=\"echo\"} 0\n")
            || started.elapsed() > WAIT
        {
            break metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{metrics}"))
    };
    assert!(value("trestle_events_handled_total{appservice=\"echo\"}") >= 4.0);
    assert!(
        value("trestle_events_handled_by_type_total{appservice=\"ping\",type=\"m.room.message\"}")
            >= 4.0
    );
    assert!(value("trestle_transactions_total{appservice=\"panicky\"}") >= 1.0);
    assert_eq!(value("trestle_inbox_depth{appservice=\"echo\"}"), 0.0);
    // The two panics were caught, counted, and hurt nobody else.
    assert_eq!(
        value("trestle_handler_panics_total{appservice=\"panicky\"}"),
        2.0
    );
    assert_eq!(
        value("trestle_handler_panics_total{appservice=\"echo\"}"),
        0.0
    );
    // Each plugin answers only under its own path, with its own token.
    let echo_token = &host.apps().next().unwrap().1.registration().hs_token;
    let wrong = reqwest::Client::new()
        .post(format!("{base}/ping/_matrix/app/v1/ping"))
        .bearer_auth(echo_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
}
