//! Matrix-side steps the end-to-end tests share.

use serde_json::json;
use trestle_tests::{
    appservice::Harness,
    bridge_checks::{wait_after, wait_member},
    synapse::UserClient,
};

/// The bridge's bot.
pub const BOT: &str = "@irc:localhost";

/// Portals give Matrix users no power by default: the bridge's bot makes `user` a moderator
/// (power level 50) in `room`, which `viewer` can read.
pub async fn make_moderator(setup: &Harness, viewer: &UserClient, room: &str, user: &str) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        trestle_tests::synapse::encode(room)
    );
    let mut levels = viewer.call_ok(reqwest::Method::GET, &path, None).await;
    levels["users"][user] = json!(50);
    let room_id: trestle::ruma::OwnedRoomId = room.try_into().unwrap();
    setup
        .app
        .bot()
        .send_state_json(&room_id, "m.room.power_levels", "", levels, None)
        .await
        .unwrap();
}

/// Sends a command in the management room and waits for the bot's answer containing `expect`.
pub async fn command(user: &UserClient, room: &str, text: &str, expect: &str) {
    let sent = user.send_text(room, text).await;
    wait_after(user, room, &sent, |e| {
        e["sender"] == BOT
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(expect))
    })
    .await;
}

/// Makes the user's management room and sends `login test <nick>` there; waits for the bot's
/// answer containing `expect`.
pub async fn login(user: &UserClient, nick: &str, expect: &str) {
    let management = user
        .create_room(json!({"invite": [BOT], "is_direct": true, "preset": "trusted_private_chat"}))
        .await;
    wait_member(user, &management, BOT, true).await;
    command(user, &management, &format!("login test {nick}"), expect).await;
}
