//! Files both ways, end to end: a real Synapse, a real Prosody with its HTTP upload service
//! (`mod_http_file_share`, XEP-0363), and an XMPP client written in the test; a file shared before
//! the portal was made comes from the room's archive as a file too.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::json;
use support::{
    client::{body, oob_url},
    prosody::Prosody,
    room::{InRoom, alice_in_room, bob_joins, bob_joins_alices_room, start},
};
use tokio_xmpp::parsers::message::MessageType;
use trestle_tests::appservice::WAIT;

/// Bytes that are not all alike, a few hundred KiB of them.
fn image(seed: u32) -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test]
async fn an_image_crosses_each_way_and_its_bytes_match() {
    let InRoom {
        _server: server,
        room,
        mut alice,
        setup: _setup,
        bob,
        portal,
        bob_occupant,
    } = bob_joins_alices_room().await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";

    // XMPP → Matrix: alice puts a picture on the server's upload service and shares its URL,
    // as clients do; it arrives as an image her ghost uploaded, the same bytes.
    let cat = image(1);
    let url = alice.upload(&cat, "cat.png", "image/png").await;
    assert!(url.starts_with(&server.upload_url()), "{url}");
    alice.share(MessageType::Groupchat, &room, "f1", &url).await;
    let shared = bob
        .wait_for_event(&portal, WAIT, |e| {
            e["type"] == "m.room.message" && e["sender"] == alice_ghost
        })
        .await;
    assert_eq!(shared["content"]["msgtype"], "m.image", "{shared}");
    assert_eq!(shared["content"]["body"], "cat.png");
    assert_eq!(shared["content"]["info"]["mimetype"], "image/png");
    let mxc = shared["content"]["url"].as_str().unwrap();
    assert!(
        bob.download_media(mxc).await == cat,
        "the image's bytes changed"
    );

    // A URL that is not the upload service's is fetched only from public addresses: one on
    // loopback (Synapse's own) arrives as its text.
    let inside = format!("{}/_matrix/client/versions", bob.base_url());
    alice
        .share(MessageType::Groupchat, &room, "f2", &inside)
        .await;
    let text = bob
        .wait_for_event(&portal, WAIT, |e| {
            e["type"] == "m.room.message"
                && e["sender"] == alice_ghost
                && e["content"]["body"] == inside.as_str()
        })
        .await;
    assert_eq!(text["content"]["msgtype"], "m.text");

    // Matrix → XMPP: bob's picture goes on the upload service as his JID and reaches the room
    // as its URL, with an out-of-band element, from his occupant.
    let dog = image(2);
    let mxc = bob.upload_media(&dog, "image/png", "dog.png").await;
    bob.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "dog.png", "url": mxc,
               "info": {"mimetype": "image/png", "size": dog.len()}}),
    )
    .await;
    // alice's own shares come back to her too.
    let heard = alice
        .expect_message("bob's picture", |m| {
            let from = m.from.as_ref().map(|f| f.to_string());
            oob_url(m).is_some() && from.as_deref() == Some(bob_occupant.as_str())
        })
        .await;
    let url = oob_url(&heard).unwrap();
    assert_eq!(body(&heard), Some(url.as_str()));
    assert!(url.starts_with(&server.upload_url()), "{url}");
    assert!(url.ends_with("/dog.png"), "{url}");
    let fetched = reqwest::get(&url).await.unwrap();
    assert!(fetched.status().is_success(), "{}", fetched.status());
    assert_eq!(
        fetched.headers()["content-type"].to_str().unwrap(),
        "image/png"
    );
    assert!(
        fetched.bytes().await.unwrap().to_vec() == dog,
        "the picture's bytes changed"
    );
}

#[tokio::test]
async fn a_file_in_the_rooms_archive_arrives_as_a_file() {
    let server = Prosody::start(&["alice"]).await;
    let (room, mut alice) = alice_in_room(&server).await;
    // Shared before there is a portal: only the room's archive has it.
    let cat = image(3);
    let url = alice.upload(&cat, "archived.png", "image/png").await;
    alice.share(MessageType::Groupchat, &room, "h1", &url).await;
    alice
        .expect_message("the room's copy of the share", |m| {
            oob_url(m).as_deref() == Some(url.as_str())
        })
        .await;
    let setup = start(&server).await;
    let (bob, portal, _) = bob_joins(&setup, &mut alice, &room).await;
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    let shared = bob
        .wait_for_event(&portal, WAIT, |e| {
            e["type"] == "m.room.message" && e["sender"] == alice_ghost
        })
        .await;
    assert_eq!(shared["content"]["msgtype"], "m.image", "{shared}");
    assert_eq!(shared["content"]["body"], "archived.png");
    let mxc = shared["content"]["url"].as_str().unwrap();
    assert!(
        bob.download_media(mxc).await == cat,
        "the archived image's bytes changed"
    );
}
