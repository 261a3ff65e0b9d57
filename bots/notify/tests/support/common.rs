//! What the notification bot's end-to-end tests share.

#![allow(dead_code)]

use std::time::Instant;

use reqwest::Method;
use serde_json::Value;
use trestle_notify::Settings;
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::UserClient,
};

pub const BOT: &str = "@notify:localhost";

/// Settings for tests: the local test servers are on loopback, and feeds poll every second.
pub fn settings() -> Settings {
    Settings {
        allow_private_addresses: true,
        feed_min_interval_secs: 1,
        max_body_bytes: 64 * 1024,
        fetch_timeout_secs: 5,
        feed_failure_notice_after: 2,
        ..Settings::default()
    }
}

/// Synapse and the notification bot with `settings`.
pub async fn start(settings: Settings) -> Harness {
    let registration = trestle_notify::PLUGIN.generate_registration(None, "localhost");
    Harness::start(registration, trestle_notify::router_with(settings).unwrap()).await
}

/// Accepts the bot's direct-message invite and returns the room.
pub async fn accept_dm(user: &UserClient) -> String {
    let started = Instant::now();
    loop {
        let sync = user
            .call_ok(Method::GET, "/_matrix/client/v3/sync?timeout=0", None)
            .await;
        if let Some(invites) = sync["rooms"]["invite"].as_object()
            && let Some(room) = invites.keys().next()
        {
            user.join(room).await;
            return room.clone();
        }
        assert!(started.elapsed() < WAIT, "no invite from the bot: {sync}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Waits for a message from `sender` whose body contains `text`.
pub async fn wait_for_text(user: &UserClient, room: &str, sender: &str, text: &str) -> Value {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == "m.room.message"
            && e["sender"] == sender
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(text))
    })
    .await
}

/// The bodies of the room's messages from senders other than `except`, oldest first.
pub async fn bodies(user: &UserClient, room: &str, sender: impl Fn(&str) -> bool) -> Vec<String> {
    user.messages(room)
        .await
        .iter()
        .filter(|e| e["type"] == "m.room.message" && sender(e["sender"].as_str().unwrap_or("")))
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}
