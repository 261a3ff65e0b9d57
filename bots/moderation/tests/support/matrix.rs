//! What the moderation tests share: the harness with the bot, waiting for its answers and
//! actions, the rooms it works with, and starting it again.

use serde_json::{Value, json};
use trestle_moderation::{PLUGIN, Settings, router};
use trestle_policy::PolicyLists;
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::UserClient,
};

pub const BOT: &str = "@moderation:localhost";

/// The moderation bot; its router also carries a [`PolicyLists`] following `#bans:localhost`,
/// as a bridge's would, to show the check any plugin can make against the same list.
pub async fn harness(settings: Settings, lists: &PolicyLists) -> Harness {
    let registration = PLUGIN.generate_registration(None, "localhost");
    Harness::start(registration, lists.route(router(settings))).await
}

/// Waits until the policy check answers as `banned` says for `user`.
pub async fn check_becomes(h: &Harness, lists: &PolicyLists, user: &str, banned: bool) {
    let user = trestle::ruma::UserId::parse(user).unwrap();
    let started = std::time::Instant::now();
    loop {
        let rule = lists.check_user(&h.app, &user).await.unwrap();
        if rule.is_some() == banned {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{user} banned: {rule:?}, expected {banned}"
        );
        h.app.idle().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A bot notice in `room` whose body contains `text`.
pub async fn bot_says(user: &UserClient, room: &str, text: &str) -> Value {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == "m.room.message"
            && e["sender"] == BOT
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(text))
    })
    .await
}

/// Sends a command and waits for the bot's answer containing `expect`.
pub async fn command(user: &UserClient, room: &str, text: &str, expect: &str) -> Value {
    user.send_text(room, text).await;
    bot_says(user, room, expect).await
}

/// The membership event the bot sent for `user` in `room` with `membership`.
pub async fn bot_sets_membership(
    user: &UserClient,
    room: &str,
    target: &str,
    membership: &str,
) -> Value {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == "m.room.member"
            && e["sender"] == BOT
            && e["state_key"] == target
            && e["content"]["membership"] == membership
    })
    .await
}

/// A management room set up by `admin`: the bot joins on invite and claims it.
pub async fn management_room(admin: &UserClient) -> String {
    // Room version 12: the admin is the creator, with infinite power and no power level entry.
    let room = admin
        .create_room(json!({"name": "moderators", "preset": "private_chat", "room_version": "12"}))
        .await;
    admin.invite(&room, BOT).await;
    bot_says(admin, &room, "now my management room").await;
    room
}

/// A public room (room version 12) in which the bot may ban, protected by command.
pub async fn protected_room(admin: &UserClient, management: &str) -> String {
    let room = admin
        .create_room(json!({
            "name": "public square",
            "preset": "public_chat",
            "room_version": "12",
            "power_level_content_override": {"users": {BOT: 100}},
        }))
        .await;
    admin.invite(&room, BOT).await;
    command(
        admin,
        management,
        &format!("!rooms add {room}"),
        &format!("Protecting {room}"),
    )
    .await;
    room
}

pub fn state_path(room: &str, event_type: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/state/{event_type}/",
        trestle_tests::synapse::encode(room)
    )
}

/// The bot with `@admin:localhost` as its one admin, following `lists` beside it (see
/// [`harness`]), and the admin with a management room and a protected room:
/// `(harness, admin, management, protected)`.
// moderation.rs, which sets its bot up otherwise, includes this file without `dead_code` allowed.
#[allow(dead_code)]
pub async fn admin_with_rooms(lists: &PolicyLists) -> (Harness, UserClient, String, String) {
    let settings = Settings {
        admins: vec!["@admin:localhost".into()],
        ..Settings::default()
    };
    let h = harness(settings, lists).await;
    let admin = h.synapse.register_user("admin", "password-1234").await;
    let management = management_room(&admin).await;
    let protected = protected_room(&admin, &management).await;
    (h, admin, management, protected)
}
