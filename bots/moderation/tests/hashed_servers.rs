//! Server rules beyond the ACL, and hashed ones (MSC4205) in it, with two Synapses federating on
//! loopback: a member from a banned server is banned; a hash names no server, so the bot denies
//! a server once it sees it in the room (a member joining from it, or one there when the rule
//! comes); both are lifted when the rule goes.

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

    // Eve joins from B over federation: the bot sees her server, which the hash matches; it
    // denies the server and bans her (the server rule acts beyond the ACL).
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
    membership_becomes(&admin, &bot, &square, &eve.user_id, "ban").await;

    // The rule goes: the denial and the ban are lifted.
    admin
        .send_text(&management, &format!("!unban {server_b}"))
        .await;
    bot_says(&admin, &bot, &management, "Removed the rule").await;
    acl_becomes(&admin, &square, &[]).await;
    membership_becomes(&admin, &bot, &square, &eve.user_id, "leave").await;

    // A plain rule for B's server while Eve is in the room again: she is banned and her server
    // denied at once; the rule's going lifts both.
    assert_eq!(eve.join(&square).await, square);
    admin
        .send_text(&management, &format!("!ban {server_b} spam again"))
        .await;
    acl_becomes(&admin, &square, &[&server_b]).await;
    membership_becomes_again(&admin, &bot, &square, &eve.user_id, "ban", 2).await;
    admin
        .send_text(&management, &format!("!unban {server_b}"))
        .await;
    acl_becomes(&admin, &square, &[]).await;
    membership_becomes_again(&admin, &bot, &square, &eve.user_id, "leave", 2).await;

    // A followed list's rule that matches the bot's own server bans none of its users, nor
    // goes in the ACL (`!ban` refuses to write one; another list may hold one). A rule for B's
    // server after it in the same list shows the first was read.
    let local = h.synapse.register_user("local", "password-1234").await;
    local.join(&square).await;
    let list = admin
        .create_room(json!({"name": "server list", "preset": "private_chat", "room_version": "12"}))
        .await;
    admin.invite(&list, &bot).await;
    admin
        .send_text(&management, &format!("!lists watch {list}"))
        .await;
    bot_says(&admin, &bot, &management, "Following").await;
    let rule =
        |entity: &str| json!({"entity": entity, "recommendation": "m.ban", "reason": "servers"});
    admin
        .send_state(&list, "m.policy.rule.server", "own", rule(&server_a))
        .await;
    admin
        .send_state(&list, "m.policy.rule.server", "b", rule(&server_b))
        .await;
    acl_becomes(&admin, &square, &[&server_b]).await;
    h.app.idle().await;
    let members = admin.joined_members(&square).await;
    assert!(members.contains(&local.user_id), "{members:?}");
    assert!(members.contains(&admin.user_id), "{members:?}");
}

/// Waits until the bot has set `user`'s membership in `room` to `membership`.
async fn membership_becomes(
    admin: &UserClient,
    bot: &str,
    room: &str,
    user: &str,
    membership: &str,
) {
    membership_becomes_again(admin, bot, room, user, membership, 1).await;
}

/// Waits until the bot has set `user`'s membership in `room` to `membership` the `times`th time.
async fn membership_becomes_again(
    admin: &UserClient,
    bot: &str,
    room: &str,
    user: &str,
    membership: &str,
    times: usize,
) {
    let started = Instant::now();
    loop {
        let set = admin
            .messages(room)
            .await
            .iter()
            .filter(|e| {
                e["type"] == "m.room.member"
                    && e["sender"] == bot
                    && e["state_key"] == user
                    && e["content"]["membership"] == membership
            })
            .count();
        if set >= times {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the bot set {user}'s membership in {room} to {membership} {set} times, expected {times}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
