//! Media sent from Matrix reaches IRC as a signed link the bridge serves itself, end to end: a
//! real Synapse (authenticated media, its default), a real ngircd, and a plain IRC client
//! that opens the link over HTTP with no Matrix account.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::{Value, json};
use support::ngircd::Ngircd;
use support::raw::RawClient;
use trestle::ruma::OwnedMxcUri;
use trestle_bridge::{MediaLinkConfig, media::LinkSigner};
use trestle_irc::Settings;
use trestle_tests::{appservice::Harness, synapse::UserClient};

/// The signing key, set in the settings so that the test can sign a link of its own.
const KEY: &str = "a-test-key-for-media-links";

/// Uploads `data` as `user` and returns its `mxc://` URI.
async fn upload(user: &UserClient, data: &[u8], content_type: &str, name: &str) -> OwnedMxcUri {
    user.upload_media(data, content_type, name).await.into()
}

/// GETs `url` with no credentials; a refusal must be a Matrix error in JSON.
async fn refused(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn an_image_reaches_irc_as_a_link_that_serves_it_and_no_other_file() {
    let server = Ngircd::start().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;

    let settings = Settings {
        media_links: MediaLinkConfig::default().key(KEY),
        ..support::network::settings_without_auto_connect(server.port)
    };
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let setup = Harness::start(registration, trestle_irc::router(settings).unwrap()).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let alice = setup.synapse.register_user("alice", "password-1234").await;
    let room = alice.join("#irc_test_chat:localhost").await;

    // A file of a few hundred KiB, so that it streams in many chunks.
    let image: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mxc = upload(&alice, &image, "image/png", "cat.png").await;
    // The homeserver itself refuses it without a token: a plain homeserver link would not do.
    let (server_name, media_id) = mxc.parts().unwrap();
    let direct = format!(
        "{}/_matrix/client/v1/media/download/{server_name}/{media_id}",
        alice.base_url()
    );
    assert_eq!(reqwest::get(&direct).await.unwrap().status().as_u16(), 401);

    alice
        .send_event(
            &room,
            "m.room.message",
            json!({"msgtype": "m.image", "body": "cat.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": image.len()}}),
        )
        .await;
    let line = bob.expect_privmsg("#chat").await;
    let text = line.param(1);
    let link = text
        .split(' ')
        .find(|word| word.starts_with("http"))
        .unwrap_or_else(|| panic!("no link on IRC: {text}"));
    assert!(
        link.starts_with(&format!(
            "{}/media/v1/download/{server_name}/{media_id}?expires=",
            setup.url
        )),
        "{link}"
    );
    assert_eq!(text, format!("<alice> cat.png: {link}"));

    // The IRC user opens it with no account: the same bytes, typed and named.
    let response = reqwest::get(link).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename*=utf-8''cat.png"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let served = response.bytes().await.unwrap();
    assert!(served[..] == image[..], "the served bytes differ");

    // A forged signature: refused, whatever it is.
    let (base, query) = link.split_once('?').unwrap();
    let expires: u64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .unwrap()
        .parse()
        .unwrap();
    let forged = format!(
        "{base}?expires={expires}&sig={}",
        LinkSigner::new("not the key").signature(&mxc, expires)
    );
    let (status, body) = refused(&forged).await;
    assert_eq!((status, &body["errcode"]), (403, &json!("M_FORBIDDEN")));
    let (status, _) = refused(base).await;
    assert_eq!(status, 403, "no signature");
    // The same signature with a later expiry.
    let sig = query
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap();
    let (status, _) = refused(&format!("{base}?expires={}&sig={sig}", expires + 1)).await;
    assert_eq!(status, 403, "a longer life is not ours to take");

    // The signature of one file opens no other: not another upload of the homeserver's,
    // not a file of another server.
    let secret = upload(&alice, b"not for IRC", "text/plain", "secret.txt").await;
    let (_, secret_id) = secret.parts().unwrap();
    let other = link.replace(media_id, secret_id);
    assert_ne!(other, link);
    let (status, body) = refused(&other).await;
    assert_eq!((status, &body["errcode"]), (403, &json!("M_FORBIDDEN")));
    let elsewhere = link.replace(
        &format!("/download/{server_name}/"),
        "/download/example.org/",
    );
    let (status, _) = refused(&elsewhere).await;
    assert_eq!(status, 403);

    // A link signed with the bridge's key whose time has passed.
    let signer = LinkSigner::new(KEY);
    let expired = signer.link(&setup.url, &mxc, unix_now() - 60).unwrap();
    let (status, body) = refused(&expired).await;
    assert_eq!((status, &body["errcode"]), (410, &json!("M_FORBIDDEN")));
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // The same key and a time to come: served, so the refusal above was the expiry alone.
    let fresh = signer.link(&setup.url, &mxc, unix_now() + 600).unwrap();
    assert_eq!(reqwest::get(&fresh).await.unwrap().status().as_u16(), 200);
}
