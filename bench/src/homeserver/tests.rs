use std::time::Instant;

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

fn homeserver() -> (Homeserver, Arc<Session>) {
    let hs = Homeserver::default();
    let session = Arc::new(Session::new("as", "@benchbot:localhost", "localhost"));
    hs.start_session(session.clone());
    (hs, session)
}

async fn call(hs: &Homeserver, method: &str, uri: &str, body: &str) -> (u16, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer as")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = hs.router().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_bot_sends_and_the_echo_is_timed() {
    let (hs, session) = homeserver();
    let arrivals = Arc::new(Arrivals::new(2, Instant::now()));
    session.expect(arrivals.clone());
    let (status, body) = call(
        &hs,
        "PUT",
        "/_matrix/client/v3/rooms/%21r0%3Alocalhost/send/m.room.message/t1",
        r#"{"msgtype":"m.text","body":"echo: 1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["event_id"].as_str().unwrap().starts_with('$'));
    assert_eq!(arrivals.arrived(), 1);
    assert!(arrivals.at(1).is_some());
}

#[tokio::test]
async fn a_ghost_registers_joins_then_sends() {
    let (hs, session) = homeserver();
    let send = "/_matrix/client/v3/rooms/!r0:localhost/send/m.room.message/t?user_id=%40bench_u1%3Alocalhost";
    let message = r#"{"msgtype":"m.text","body":"echo: 0"}"#;
    assert_eq!(call(&hs, "PUT", send, message).await.0, 403);
    let register =
        r#"{"type":"m.login.application_service","username":"bench_u1","inhibit_login":true}"#;
    let (status, body) = call(&hs, "POST", "/_matrix/client/v3/register", register).await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (200, Some("@bench_u1:localhost"))
    );
    assert_eq!(
        call(&hs, "POST", "/_matrix/client/v3/register", register)
            .await
            .0,
        400
    );
    assert_eq!(call(&hs, "PUT", send, message).await.0, 403);
    let join = "/_matrix/client/v3/join/%21r0%3Alocalhost?user_id=%40bench_u1%3Alocalhost";
    let (status, body) = call(&hs, "POST", join, "{}").await;
    assert_eq!(
        (status, body["room_id"].as_str()),
        (200, Some("!r0:localhost"))
    );
    assert_eq!(call(&hs, "PUT", send, message).await.0, 200);
    assert_eq!(session.registered(), 1);
    assert_eq!(session.counters.refused.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let (hs, _) = homeserver();
    let request = Request::builder()
        .method("POST")
        .uri("/_matrix/client/v1/appservice/bench/ping")
        .header("authorization", "Bearer nope")
        .body(Body::from("{}"))
        .unwrap();
    let response = hs.router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    let (status, body) = call(
        &hs,
        "POST",
        "/_matrix/client/v1/appservice/bench/ping",
        "{}",
    )
    .await;
    assert_eq!((status, body["duration_ms"].as_u64()), (200, Some(1)));
}
