//! The bridge kit end to end against a real Synapse, with the toy network of
//! `trestle_tests::toy_network` on the other side: portals on demand with bridge info, ghosts
//! with profiles, the message map both ways (replies, edits, redactions), loop prevention,
//! the management room, connection state notices, relay mode and linking. The provisioning
//! API has its own test, `bridge_provisioning.rs`.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::Method;
use serde_json::json;
use trestle_bridge::{
    BridgeConfig, ChatInfo, ConnectionState, MessageContent, RemoteEdit, RemoteMembership,
    RemoteMessage, RemoteReaction, UserInfo,
};
use trestle_tests::{
    appservice::WAIT,
    bridge_checks::{
        BOT, bridge_info, command, room_state, start_toy_bridge, wait_after, wait_for_invite,
        wait_member,
    },
    synapse::encode,
    toy_network::{Arrived, TOY_PASSWORD},
};

fn text(body: &str) -> MessageContent {
    MessageContent::text(body)
}

#[tokio::test]
async fn a_toy_network_bridged_through_the_kit() {
    // A lost connection counts (and is told) after half a second, not the default ten.
    let config = BridgeConfig::default()
        .admin("@alice:localhost")
        .bridge_state_debounce_ms(500);
    let (mut harness, handle, world) = start_toy_bridge(config, false).await;
    let alice = harness
        .synapse
        .register_user("alice", "password-1234")
        .await;

    // Joining the alias of a chat makes its portal, with bridge info in both shapes.
    let lobby = alice.join("#toy_lobby:localhost").await;
    let lobby_state = room_state(&alice, &lobby).await;
    for event_type in ["m.bridge", "uk.half-shot.bridge"] {
        let info = bridge_info(&lobby_state, event_type)
            .unwrap_or_else(|| panic!("no {event_type} in {lobby_state:#?}"));
        assert_eq!(info["content"]["bridgebot"], BOT);
        assert_eq!(info["content"]["protocol"]["displayname"], "Toy");
        assert_eq!(info["content"]["network"]["id"], "toynet");
        assert_eq!(info["content"]["channel"]["id"], "lobby");
        assert_eq!(info["state_key"], "toy://toy/toynet/lobby");
    }
    assert!(
        lobby_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Toy lobby")
    );

    // The network hears of Matrix users joining its chats.
    world
        .wait_for("alice's join", |a| {
            *a == Arrived::Membership {
                chat: "lobby".into(),
                user: "@alice:localhost".into(),
                membership: "join".into(),
            }
        })
        .await;

    // A remote message: the sender's ghost says it, with the remote profile.
    let hi = handle
        .remote_message(
            RemoteMessage::new(
                "lobby".into(),
                "bob".into(),
                "r1".into(),
                text("hi from toy"),
            )
            .sender_info(UserInfo::named("Bob")),
        )
        .await
        .unwrap()
        .expect("bridged");
    let seen = alice
        .wait_for_event(&lobby, WAIT, |e| e["event_id"] == hi.as_str())
        .await;
    assert_eq!(seen["sender"], "@toy_bob:localhost");
    assert_eq!(seen["content"]["body"], "hi from toy");
    assert_eq!(
        alice.get_displayname("@toy_bob:localhost").await.as_deref(),
        Some("Bob")
    );
    // Seen again (through another login, say): bridged once.
    let again = RemoteMessage::new("lobby".into(), "bob".into(), "r1".into(), text("hi"));
    assert_eq!(handle.remote_message(again).await.unwrap(), None);

    // Without a login, and without relay mode, a Matrix message goes nowhere.
    alice.send_text(&lobby, "nobody hears this").await;

    // The management room: a direct chat with the bot.
    let mgmt = alice
        .create_room(json!({"invite": [BOT], "is_direct": true, "preset": "trusted_private_chat"}))
        .await;
    alice
        .wait_for_event(&mgmt, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("management room"))
        })
        .await;
    let help = command(&alice, &mgmt, "help", "Commands:").await;
    for name in [
        "login <name> <password>",
        "logout",
        "link",
        "unlink",
        "list",
        "status",
    ] {
        assert!(help.contains(name), "{help}");
    }
    command(&alice, &mgmt, "status", "You are not logged in.").await;
    command(
        &alice,
        &mgmt,
        "login alice wrong",
        "login failed: wrong password",
    )
    .await;
    command(
        &alice,
        &mgmt,
        &format!("!login alice {TOY_PASSWORD}"),
        "Logged in as alice (toynet).",
    )
    .await;
    command(&alice, &mgmt, "status", "toynet as alice: CONNECTED").await;

    // Logged in, alice's messages go out through her own connection.
    let hello = alice.send_text(&lobby, "hello toy").await;
    let arrived = world
        .wait_for(
            "hello",
            |a| matches!(a, Arrived::Message { body, .. } if body == "hello toy"),
        )
        .await;
    let Arrived::Message {
        speaker,
        id: hello_remote,
        chat,
        ..
    } = arrived
    else {
        unreachable!()
    };
    assert_eq!((speaker.as_str(), chat.as_str()), ("puppet:alice", "lobby"));

    // A reply to the ghost's message names the remote message it answers.
    let welcome = alice
        .send_event(
            &lobby,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "welcome, bob",
                   "m.relates_to": {"m.in_reply_to": {"event_id": hi.as_str()}}}),
        )
        .await;
    let reply = world
        .wait_for(
            "reply",
            |a| matches!(a, Arrived::Message { body, .. } if body == "welcome, bob"),
        )
        .await;
    assert!(
        matches!(reply, Arrived::Message { reply_to: Some(ref r), .. } if r == "r1"),
        "{reply:?}"
    );
    // A network that quotes what is replied to can read any message of the portal.
    let lobby_id = trestle::ruma::RoomId::parse(&lobby).unwrap();
    let welcome_id = trestle::ruma::EventId::parse(&welcome).unwrap();
    let (sender, content) = handle
        .matrix_message(&lobby_id, &welcome_id)
        .await
        .unwrap()
        .expect("readable");
    assert_eq!(
        (sender.as_str(), content.body.as_str()),
        ("@alice:localhost", "welcome, bob")
    );

    // An edit and a redaction of alice's message reach the remote message they map to; a
    // reaction in between is a capability the toy network lacks, and is skipped.
    alice
        .send_event(
            &lobby,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* hello toy, edited",
                   "m.new_content": {"msgtype": "m.text", "body": "hello toy, edited"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": hello}}),
        )
        .await;
    alice
        .send_event(
            &lobby,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": hi.as_str(), "key": "👍"}}),
        )
        .await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/redact-1",
        encode(&lobby),
        encode(&hello)
    );
    alice.call_ok(Method::PUT, &path, Some(&json!({}))).await;
    world
        .wait_for(
            "the redaction",
            |a| matches!(a, Arrived::Redaction { target } if *target == hello_remote),
        )
        .await;
    assert!(world.arrived().contains(&Arrived::Edit {
        target: hello_remote.clone(),
        body: "hello toy, edited".into()
    }));

    // Remote to Matrix through the map: a reply to alice's message, an edit and a deletion of
    // bob's; and the echo of alice's own message is dropped.
    let answer = handle
        .remote_message(
            RemoteMessage::new("lobby".into(), "bob".into(), "r2".into(), text("thanks"))
                .reply_to(hello_remote.clone()),
        )
        .await
        .unwrap()
        .unwrap();
    let answer = alice
        .wait_for_event(&lobby, WAIT, |e| e["event_id"] == answer.as_str())
        .await;
    assert_eq!(
        answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hello.as_str()
    );
    let edit = handle
        .remote_edit(RemoteEdit::new(
            "lobby".into(),
            "bob".into(),
            "r1".into(),
            text("hi from toy, edited"),
        ))
        .await
        .unwrap()
        .expect("the edit maps");
    let edit = alice
        .wait_for_event(&lobby, WAIT, |e| e["event_id"] == edit.as_str())
        .await;
    assert_eq!(edit["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], hi.as_str());
    assert_eq!(
        edit["content"]["m.new_content"]["body"],
        "hi from toy, edited"
    );
    assert!(
        handle
            .remote_redaction(&"lobby".into(), &"bob".into(), &"r1".into())
            .await
            .unwrap()
    );
    alice
        .wait_for_event(&lobby, WAIT, |e| {
            e["event_id"] == hi.as_str() && e["unsigned"]["redacted_because"].is_object()
        })
        .await;
    let echo = RemoteMessage::new(
        "lobby".into(),
        "alice".into(),
        hello_remote.clone(),
        text("hello toy"),
    );
    assert_eq!(handle.remote_message(echo).await.unwrap(), None);

    // Nothing the ghosts said came back to the network, and the message sent with neither a
    // login nor relay mode never went out.
    harness.app.idle().await;
    let messages: Vec<String> = world
        .arrived()
        .iter()
        .filter_map(|a| match a {
            Arrived::Message { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, vec!["hello toy", "welcome, bob"]);

    // A message the network refuses: the room is told, in a reply to it.
    let refused = alice.send_text(&lobby, "please fail").await;
    let notice = wait_after(&alice, &lobby, &refused, |e| e["sender"] == BOT).await;
    assert_eq!(
        notice["content"]["body"],
        "Not delivered to Toy: the toy network refused it"
    );
    assert_eq!(
        notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        refused.as_str()
    );

    // Typing starts and stops on the network too.
    let typing = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        encode(&lobby),
        encode("@alice:localhost")
    );
    for now in [true, false] {
        let body = json!({"typing": now, "timeout": 30000});
        alice.call_ok(Method::PUT, &typing, Some(&body)).await;
        let expected = Arrived::Typing {
            speaker: "puppet:alice".into(),
            typing: now,
        };
        world.wait_for("typing", |a| *a == expected).await;
    }

    // A remote reaction to a bridged message.
    let reaction = RemoteReaction::new("lobby".into(), "carl".into(), "r2".into(), "🎉");
    let reaction = handle.remote_reaction(reaction).await.unwrap().unwrap();
    let reaction = alice
        .wait_for_event(&lobby, WAIT, |e| e["event_id"] == reaction.as_str())
        .await;
    assert_eq!(reaction["sender"], "@toy_carl:localhost");
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "🎉");

    // Remote membership moves ghosts in and out of the portal.
    handle
        .remote_membership(&"lobby".into(), &"erin".into(), RemoteMembership::Join)
        .await
        .unwrap();
    wait_member(&alice, &lobby, "@toy_erin:localhost", true).await;
    let left = RemoteMembership::Leave(Some("bye".into()));
    handle
        .remote_membership(&"lobby".into(), &"erin".into(), left)
        .await
        .unwrap();
    wait_member(&alice, &lobby, "@toy_erin:localhost", false).await;

    // A renamed chat with a new topic: the portal follows.
    let renamed = ChatInfo::named("Toy lobby, renamed").topic("a new topic");
    handle
        .remote_chat_info(&"lobby".into(), &renamed)
        .await
        .unwrap();
    let state = room_state(&alice, &lobby).await;
    let name = state.iter().find(|e| e["type"] == "m.room.name").unwrap();
    let topic = state.iter().find(|e| e["type"] == "m.room.topic").unwrap();
    assert_eq!(name["content"]["name"], "Toy lobby, renamed");
    assert_eq!(topic["content"]["topic"], "a new topic");

    // Direct chats, started from Matrix (inviting a ghost) and from the network.
    let dm = alice
        .create_room(
            json!({"invite": ["@toy_frank:localhost"], "is_direct": true,
                            "preset": "trusted_private_chat"}),
        )
        .await;
    wait_member(&alice, &dm, "@toy_frank:localhost", true).await;
    alice.send_text(&dm, "psst, frank").await;
    let psst = world
        .wait_for(
            "the direct message",
            |a| matches!(a, Arrived::Message { body, .. } if body == "psst, frank"),
        )
        .await;
    assert!(
        matches!(psst, Arrived::Message { ref chat, .. } if chat == "dm.frank.alice"),
        "{psst:?}"
    );
    let alice_id = trestle::ruma::UserId::parse("@alice:localhost").unwrap();
    let gina = handle
        .ensure_direct_portal(&"dm.gina.alice".into(), &"gina".into(), &alice_id)
        .await
        .unwrap();
    let gina_room = alice.join(gina.room_id.as_str()).await;
    let hello = handle
        .remote_message(RemoteMessage::new(
            "dm.gina.alice".into(),
            "gina".into(),
            "d1".into(),
            text("hello alice"),
        ))
        .await
        .unwrap()
        .unwrap();
    let hello = alice
        .wait_for_event(&gina_room, WAIT, |e| e["event_id"] == hello.as_str())
        .await;
    assert_eq!(hello["sender"], "@toy_gina:localhost");

    // The connection drops and comes back: alice is told both.
    let login = world.handle("alice").expect("connected");
    login
        .set_state(ConnectionState::TransientDisconnect(
            "toy server restarting".into(),
        ))
        .await
        .unwrap();
    alice
        .wait_for_event(&mgmt, WAIT, |e| {
            e["content"]["body"] == "toynet: connection lost (toy server restarting); reconnecting."
        })
        .await;
    command(
        &alice,
        &mgmt,
        "status",
        "TRANSIENT_DISCONNECT: toy server restarting",
    )
    .await;
    login.set_state(ConnectionState::Connected).await.unwrap();
    alice
        .wait_for_event(&mgmt, WAIT, |e| {
            e["content"]["body"] == "toynet: connected again."
        })
        .await;

    // Relay mode: the bot speaks for those who cannot speak themselves, with their name.
    command(
        &alice,
        &mgmt,
        "relay #toy_lobby:localhost on",
        "Relay mode is on",
    )
    .await;
    // A login the network threw out (it needs the user) no longer speaks, and, hers, the
    // relay does not speak for her either: she is told (see bridge_restore.rs).
    let kicked = ConnectionState::BadCredentials("kicked by the toy admin".into());
    login.set_state(kicked).await.unwrap();
    alice
        .wait_for_event(&mgmt, WAIT, |e| {
            e["content"]["body"]
                == "toynet: disconnected (kicked by the toy admin). Log in again to reconnect."
        })
        .await;
    let kicked = alice.send_text(&lobby, "said while kicked").await;
    wait_after(&alice, &lobby, &kicked, |e| {
        e["sender"] == BOT
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("log in again"))
    })
    .await;
    // Logged out, the relay speaks for her.
    command(&alice, &mgmt, "logout", "Logged out of toynet.").await;
    command(&alice, &mgmt, "status", "You are not logged in.").await;
    alice.send_text(&lobby, "relayed words").await;
    let relayed = world
        .wait_for(
            "the relayed message",
            |a| matches!(a, Arrived::Message { body, .. } if body == "relayed words"),
        )
        .await;
    assert!(
        matches!(relayed, Arrived::Message { ref speaker, .. } if speaker == "relay:alice"),
        "{relayed:?}"
    );

    // Linking an existing room to a chat, then unlinking it.
    let garden = alice
        .create_room(json!({"name": "garden", "preset": "public_chat"}))
        .await;
    alice.invite(&garden, BOT).await;
    // The bot needs the power to put bridge info in the room.
    command(
        &alice,
        &mgmt,
        &format!("link {garden} garden"),
        "give it power level 50",
    )
    .await;
    let power = json!({"users": {BOT: 50}});
    alice
        .send_state(&garden, "m.room.power_levels", "", power)
        .await;
    command(&alice, &mgmt, &format!("link {garden} garden"), "Linked").await;
    let garden_state = room_state(&alice, &garden).await;
    let info = bridge_info(&garden_state, "m.bridge").expect("bridge info in the linked room");
    assert_eq!(info["content"]["channel"]["id"], "garden");
    assert_eq!(info["content"]["creator"], "@alice:localhost");
    let bloom = handle
        .remote_message(RemoteMessage::new(
            "garden".into(),
            "dora".into(),
            "g1".into(),
            text("bloom"),
        ))
        .await
        .unwrap()
        .unwrap();
    let bloom = alice
        .wait_for_event(&garden, WAIT, |e| e["event_id"] == bloom.as_str())
        .await;
    assert_eq!(bloom["sender"], "@toy_dora:localhost");
    let list = command(&alice, &mgmt, "list", "Portals:").await;
    assert!(list.contains(&format!("lobby → {lobby} (relay)")), "{list}");
    assert!(list.contains(&format!("garden → {garden}")), "{list}");
    command(&alice, &mgmt, &format!("unlink {garden}"), "Unlinked").await;
    let list = command(&alice, &mgmt, "list", "Portals:").await;
    assert!(!list.contains("garden"), "{list}");

    // Leaving the management room ends it: the next notice comes in a new one.
    alice.leave(&mgmt).await;
    let started = std::time::Instant::now();
    while handle.management_room(&alice_id).await.unwrap().as_str() == mgmt {
        assert!(started.elapsed() < WAIT, "the old management room stayed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    handle.notify(&alice_id, "still here").await.unwrap();
    let fresh = wait_for_invite(&alice, Some(&mgmt)).await;
    alice.join(&fresh).await;
    alice
        .wait_for_event(&fresh, WAIT, |e| e["content"]["body"] == "still here")
        .await;
    harness.stop().await;
}
