//! Finding and showing people in the XMPP bridge, end to end (a real Synapse, a real Prosody
//! and the tests' own XMPP client): rooms and users found by their JIDs (the `xmpp`
//! third-party protocol), and avatars both ways through vCards.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::{str::FromStr, time::Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    client::XmppClient,
    prosody::{COMPONENT, MUC, Prosody},
    room::{self, message_from},
};
use tokio_xmpp::{
    Stanza,
    jid::Jid,
    minidom::Element,
    parsers::{iq::Iq, message::MessageType, presence::Presence},
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::wait_member,
    synapse::encode,
};

/// A third-party lookup asked of the bridge directly, as the homeserver asks it.
async fn ask_bridge(setup: &Harness, query: &str) -> Value {
    let url = format!("{}/_matrix/app/v1/thirdparty/{query}", setup.url);
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&setup.registration.hs_token)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn rooms_and_users_are_found_by_their_jids() {
    let server = Prosody::start(&["alice"]).await;
    let (room, mut alice) = room::alice_in_room(&server).await;
    let setup = room::start(&server).await;
    let carol = setup.synapse.register_user("carol", "password-1234").await;
    let get = |path: String| async {
        let path = path;
        carol.call_ok(Method::GET, &path, None).await
    };
    let lookup = |what: &str, query: &str| format!("/_matrix/client/v3/thirdparty/{what}?{query}");

    let protocols = get("/_matrix/client/v3/thirdparty/protocols".to_owned()).await;
    let xmpp = &protocols["xmpp"];
    assert_eq!(xmpp["location_fields"], json!(["room"]), "{protocols}");
    assert_eq!(xmpp["user_fields"], json!(["jid"]), "{protocols}");
    assert_eq!(xmpp["instances"][0]["network_id"], "xmpp", "{protocols}");

    // A room's JID is its portal's alias, and back.
    let alias = format!("#xmpp_chat_{MUC}:localhost");
    let found = get(lookup("location/xmpp", &format!("room={}", encode(&room)))).await;
    assert_eq!(
        found,
        json!([{"alias": alias, "protocol": "xmpp", "fields": {"room": room}}])
    );
    // Synapse asks appservices only by protocol: the reverse lookups are asked of the bridge
    // as the homeserver would.
    let back = ask_bridge(&setup, &format!("location?alias={}", encode(&alias))).await;
    assert_eq!(back[0]["fields"]["room"], room.as_str(), "{back}");
    let nonsense = get(lookup("location/xmpp", "room=no%20room")).await;
    assert_eq!(nonsense, json!([]));

    // A JID is its ghost, and back; one of the bridge's component is the Matrix user.
    let alice_ghost = "@xmpp_alice=40localhost:localhost";
    let found = get(lookup("user/xmpp", "jid=alice%40localhost")).await;
    assert_eq!(found[0]["userid"], alice_ghost, "{found}");
    let back = ask_bridge(&setup, &format!("user?userid={}", encode(alice_ghost))).await;
    assert_eq!(back[0]["fields"]["jid"], "alice@localhost", "{back}");
    let matrix = get(lookup("user/xmpp", &format!("jid=bob%40{COMPONENT}"))).await;
    assert_eq!(matrix[0]["userid"], "@bob:localhost", "{matrix}");

    // The alias found leads to the room.
    let portal = carol.join(&alias).await;
    alice
        .say(MessageType::Groupchat, &room, "f1", "found me")
        .await;
    carol
        .wait_for_event(
            &portal,
            WAIT,
            message_from(
                "@xmpp_chat=40conference.localhost=2falice:localhost",
                "found me",
            ),
        )
        .await;
}

/// Asks `to` for its vCard as `client`; the answer's vCard, or the error's condition.
async fn ask_vcard(client: &mut XmppClient, to: &str, id: &str) -> Result<Element, String> {
    let query: Element = "<vCard xmlns='vcard-temp'/>".parse().unwrap();
    client
        .send(Iq::Get {
            from: None,
            to: Some(Jid::from_str(to).unwrap()),
            id: id.to_owned(),
            payload: query,
        })
        .await;
    client
        .expect("the vCard", |stanza| match stanza {
            Stanza::Iq(Iq::Result {
                id: answered,
                payload,
                ..
            }) if answered == id => Some(Ok(payload.expect("a vCard"))),
            Stanza::Iq(Iq::Error {
                id: answered,
                error,
                ..
            }) if answered == id => Some(Err(format!("{:?}", error.defined_condition))),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn avatars_cross_both_ways_through_vcards() {
    let server = Prosody::start(&["alice"]).await;
    let (room, mut alice) = room::alice_in_room(&server).await;
    let setup = room::start(&server).await;
    let bob = setup.synapse.register_user("bob", "password-1234").await;

    // bob's name and avatar, on his Matrix profile.
    let picture: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let uploaded = bob.upload_media(&picture, "image/png", "bob.png").await;
    let profile = format!(
        "/_matrix/client/v3/profile/{}",
        encode(bob.user_id.as_str())
    );
    let avatar = json!({"avatar_url": uploaded});
    bob.call_ok(Method::PUT, &format!("{profile}/avatar_url"), Some(&avatar))
        .await;
    let name = json!({"displayname": "Bob B."});
    bob.call_ok(Method::PUT, &format!("{profile}/displayname"), Some(&name))
        .await;

    // alice asks for the vCard of bob's JID: his name and his avatar's bytes.
    let vcard = ask_vcard(&mut alice, &format!("bob@{COMPONENT}"), "v1")
        .await
        .unwrap();
    let field = |name: &str| vcard.get_child(name, "vcard-temp").map(Element::text);
    assert_eq!(field("FN").as_deref(), Some("Bob B."));
    let photo = vcard.get_child("PHOTO", "vcard-temp").expect("a photo");
    assert_eq!(
        photo
            .get_child("TYPE", "vcard-temp")
            .map(Element::text)
            .as_deref(),
        Some("image/png")
    );
    let binval = photo.get_child("BINVAL", "vcard-temp").unwrap().text();
    let read = tokio_xmpp::parsers::vcard::VCard::try_from(vcard.clone()).unwrap();
    assert_eq!(read.photo.unwrap().binval.data, picture, "{binval}");

    // A JID that is nobody on Matrix has none.
    let nobody = ask_vcard(&mut alice, &format!("nobody@{COMPONENT}"), "v2").await;
    assert_eq!(nobody.err().as_deref(), Some("ItemNotFound"));

    // alice's avatar, in her vCard (XEP-0054) and named in her presence (XEP-0153), is her
    // ghost's.
    let portal = bob.join(&format!("#xmpp_chat_{MUC}:localhost")).await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    wait_member(&bob, &portal, alice_ghost, true).await;
    let hers: Vec<u8> = (0..=255u8).rev().cycle().take(2000).collect();
    let card = tokio_xmpp::parsers::vcard::VCard {
        photo: Some(tokio_xmpp::parsers::vcard::Photo {
            type_: tokio_xmpp::parsers::vcard::Type {
                data: "image/png".into(),
            },
            binval: tokio_xmpp::parsers::vcard::Binval { data: hers.clone() },
        }),
        payloads: vec![],
    };
    alice
        .send(Iq::Set {
            from: None,
            to: None,
            id: "v3".into(),
            payload: card.into(),
        })
        .await;
    alice
        .expect("her vCard stored", |stanza| match stanza {
            Stanza::Iq(Iq::Result { id, .. }) if id == "v3" => Some(()),
            Stanza::Iq(Iq::Error { id, error, .. }) if id == "v3" => panic!("{error:?}"),
            _ => None,
        })
        .await;
    let update: Element = "<x xmlns='vcard-temp:x:update'>\
                           <photo>a9993e364706816aba3e25717850c26c9cd0d89d</photo></x>"
        .parse()
        .unwrap();
    let mut presence =
        Presence::available().with_to(Jid::from_str(&format!("{room}/alice")).unwrap());
    presence.payloads.push(update);
    alice.send(presence).await;
    let avatar_path = format!(
        "/_matrix/client/v3/profile/{}/avatar_url",
        encode(alice_ghost)
    );
    let started = Instant::now();
    let mxc = loop {
        let (_, body) = bob.call(Method::GET, &avatar_path, None).await;
        if let Some(mxc) = body["avatar_url"].as_str() {
            break mxc.to_owned();
        }
        assert!(
            started.elapsed() < WAIT,
            "{alice_ghost} has no avatar: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(bob.download_media(&mxc).await, hers);
}
