//! The bridge kit's media links against a real Synapse with the toy network: a link made by
//! `BridgeHandle::media_link` serves the file to anyone, within the size limit, and its key
//! (made once and kept in the store) outlives a restart; a key from the configuration
//! replaces it.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use trestle_bridge::{Bridge, BridgeConfig, MediaLinkConfig, media::LinkSigner};
use trestle_tests::{bridge_checks::start_toy_bridge, toy_network::ToyNetwork};

/// GETs `url` with no credentials: the status, the headers' content type and disposition,
/// and the body.
async fn get(url: &str) -> (u16, String, String, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap().to_vec();
    (status, content_type, disposition, body)
}

#[tokio::test]
async fn a_link_serves_its_file_within_the_limit_and_its_stored_key_outlives_a_restart() {
    let config = BridgeConfig::default().media_links(MediaLinkConfig::default().max_size(1_000));
    let (mut harness, handle, world) = start_toy_bridge(config.clone(), false).await;
    handle.attach(&harness.app).await.unwrap();
    let media = harness.app.media();
    let note = media
        .upload_bytes(
            b"hello from matrix".to_vec(),
            "text/plain",
            Some("note.txt"),
        )
        .await
        .unwrap();
    let page = media
        .upload_bytes(
            b"<script>alert(1)</script>".to_vec(),
            "text/html",
            Some("page.html"),
        )
        .await
        .unwrap();
    let big = media
        .upload_bytes(
            vec![7u8; 5_000],
            "application/octet-stream",
            Some("big.bin"),
        )
        .await
        .unwrap();

    let link = handle.media_link(&note).await.unwrap();
    assert!(
        link.starts_with(&format!("{}/media/v1/download/localhost/", harness.url)),
        "{link}"
    );
    let (status, content_type, disposition, body) = get(&link).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(disposition, "inline; filename*=utf-8''note.txt");
    assert_eq!(body, b"hello from matrix");

    // A page is offered as a download, never shown under the bridge's address.
    let (status, _, disposition, _) = get(&handle.media_link(&page).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(disposition, "attachment; filename*=utf-8''page.html");

    // Over the limit: refused before its body is read.
    let (status, _, _, body) = get(&handle.media_link(&big).await.unwrap()).await;
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, &error["errcode"]),
        (413, &Value::from("M_TOO_LARGE"))
    );

    // A mangled link is refused with a Matrix error too.
    let mangled = format!(
        "{}/media/v1/download/localhost/%FF%FE?expires=x&sig=%",
        harness.url
    );
    let (status, _, _, body) = get(&mangled).await;
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, &error["errcode"]),
        (403, &Value::from("M_FORBIDDEN"))
    );

    // After a restart on the same store, the link still opens: the key was kept.
    let network = || ToyNetwork {
        world: world.clone(),
    };
    harness
        .restart(Bridge::new(network(), config.clone()).router())
        .await;
    let (status, _, _, body) = get(&link).await;
    assert_eq!((status, body.as_slice()), (200, &b"hello from matrix"[..]));

    // A key from the configuration replaces the stored one: the old link is refused, one
    // signed with the configured key opens.
    let keyed = config.media_links(MediaLinkConfig::default().key("configured key"));
    harness
        .restart(Bridge::new(network(), keyed).router())
        .await;
    let (status, _, _, _) = get(&link).await;
    assert_eq!(status, 403);
    let expires = link
        .split("expires=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .unwrap()
        .parse()
        .unwrap();
    let signed = LinkSigner::new("configured key")
        .link(&harness.url, &note, expires)
        .unwrap();
    let (status, _, _, body) = get(&signed).await;
    assert_eq!((status, body.as_slice()), (200, &b"hello from matrix"[..]));
}
