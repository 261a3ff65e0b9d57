//! Matrix-side steps the end-to-end tests share.

use serde_json::json;
use trestle_tests::{appservice::Harness, synapse::UserClient};

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
