//! Room upgrades and calls in the bridge kit, end to end against a real Synapse with the toy
//! network: a portal, a management room and a direct chat's portal upgraded to room version
//! 12 (room ids without a server part, creators outside the power levels) go on bridging in
//! the new room; `m.call.*` events never reach a network without calls, and the caller is
//! told once per call.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use trestle_bridge::{BridgeConfig, BridgeHandle, MessageContent, RemoteEdit, RemoteMessage};
use trestle_tests::{
    appservice::WAIT,
    bridge_checks::{
        BOT, bridge_info, command, logged_in_toy_user, room_state, set_power_level,
        start_toy_bridge, upgrade_room, wait_after, wait_member,
    },
    synapse::encode,
    toy_network::{Arrived, ToyNetwork},
};

/// Waits until the kit's portal of `chat` is `room`.
async fn wait_portal_room(handle: &BridgeHandle<ToyNetwork>, chat: &str, room: &str) {
    let started = Instant::now();
    loop {
        let portal = handle.portal(&chat.to_owned()).await.unwrap();
        if portal.as_ref().is_some_and(|p| p.room_id.as_str() == room) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the portal of {chat} never moved to {room}: {portal:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(body: &str) -> MessageContent {
    MessageContent::text(body)
}

#[tokio::test]
async fn portals_and_management_rooms_follow_an_upgrade_to_room_version_12() {
    let (mut harness, handle, world) = start_toy_bridge(BridgeConfig::default(), false).await;
    let (alice, lobby, mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;

    // Before the upgrade: one message each way, mapped.
    let hi = handle
        .remote_message(RemoteMessage::new(
            "lobby".into(),
            "bob".into(),
            "r1".into(),
            text("before the upgrade"),
        ))
        .await
        .unwrap()
        .unwrap();
    alice.send_text(&lobby, "hello before").await;
    world
        .wait_for(
            "the message before",
            |a| matches!(a, Arrived::Message { body, .. } if body == "hello before"),
        )
        .await;

    // Alice, made an admin of the portal, upgrades it. Portals are made in the homeserver's
    // default room version, 12 here: the bot made the room, so it is its creator, whose power
    // no power levels name; the new room's creator is alice alone.
    set_power_level(&harness.app, &alice, &lobby, "@alice:localhost", 150).await;
    let new_lobby = upgrade_room(&alice, &lobby, json!({"new_version": "12"})).await;
    assert!(
        !new_lobby.contains(':'),
        "a version 12 room id has no server part: {new_lobby}"
    );
    wait_portal_room(&handle, "lobby", &new_lobby).await;
    // The bot and bob's ghost are in the new room. The bot, no creator there any more, has
    // no power to put the bridge info in it, and says so.
    wait_member(&alice, &new_lobby, BOT, true).await;
    wait_member(&alice, &new_lobby, "@toy_bob:localhost", true).await;
    alice
        .wait_for_event(&new_lobby, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("may not set state in this new room"))
        })
        .await;
    // The portal's alias leads there.
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        encode("#toy_lobby:localhost")
    );
    let alias = alice.call_ok(Method::GET, &path, None).await;
    assert_eq!(alias["room_id"], new_lobby.as_str());

    // Matrix → network from the new room, including a reply to a message from before.
    alice.send_text(&new_lobby, "hello after").await;
    let after = world
        .wait_for(
            "the message after",
            |a| matches!(a, Arrived::Message { body, .. } if body == "hello after"),
        )
        .await;
    assert!(
        matches!(&after, Arrived::Message { chat, speaker, .. } if chat == "lobby" && speaker == "puppet:alice"),
        "{after:?}"
    );
    alice
        .send_event(
            &new_lobby,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "about that",
                   "m.relates_to": {"m.in_reply_to": {"event_id": hi.as_str()}}}),
        )
        .await;
    let reply = world
        .wait_for(
            "the reply to an old message",
            |a| matches!(a, Arrived::Message { body, .. } if body == "about that"),
        )
        .await;
    assert!(
        matches!(&reply, Arrived::Message { reply_to: Some(r), .. } if r == "r1"),
        "{reply:?}"
    );

    // Network → Matrix lands in the new room; a reply to a message from before names it.
    let answer = handle
        .remote_message(
            RemoteMessage::new("lobby".into(), "bob".into(), "r2".into(), text("after"))
                .reply_to("r1".into()),
        )
        .await
        .unwrap()
        .unwrap();
    let answer = alice
        .wait_for_event(&new_lobby, WAIT, |e| e["event_id"] == answer.as_str())
        .await;
    assert_eq!(answer["sender"], "@toy_bob:localhost");
    assert_eq!(
        answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hi.as_str()
    );

    // An edit of a message left in the old room belongs there, where ghosts may no longer
    // speak: not bridged.
    let late_edit = RemoteEdit::new("lobby".into(), "bob".into(), "r1".into(), text("edited"));
    assert_eq!(handle.remote_edit(late_edit).await.unwrap(), None);

    // Upgraded again, naming the bot a creator: it follows again, and puts the bridge info
    // in the third room.
    let third = upgrade_room(
        &alice,
        &new_lobby,
        json!({"new_version": "12", "additional_creators": [BOT]}),
    )
    .await;
    wait_portal_room(&handle, "lobby", &third).await;
    let started = Instant::now();
    while bridge_info(&room_state(&alice, &third).await, "m.bridge").is_none() {
        assert!(started.elapsed() < WAIT, "no bridge info in the third room");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = room_state(&alice, &third).await;
    let info = bridge_info(&info, "m.bridge").unwrap();
    assert_eq!(info["content"]["channel"]["id"], "lobby");
    assert_eq!(info["content"]["creator"], BOT);
    let there = handle
        .remote_message(RemoteMessage::new(
            "lobby".into(),
            "bob".into(),
            "r3".into(),
            text("in the third room"),
        ))
        .await
        .unwrap()
        .unwrap();
    alice
        .wait_for_event(&third, WAIT, |e| e["event_id"] == there.as_str())
        .await;

    // The management room, upgraded and its bot invited (as clients offer), still takes
    // commands.
    let new_mgmt = upgrade_room(&alice, &mgmt, json!({"new_version": "12"})).await;
    alice.invite(&new_mgmt, BOT).await;
    alice
        .wait_for_event(&new_mgmt, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("replaces your old management room"))
        })
        .await;
    command(&alice, &new_mgmt, "status", "toynet as alice: CONNECTED").await;

    // A direct chat's portal, without the bot: upgraded, and its ghost invited, it follows.
    let dm = alice
        .create_room(
            json!({"invite": ["@toy_frank:localhost"], "is_direct": true,
                            "preset": "trusted_private_chat"}),
        )
        .await;
    wait_member(&alice, &dm, "@toy_frank:localhost", true).await;
    let new_dm = upgrade_room(&alice, &dm, json!({"new_version": "12"})).await;
    alice.invite(&new_dm, "@toy_frank:localhost").await;
    wait_member(&alice, &new_dm, "@toy_frank:localhost", true).await;
    wait_portal_room(&handle, "dm.frank.alice", &new_dm).await;
    alice.send_text(&new_dm, "psst, frank, upgraded").await;
    let psst = world
        .wait_for(
            "the direct message after",
            |a| matches!(a, Arrived::Message { body, .. } if body == "psst, frank, upgraded"),
        )
        .await;
    assert!(
        matches!(&psst, Arrived::Message { chat, .. } if chat == "dm.frank.alice"),
        "{psst:?}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_call_in_a_portal_crosses_nothing_and_its_caller_is_told_once() {
    let (mut harness, _handle, world) = start_toy_bridge(BridgeConfig::default(), false).await;
    let (alice, _lobby, _mgmt) = logged_in_toy_user(&harness.synapse, "alice").await;
    // Calls are between two: here a direct chat with frank (Synapse refuses call invites in
    // public rooms, as portals of chats are).
    let frank = "@toy_frank:localhost";
    let dm = alice
        .create_room(json!({"invite": [frank], "is_direct": true,
                            "preset": "trusted_private_chat"}))
        .await;
    wait_member(&alice, &dm, frank, true).await;

    let call = |kind: &str| {
        let mut content = json!({"call_id": "call-1", "party_id": "alice-device", "version": "1"});
        match kind {
            "m.call.invite" => {
                content["lifetime"] = json!(60000);
                content["offer"] = json!({"type": "offer", "sdp": "v=0\r\n"});
                content["invitee"] = json!(frank);
            }
            "m.call.candidates" => {
                content["candidates"] = json!([{"candidate": "candidate:0 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}]);
            }
            _ => content["reason"] = json!("user_hangup"),
        }
        content
    };
    let invite = alice
        .send_event(&dm, "m.call.invite", call("m.call.invite"))
        .await;
    let notice = wait_after(&alice, &dm, &invite, |e| e["sender"] == frank).await;
    assert_eq!(
        notice["content"]["body"],
        "Calls do not cross to Toy: nobody there hears this call."
    );
    assert_eq!(notice["content"]["msgtype"], "m.notice");
    assert_eq!(
        notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        invite.as_str()
    );
    assert_eq!(
        notice["content"]["m.mentions"]["user_ids"],
        json!(["@alice:localhost"])
    );

    // The rest of the call, and the same call ringing again: no more notices.
    for kind in ["m.call.candidates", "m.call.invite", "m.call.hangup"] {
        alice.send_event(&dm, kind, call(kind)).await;
    }
    alice.send_text(&dm, "after the call").await;
    world
        .wait_for(
            "the message after the call",
            |a| matches!(a, Arrived::Message { body, .. } if body == "after the call"),
        )
        .await;
    harness.app.idle().await;
    let notices = alice
        .messages(&dm)
        .await
        .into_iter()
        .filter(|e| e["sender"] == frank && e["type"] == "m.room.message")
        .count();
    assert_eq!(notices, 1, "one notice for the call");
    // Nothing of the call reached the network: only the message after it.
    let arrived: Vec<Arrived> = world
        .arrived()
        .into_iter()
        .filter(|a| !matches!(a, Arrived::Membership { .. }))
        .collect();
    assert!(
        matches!(arrived.as_slice(), [Arrived::Message { body, .. }] if body == "after the call"),
        "{arrived:#?}"
    );
    harness.stop().await;
}
