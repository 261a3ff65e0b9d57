//! The live stream (`GET /api/live`) as any client reads it, against a real Synapse: a token
//! is needed, a user hears only the timeline rooms they are in, nothing is lost between two
//! streams, and the number of streams a
//! user holds is bounded, a closed one's place freed, and open streams hold up no shutdown for
//! long. (The page reading it is in `people.rs`.)

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/api.rs"]
mod api;

use std::time::{Duration, Instant};

use api::Api;
use reqwest::StatusCode;
use serde_json::Value;
use trestle_tests::appservice::Harness;
use trestle_timeline::{PLUGIN, Settings};

/// Reads `response` until an event named `kind` arrives; answers its data and its id.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    kind: &str,
) -> (Value, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(str::trim);
            if name == Some(kind) {
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                };
                let data = field("data:").unwrap_or_else(|| "{}".to_owned());
                return (serde_json::from_str(&data).unwrap(), field("id:"));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` event within 30 s; read: {buffer}"))
            .unwrap()
            .expect("the stream ended");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn live_streams_are_filtered_and_bounded() {
    let registration = PLUGIN.generate_registration(None, "localhost");
    let mut harness = Harness::start(
        registration,
        trestle_timeline::router(Settings::default()).unwrap(),
    )
    .await;
    let url = harness.url.clone();
    let url = url.as_str();
    // The API takes any access token of the user's: these are the ones registering gave.
    let bob = harness.synapse.register_user("bob", "password-bob").await;
    let bob = Api::new(url, Some(&bob.access_token));
    let carol = harness
        .synapse
        .register_user("carol", "password-carol")
        .await
        .access_token;
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{url}/api/live"))
            .bearer_auth(&carol)
            .send()
    };
    let response = http.get(format!("{url}/api/live")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let mut stream = open().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buffer = String::new();
    next_event(&mut stream, &mut buffer, "ready").await;
    // Carol follows nobody: Bob's post is not hers to see live; her own is.
    bob.post("Not in Carol's feed").await;
    let carols = Api::new(url, Some(&carol)).post("Carol's first").await;
    let (event, seen) = next_event(&mut stream, &mut buffer, "post").await;
    assert_eq!(event["event_id"], carols["event_id"], "{event}");

    // Eight streams a user; the ninth is refused until one goes.
    let mut streams = vec![stream];
    for _ in 1..8 {
        let response = open().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["errcode"], "M_LIMIT_EXCEEDED", "{error}");

    // The first stream goes; Carol posts meanwhile. The server notices the closed connection
    // when it next writes (the change, or the keep-alive within 15 s) and frees the place;
    // the stream that takes it, told the last change seen, starts with what came meanwhile.
    drop(streams.remove(0));
    let away = Api::new(url, Some(&carol)).post("While away").await;
    let reopen = |seen: String| {
        let http = &http;
        let carol = &carol;
        async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let response = http
                    .get(format!("{url}/api/live"))
                    .bearer_auth(carol)
                    .header("last-event-id", &seen)
                    .send()
                    .await
                    .unwrap();
                if response.status() == StatusCode::OK {
                    return response;
                }
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's place was never freed"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut stream = reopen(seen.unwrap()).await;
    let (event, _) = next_event(&mut stream, &mut String::new(), "post").await;
    assert_eq!(event["event_id"], away["event_id"], "{event}");
    streams.push(stream);
    // Told of a change the server never gave (it restarted since), a stream starts with
    // `resync`.
    drop(streams.remove(0));
    let mut lost = reopen("999999".to_owned()).await;
    next_event(&mut lost, &mut String::new(), "resync").await;
    streams.push(lost);

    // Stopping the appservice ends open streams at once (a stream lasts 10 min otherwise): the
    // framework says it is stopping before the graceful shutdown waits for connections.
    tokio::time::timeout(Duration::from_secs(30), harness.stop())
        .await
        .expect("the appservice did not stop within 30 s with live streams open");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match streams[0].chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a stream stayed open after the stop");
}
