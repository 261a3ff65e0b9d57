//! Double puppeting through a Matrix user's own XMPP account, end to end: a real Synapse loaded
//! with a double puppeting registration, a real Prosody, and XMPP clients written in the test.
//! bob logs in to the bridge with his XMPP account; what he then sends from his own XMPP client
//! (another resource of that account) shows in Matrix from his own Matrix account, once: a
//! direct message through its sent carbon (XEP-0280), a room message as the room shows it.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::{str::FromStr, time::Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    client::{XmppClient, body},
    prosody::{COMPONENT, MUC, Prosody},
    room::{bob_joins, message_from, settings},
};
use tokio_xmpp::{
    Stanza,
    jid::Jid,
    minidom::Element,
    parsers::{iq::Iq, message::MessageType},
};
use trestle_bridge::{BridgeConfig, double_puppet::DOUBLE_PUPPET_SOURCE};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{command_to, double_puppet_registration, wait_after},
    synapse::UserClient,
};

/// Makes `room` (alice's: she owns it) show everyone's real JID (`whois` anyone), as a
/// non-anonymous room does.
async fn make_non_anonymous(alice: &mut XmppClient, room: &str) {
    let form: Element = "<query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
         <field var='muc#roomconfig_whois'><value>anyone</value></field>\
         </x></query>"
        .parse()
        .unwrap();
    let iq = Iq::Set {
        from: None,
        to: Some(Jid::from_str(room).unwrap()),
        id: "whois".to_owned(),
        payload: form,
    };
    alice.send(iq).await;
    alice
        .expect("the room's configuration taken", |stanza| match stanza {
            Stanza::Iq(Iq::Result { id, .. }) if id == "whois" => Some(()),
            Stanza::Iq(Iq::Error { id, error, .. }) if id == "whois" => {
                panic!("the room refused its configuration: {error:?}")
            }
            _ => None,
        })
        .await;
}

/// The room `user` is in besides `known`, once there is one.
async fn another_room(user: &UserClient, known: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let joined = user
            .call_ok(Method::GET, "/_matrix/client/v3/joined_rooms", None)
            .await;
        let rooms = joined["joined_rooms"].as_array().unwrap();
        if let Some(room) = rooms
            .iter()
            .filter_map(Value::as_str)
            .find(|room| !known.contains(room))
        {
            return room.to_owned();
        }
        assert!(
            started.elapsed() < WAIT,
            "{} is in no new room",
            user.user_id
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How many events of the room have the body `text`.
async fn count_bodies(user: &UserClient, room: &str, text: &str) -> usize {
    let events = user.messages(room).await;
    events
        .iter()
        .filter(|e| e["content"]["body"] == text)
        .count()
}

#[tokio::test]
async fn what_a_user_sends_from_their_own_xmpp_client_comes_from_their_matrix_account() {
    let server = Prosody::start(&["alice", "bob"]).await;
    let room = format!("chat@{MUC}");
    let mut alice = XmppClient::connect(&server, "alice").await;
    alice.join(&room, "alice").await;
    make_non_anonymous(&mut alice, &room).await;

    let double_puppet = double_puppet_registration("xmpp-double-puppet");
    let mut settings = settings(&server);
    settings.client_server = Some(format!("127.0.0.1:{}", server.c2s_port));
    settings.bridge = BridgeConfig::default()
        .double_puppet("localhost", format!("as_token:{}", double_puppet.as_token));
    let registration = trestle_xmpp::PLUGIN.generate_registration(None, "localhost");
    let bot = format!("@{}:localhost", registration.sender_localpart);
    let router = trestle_xmpp::router(settings).unwrap();
    let setup = Harness::start_beside(registration, &[double_puppet], router).await;
    let (bob, portal, _bob_occupant) = bob_joins(&setup, &mut alice, &room).await;

    // bob logs in with his own XMPP account and turns double puppeting on.
    let mgmt = bob
        .create_room(json!({"invite": [bot], "is_direct": true, "preset": "trusted_private_chat"}))
        .await;
    bob.wait_for_event(&mgmt, WAIT, |e| e["sender"] == bot.as_str())
        .await;
    let login = "login bob@localhost bob-password";
    let logged_in = "Logged in as bob@localhost (account)";
    command_to(&bot, &bob, &mgmt, login, logged_in).await;
    let on = "double-puppet on";
    command_to(&bot, &bob, &mgmt, on, "Double puppeting is on").await;

    // From his phone (another resource of his account) he writes to alice: she gets it, and
    // Matrix shows it in his direct chat with her, from his own account.
    let mut phone = XmppClient::connect(&server, "bob").await;
    let direct = "hello from my phone";
    phone
        .say(MessageType::Chat, "alice@localhost", "c1", direct)
        .await;
    alice
        .expect_message("bob's message", |m| body(m) == Some(direct))
        .await;
    let dm = another_room(&bob, &[&portal, &mgmt]).await;
    let mine = bob
        .wait_for_event(&dm, WAIT, message_from("@bob:localhost", direct))
        .await;
    assert_eq!(mine["content"][DOUBLE_PUPPET_SOURCE], "xmpp", "{mine}");
    let members = bob.joined_members(&dm).await;
    assert!(
        members
            .iter()
            .any(|m| m == "@xmpp_alice=40localhost:localhost"),
        "{members:?}"
    );

    // It does not go back to alice from his Matrix JID: the next thing she hears from it is
    // what bob says in Matrix after.
    bob.send_text(&dm, "and now from Matrix").await;
    let from_matrix = format!("bob@{COMPONENT}");
    let heard = alice
        .expect_message("bob's Matrix message", |m| {
            m.from
                .as_ref()
                .is_some_and(|f| f.to_bare().to_string() == from_matrix)
        })
        .await;
    assert_eq!(
        body(&heard),
        Some("and now from Matrix"),
        "an echo reached XMPP"
    );
    assert_eq!(count_bodies(&bob, &dm, direct).await, 1);

    // In the room (which shows real JIDs), his phone's message comes from his own account in
    // the portal, once, and no ghost of his account joins.
    phone.join(&room, "bob-phone").await;
    let said = "in the room from my phone";
    phone.say(MessageType::Groupchat, &room, "g1", said).await;
    let mine = bob
        .wait_for_event(&portal, WAIT, message_from("@bob:localhost", said))
        .await;
    assert_eq!(mine["content"][DOUBLE_PUPPET_SOURCE], "xmpp", "{mine}");
    alice
        .say(MessageType::Groupchat, &room, "g2", "alice after")
        .await;
    let alice_ghost = "@xmpp_alice=40localhost:localhost";
    wait_after(&bob, &portal, mine["event_id"].as_str().unwrap(), |e| {
        e["sender"] == alice_ghost && e["content"]["body"] == "alice after"
    })
    .await;
    assert_eq!(count_bodies(&bob, &portal, said).await, 1);
    let members = bob.joined_members(&portal).await;
    assert!(
        !members
            .iter()
            .any(|m| m == "@xmpp_bob=40localhost:localhost"),
        "{members:?}"
    );
}
