//! The bridge kit's provisioning API against a real Synapse, with the toy network: the shared
//! secret, Matrix errors, logins, portals, linking, and a user without a management room
//! getting one.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::Method;
use serde_json::{Value, json};
use trestle_bridge::{BridgeConfig, MessageContent, RemoteMessage};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{BOT, provision, start_toy_bridge, wait_for_invite},
    toy_network::Arrived,
};

const SECRET: &str = "provisioning-secret-789";
const GET: Method = Method::GET;
const POST: Method = Method::POST;

/// Calls the API with the secret, checks the status and (for an error) the `errcode`, and
/// returns the answer.
async fn expect(
    harness: &Harness,
    (method, path, body): (Method, &str, Option<&str>),
    status: u16,
    errcode: Option<&str>,
) -> Value {
    let (got, answer) = provision(harness, method.clone(), path, Some(SECRET), body).await;
    assert_eq!(
        (got, answer["errcode"].as_str()),
        (status, errcode),
        "{method} {path}: {answer}"
    );
    answer
}

#[tokio::test]
async fn the_provisioning_api_does_what_the_management_room_does() {
    // Relay on, so that anything of the ghosts' that reached the kit would go out.
    let config = BridgeConfig::default()
        .provisioning_secret(SECRET)
        .relay(true);
    // Own events on: the kit still never bridges what its ghosts and bot say.
    let (mut harness, handle, world) = start_toy_bridge(config, true).await;
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
    let h = &harness;

    // The secret: missing, wrong.
    let (status, body) = provision(h, GET, "/provision/v1/portals", None, None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    let (status, body) = provision(h, GET, "/provision/v1/portals", Some("nope"), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );

    let answer = expect(h, (GET, "/provision/v1/info", None), 200, None).await;
    assert_eq!(answer["login_fields"], json!(["name", "password"]));
    assert_eq!(answer["protocol"]["id"], "toy");

    // Logging in: bad JSON, no user, a wrong password, then right.
    let login = "/provision/v1/login?user_id=%40alice%3Alocalhost";
    let good = r#"{"fields": {"name": "alice", "password": "secret"}}"#;
    let wrong = r#"{"fields": {"name": "alice", "password": "guess"}}"#;
    expect(h, (POST, login, Some("{not json")), 400, Some("M_BAD_JSON")).await;
    expect(
        h,
        (POST, "/provision/v1/login", Some(good)),
        400,
        Some("M_BAD_JSON"),
    )
    .await;
    expect(h, (POST, login, Some(wrong)), 403, Some("M_FORBIDDEN")).await;
    let answer = expect(h, (POST, login, Some(good)), 200, None).await;
    assert_eq!(
        (answer["id"].as_str(), answer["state"].as_str()),
        (Some("toynet"), Some("CONNECTED"))
    );
    // What a ghost says stays in Matrix, even with the router showing own events.
    let remote = RemoteMessage::new(
        "lobby".into(),
        "bob".into(),
        "r1".into(),
        MessageContent::text("from the toy side"),
    );
    handle.remote_message(remote).await.unwrap().unwrap();
    alice.send_text(&lobby, "from matrix").await;
    world
        .wait_for("alice's message", |a| matches!(a, Arrived::Message { .. }))
        .await;
    harness.app.idle().await;
    let arrived: Vec<Arrived> = world
        .arrived()
        .into_iter()
        .filter(|a| matches!(a, Arrived::Message { .. }))
        .collect();
    assert!(
        matches!(arrived.as_slice(), [Arrived::Message { body, .. }] if body == "from matrix"),
        "{arrived:?}"
    );
    let status = "/provision/v1/status?user_id=%40alice%3Alocalhost";
    let answer = expect(h, (GET, status, None), 200, None).await;
    assert_eq!(answer["logins"][0]["remote_name"], "alice");
    let answer = expect(h, (GET, "/provision/v1/portals", None), 200, None).await;
    assert_eq!(
        answer["portals"],
        json!([{"chat": "lobby", "room_id": lobby, "relay": true}])
    );

    // Linking: carol has no power in the room; alice has. Unlinking twice: no portal left.
    let link = json!({"room_id": garden, "chat": "garden"}).to_string();
    let carol_link = "/provision/v1/link?user_id=%40carol%3Alocalhost";
    expect(h, (POST, carol_link, Some(&link)), 403, Some("M_FORBIDDEN")).await;
    let alice_link = "/provision/v1/link?user_id=%40alice%3Alocalhost";
    let answer = expect(h, (POST, alice_link, Some(&link)), 200, None).await;
    assert_eq!(answer["chat"], "garden");
    let unlink = json!({"room_id": garden}).to_string();
    let alice_unlink = "/provision/v1/unlink?user_id=%40alice%3Alocalhost";
    let answer = expect(h, (POST, alice_unlink, Some(&unlink)), 200, None).await;
    assert_eq!(answer["chat"], "garden");
    expect(
        h,
        (POST, alice_unlink, Some(&unlink)),
        404,
        Some("M_NOT_FOUND"),
    )
    .await;

    // Logging out: an unknown login, then the real one.
    let logout = "/provision/v1/logout?user_id=%40alice%3Alocalhost";
    expect(
        h,
        (POST, logout, Some(r#"{"login_id": "nope"}"#)),
        404,
        Some("M_NOT_FOUND"),
    )
    .await;
    let answer = expect(
        h,
        (POST, logout, Some(r#"{"login_id": "toynet"}"#)),
        200,
        None,
    )
    .await;
    assert_eq!(answer, json!({}));

    // A user with no management room yet gets one, invited by the bot, with the news.
    let dave = h.synapse.register_user("dave", "password-1234").await;
    let login = "/provision/v1/login?user_id=%40dave%3Alocalhost";
    let body = r#"{"fields": {"name": "dave", "password": "secret"}}"#;
    let (status, answer) = provision(h, POST, login, Some(SECRET), Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let room = wait_for_invite(&dave, None).await;
    dave.join(&room).await;
    dave.wait_for_event(&room, WAIT, |e| {
        e["sender"] == BOT && e["content"]["body"] == "toynet: connected."
    })
    .await;
    harness.stop().await;
}
