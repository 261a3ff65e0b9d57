//! Hashed server rules (MSC4205) in a protected room's server ACL, with two Synapses federating
//! on loopback: a hash names no server, so the bot denies a server once it sees it in the room
//! (a member joining from it, or one there when the rule comes), and lifts the denial when the
//! rule goes.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use serde_json::{Value, json};
use trestle_moderation::{PLUGIN, Settings, router};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::{Synapse, UserClient, encode, free_port},
};

/// A notice of the bot's in `room` whose body contains `text`.
async fn bot_says(user: &UserClient, bot: &str, room: &str, text: &str) -> Value {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == "m.room.message"
            && e["sender"] == bot
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(text))
    })
    .await
}

/// The servers `room`'s ACL denies, as `user` reads them (none without an ACL).
async fn denied(user: &UserClient, room: &str) -> Vec<String> {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.server_acl/",
        encode(room)
    );
    let (status, acl) = user.call(reqwest::Method::GET, &path, None).await;
    if status == 404 {
        return Vec::new();
    }
    acl["deny"]
        .as_array()
        .unwrap_or_else(|| panic!("an ACL without deny: {acl}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `room`'s ACL denies exactly `expected`.
async fn acl_becomes(user: &UserClient, room: &str, expected: &[&str]) {
    let started = Instant::now();
    loop {
        let deny = denied(user, room).await;
        if deny == expected {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the ACL of {room} denies {deny:?}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn hashed_server_rules_deny_servers_once_seen_and_lift_when_gone() {
    let (port_a, port_b) = (free_port(), free_port());
    let server_a = Synapse::federating_server_name(port_a);
    let admin_id = format!("@admin:{server_a}");
    let bot = format!("@moderation:{server_a}");
    let mut registration = PLUGIN.generate_registration(None, &server_a);
    let settings = Settings {
        admins: vec![admin_id.clone()],
        ..Settings::default()
    };
    let (h, b) = tokio::join!(
        Harness::start_federating(&mut registration, port_a, router(settings), ""),
        Synapse::start_federating(port_b, &[], ""),
    );
    let server_b = b.server_name().to_owned();
    let admin = h.synapse.register_user("admin", "password-1234").await;
    assert_eq!(admin.user_id, admin_id);

    // The management room, and a public room the bot protects.
    let management = admin
        .create_room(json!({"name": "moderators", "preset": "private_chat", "room_version": "12"}))
        .await;
    admin.invite(&management, &bot).await;
    bot_says(&admin, &bot, &management, "now my management room").await;
    let square = admin
        .create_room(json!({
            "name": "public square",
            "preset": "public_chat",
            "room_version": "12",
            "room_alias_name": "square",
            "power_level_content_override": {"users": {&bot: 100}},
        }))
        .await;
    admin.invite(&square, &bot).await;
    admin
        .send_text(&management, &format!("!rooms add {square}"))
        .await;
    bot_says(&admin, &bot, &management, &format!("Protecting {square}")).await;

    // A hashed rule for B's server, before anyone from B is in the room: no name to deny yet.
    admin
        .send_text(
            &management,
            &format!("!ban --hashed {server_b} spam server"),
        )
        .await;
    bot_says(&admin, &bot, &management, "Added a hashed server ban rule").await;
    assert!(denied(&admin, &square).await.is_empty());

    // Eve joins from B over federation: the bot sees her server, which the hash matches.
    let eve = b.register_user("eve", "password-1234").await;
    assert_eq!(eve.join(&format!("#square:{server_a}")).await, square);
    acl_becomes(&admin, &square, &[&server_b]).await;
    bot_says(
        &admin,
        &bot,
        &management,
        &format!("now denies: {server_b}"),
    )
    .await;

    // The rule goes: the denial is lifted.
    admin
        .send_text(&management, &format!("!unban {server_b}"))
        .await;
    bot_says(&admin, &bot, &management, "Removed the rule").await;
    acl_becomes(&admin, &square, &[]).await;

    // The rule comes back while Eve is in the room: her server is denied at once.
    admin
        .send_text(&management, &format!("!ban --hashed {server_b} spam again"))
        .await;
    acl_becomes(&admin, &square, &[&server_b]).await;
}
