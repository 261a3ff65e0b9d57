//! Every error case of the Application Service API, through the router with no socket.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use trestle_registration::Registration;

use crate::{
    Appservice, Router,
    router::{RawEvent, State},
};

type Seen = Arc<Mutex<Vec<String>>>;

async fn record(raw: RawEvent, State(seen): State<Seen>) {
    let id = raw.deserialize::<Value>().unwrap()["event_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    seen.lock().unwrap().push(id);
}

async fn app() -> (Appservice, Seen) {
    let registration = Registration::generate("test", None, "bot", "t_", "x");
    let seen = Seen::default();
    let app = Appservice::builder(registration, "http://127.0.0.1:9", "x")
        .router(Router::new().on(record).with_state(seen.clone()))
        .body_limit(64 * 1024)
        .build()
        .await
        .unwrap();
    (app, seen)
}

async fn call(app: &Appservice, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.http_router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn put_txn(id: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::put(format!("/_matrix/app/v1/transactions/{id}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(body.into()).unwrap()
}

fn message(id: &str) -> Value {
    json!({"type": "m.room.message", "room_id": "!r:x", "sender": "@u:x", "event_id": id,
           "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "hi"}})
}

#[tokio::test]
async fn missing_token_is_401() {
    let (app, _) = app().await;
    let (status, body) = call(&app, put_txn("1", None, "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
}

#[tokio::test]
async fn wrong_token_is_403() {
    let (app, _) = app().await;
    let (status, body) = call(&app, put_txn("1", Some("nope"), "{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // The as_token is not the hs_token.
    let as_token = app.registration().as_token.clone();
    let (status, _) = call(&app, put_txn("1", Some(&as_token), "{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn legacy_query_token_works_and_must_match_the_header() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    let request = Request::post(format!("/_matrix/app/v1/ping?access_token={token}"))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(&app, request).await.0, StatusCode::OK);

    let request = Request::post("/_matrix/app/v1/ping?access_token=other")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = call(&app, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    let request = Request::post(format!("/_matrix/app/v1/ping?access_token={token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(&app, request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_route_is_404_unrecognized_even_without_a_token() {
    let (app, _) = app().await;
    let request = Request::get("/_matrix/app/v1/nope")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn wrong_method_is_405_unrecognized() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    let request = Request::get("/_matrix/app/v1/transactions/1")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn body_that_is_not_json_is_400_not_json() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    let (status, body) = call(&app, put_txn("1", Some(&token), "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_NOT_JSON");
    let (status, body) = call(&app, put_txn("2", Some(&token), r#"{"events": 5}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_BAD_JSON");
}

#[tokio::test]
async fn body_too_large_is_413() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    let big = format!(r#"{{"events": [], "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let (status, body) = call(&app, put_txn("1", Some(&token), big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errcode"], "M_TOO_LARGE");
}

#[tokio::test]
async fn a_transaction_is_handled_once_and_bad_events_are_skipped() {
    let (app, seen) = app().await;
    let token = app.registration().hs_token.clone();
    let body = json!({"events": [message("$1"), {"type": "broken"}, message("$2")]}).to_string();
    let (status, answer) = call(&app, put_txn("7", Some(&token), body.clone())).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    app.idle().await;
    assert_eq!(*seen.lock().unwrap(), ["$1", "$2"]);

    // Synapse resends with the same id after a failure: answered, not handled again.
    let (status, _) = call(&app, put_txn("7", Some(&token), body)).await;
    assert_eq!(status, StatusCode::OK);
    app.idle().await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn ping_answers_empty_object() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    let request = Request::post("/_matrix/app/v1/ping")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"transaction_id": "abc"}"#))
        .unwrap();
    assert_eq!(call(&app, request).await, (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn queries_without_a_plugin_answer_are_404_not_found() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    for path in [
        "/_matrix/app/v1/users/%40t_someone%3Ax",
        "/_matrix/app/v1/rooms/%23t_room%3Ax",
        "/_matrix/app/v1/thirdparty/protocol/irc",
        "/_matrix/app/v1/thirdparty/user/irc?nick=bob",
        "/_matrix/app/v1/thirdparty/location/irc?channel=x",
        "/_matrix/app/v1/thirdparty/user?userid=%40t_a%3Ax",
        "/_matrix/app/v1/thirdparty/location?alias=%23t_a%3Ax",
    ] {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["errcode"], "M_NOT_FOUND", "{path}");
    }
}

#[tokio::test]
async fn user_query_with_a_bad_user_id_is_400() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    let request = Request::get("/_matrix/app/v1/users/not-a-user-id")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}

#[tokio::test]
async fn path_parameters_that_do_not_decode_are_400_invalid_param() {
    let (app, seen) = app().await;
    let token = app.registration().hs_token.clone();
    // %FF decodes to a byte that is no UTF-8: axum's own rejection would be plain text.
    for (method, path) in [
        ("PUT", "/_matrix/app/v1/transactions/%FF"),
        ("PUT", "/_matrix/app/v1/transactions/a%C3"),
        ("GET", "/_matrix/app/v1/users/%FF"),
        ("GET", "/_matrix/app/v1/rooms/%FF"),
        ("GET", "/_matrix/app/v1/thirdparty/protocol/%FF"),
        ("GET", "/_matrix/app/v1/thirdparty/user/%FF"),
        ("GET", "/_matrix/app/v1/thirdparty/location/%FF"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(json!({"events": [message("$1")]}).to_string()))
            .unwrap();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(
            body["errcode"], "M_INVALID_PARAM",
            "{method} {path}: {body}"
        );
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    app.idle().await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused transaction is not handled"
    );
}

#[tokio::test]
async fn a_path_with_a_parameter_too_many_or_missing_is_404_unrecognized() {
    let (app, _) = app().await;
    let token = app.registration().hs_token.clone();
    for (method, path) in [
        ("PUT", "/_matrix/app/v1/transactions/1/2"),
        ("PUT", "/_matrix/app/v1/transactions/"),
        ("GET", "/_matrix/app/v1/users/"),
        ("GET", "/_matrix/app/v1/rooms/a/b"),
        ("GET", "/_matrix/app/v1/thirdparty/protocol/"),
        ("POST", "/_matrix/app/v1/ping/%FF"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from("{}"))
            .unwrap();
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{method} {path}: {body}");
    }
}
