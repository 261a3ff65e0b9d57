//! The bridge kit's provisioning API against a real Synapse, with the toy network: the shared
//! secret, Matrix errors, logins, portals, linking, and a user without a management room
//! getting one.

use reqwest::Method;
use serde_json::json;
use trestle::{
    Registration,
    bridge::{Bridge, BridgeConfig},
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{BOT, provision},
    toy_network::ToyNetwork,
};

const SECRET: &str = "provisioning-secret-789";

#[tokio::test]
async fn the_provisioning_api_does_what_the_management_room_does() {
    let config = BridgeConfig::default().provisioning_secret(SECRET);
    let bridge = Bridge::new(ToyNetwork::default(), config);
    let registration = Registration::generate("toy", None, "toybot", "toy_", "localhost");
    let mut harness = Harness::start(registration, bridge.router()).await;
    let alice = harness
        .synapse
        .register_user("alice", "password-1234")
        .await;
    let lobby = alice.join("#toy_lobby:localhost").await;
    let garden = alice
        .create_room(json!({"name": "garden", "preset": "public_chat",
                            "power_level_content_override": {"users": {BOT: 50}}}))
        .await;
    alice.invite(&garden, BOT).await;
    provisioning(&harness, &garden, &lobby).await;
    harness.stop().await;
}

/// The provisioning API: its secret, its errors, and its operations.
async fn provisioning(harness: &Harness, garden: &str, lobby: &str) {
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    let alice = "user_id=%40alice%3Alocalhost";
    let (status, body) = provision(harness, GET, "/provision/v1/portals", None, None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    let (status, body) = provision(harness, GET, "/provision/v1/portals", Some("nope"), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    let secret = Some(SECRET);

    let login = format!("/provision/v1/login?{alice}");
    let (status, body) = provision(harness, POST, &login, secret, Some("{not json")).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );
    let good = r#"{"fields": {"name": "alice", "password": "secret"}}"#;
    let (status, body) = provision(harness, POST, "/provision/v1/login", secret, Some(good)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );
    let wrong = r#"{"fields": {"name": "alice", "password": "guess"}}"#;
    let (status, body) = provision(harness, POST, &login, secret, Some(wrong)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = provision(harness, POST, &login, secret, Some(good)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["state"].as_str()),
        (Some("toynet"), Some("CONNECTED"))
    );

    let (status, body) = provision(
        harness,
        GET,
        &format!("/provision/v1/status?{alice}"),
        secret,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["logins"][0]["remote_name"], "alice");
    let (status, body) = provision(harness, GET, "/provision/v1/portals", secret, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["portals"][0]["chat"], "lobby");
    assert_eq!(body["portals"][0]["room_id"], lobby);

    // Carol may not link a room she has no power in; a room that is no portal cannot be
    // unlinked; a login that does not exist cannot be logged out.
    let link = json!({"room_id": garden, "chat": "garden"}).to_string();
    let carol_link = "/provision/v1/link?user_id=%40carol%3Alocalhost";
    let (status, body) = provision(harness, POST, carol_link, secret, Some(&link)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = provision(
        harness,
        POST,
        &format!("/provision/v1/link?{alice}"),
        secret,
        Some(&link),
    )
    .await;
    assert_eq!(
        (status, body["chat"].as_str()),
        (200, Some("garden")),
        "{body}"
    );
    let unlink = json!({"room_id": garden}).to_string();
    let path = format!("/provision/v1/unlink?{alice}");
    let (status, body) = provision(harness, POST, &path, secret, Some(&unlink)).await;
    assert_eq!(
        (status, body["chat"].as_str()),
        (200, Some("garden")),
        "{body}"
    );
    let (status, body) = provision(harness, POST, &path, secret, Some(&unlink)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    let logout = format!("/provision/v1/logout?{alice}");
    let (status, body) = provision(
        harness,
        POST,
        &logout,
        secret,
        Some(r#"{"login_id": "nope"}"#),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = provision(
        harness,
        POST,
        &logout,
        secret,
        Some(r#"{"login_id": "toynet"}"#),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));

    // A user with no management room yet gets one, invited by the bot, with the news.
    let dave = harness.synapse.register_user("dave", "password-1234").await;
    let login = "/provision/v1/login?user_id=%40dave%3Alocalhost";
    let body = r#"{"fields": {"name": "dave", "password": "secret"}}"#;
    let (status, answer) = provision(harness, POST, login, secret, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let started = std::time::Instant::now();
    let room = loop {
        let sync = dave
            .call_ok(GET, "/_matrix/client/v3/sync?timeout=0", None)
            .await;
        if let Some(room) = sync["rooms"]["invite"]
            .as_object()
            .and_then(|rooms| rooms.keys().next().cloned())
        {
            break room;
        }
        assert!(started.elapsed() < WAIT, "dave was never invited: {sync}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    dave.join(&room).await;
    dave.wait_for_event(&room, WAIT, |e| {
        e["sender"] == BOT && e["content"]["body"] == "toynet: connected."
    })
    .await;
}
