//! What several tests of the `trestle` command share: a user and a room the echo plugin's bot
//! has joined.

use std::time::Duration;

use serde_json::json;
use trestle_tests::synapse::{Synapse, UserClient};

/// Registers `kim`, who makes a private room and invites `@echo:localhost`; returns once the
/// bot has joined, with the user and the room.
pub async fn room_with_echo(synapse: &Synapse) -> (UserClient, String) {
    let user = synapse.register_user("kim", "password-1234").await;
    let room = user.create_room(json!({"preset": "private_chat"})).await;
    user.invite(&room, "@echo:localhost").await;
    user.wait_for_event(&room, Duration::from_secs(30), |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == "@echo:localhost"
            && e["content"]["membership"] == "join"
    })
    .await;
    (user, room)
}
