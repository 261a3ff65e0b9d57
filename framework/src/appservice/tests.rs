//! An appservice whose bot lies outside its user namespace, the way matrix-appservice-irc,
//! heisenbridge and hookshot register theirs: Synapse accepts it, and so must we.

use std::sync::{Arc, Mutex};

use ruma::UserId;
use serde_json::json;
use trestle_registration::Registration;

use crate::{
    Appservice, Router,
    router::{Command, Room, State},
    testing::{MockHomeserver, deliver, text},
};

const REGISTRATION: &str = r##"
id: irc
url: "http://127.0.0.1:9999"
as_token: 4d2b0f6a1c9e8b7d5f3a2c1e0b9d8f7a6c5e4b3a2d1f0e9c8b7a6d5f4e3c2b1a
hs_token: 9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d
sender_localpart: appservice-irc
rate_limited: false
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: "@irc_.*"
  aliases:
    - exclusive: true
      regex: "#irc_.*"
"##;

#[tokio::test]
async fn a_bot_outside_its_user_namespace_answers_and_drops_its_own_echo() {
    type Count = Arc<Mutex<usize>>;
    async fn ping(
        _: Command,
        Room(room): Room,
        State(count): State<Count>,
        app: Appservice,
    ) -> crate::Result<()> {
        *count.lock().unwrap() += 1;
        app.bot().send_text(&room, "pong").await?;
        Ok(())
    }
    let registration = Registration::parse(REGISTRATION, "irc.yaml").unwrap();
    assert!(!registration.is_user_in_namespace("@appservice-irc:x"));
    let hs = MockHomeserver::start(json!({}), json!({})).await;
    let count = Count::default();
    let app = Appservice::builder(registration, hs.url.clone(), "x")
        .router(
            Router::new()
                .command("ping", ping)
                .with_state(count.clone()),
        )
        .build()
        .await
        .unwrap();

    let bot = UserId::parse("@appservice-irc:x").unwrap();
    assert_eq!(app.bot_user_id(), &bot);
    assert!(app.bot().is_bot());
    assert!(app.is_own_user(&bot));
    assert!(app.is_own_user(&UserId::parse("@irc_alice:x").unwrap()));
    assert!(!app.is_own_user(&UserId::parse("@alice:x").unwrap()));

    deliver(&app, vec![text("$1", "!r:x", "@alice:x", "!ping")]).await;
    assert_eq!(hs.bodies(), ["pong"]);
    assert_eq!(*count.lock().unwrap(), 1);

    // What the bot sends comes back in a later transaction: it is ours, so it is dropped, even
    // when it reads like a command.
    deliver(&app, vec![text("$2", "!r:x", "@appservice-irc:x", "!ping")]).await;
    assert_eq!(*count.lock().unwrap(), 1);
    assert!(hs.bodies().is_empty());
}

/// What a homeserver was asked: method, path and query of each request.
type Asked = Arc<Mutex<Vec<(String, String, String)>>>;

/// A homeserver that answers registration, joins, sends, state reads and pings, recording
/// each request.
async fn recording_homeserver() -> (String, Asked) {
    use axum::{
        Json,
        http::{Method, Uri},
    };
    let asked = Asked::default();
    let log = asked.clone();
    let handler = move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            let path = uri.path().to_owned();
            let query = uri.query().unwrap_or_default().to_owned();
            log.lock()
                .unwrap()
                .push((method.to_string(), path.clone(), query));
            Json(if path.ends_with("/register") {
                json!({"user_id": "@bot:x"})
            } else if path.ends_with("/join") {
                json!({"room_id": "!r:x"})
            } else if path.contains("/send/") {
                json!({"event_id": "$sent"})
            } else if path.ends_with("/ping") {
                json!({"duration_ms": 1})
            } else {
                json!({"creator": "@alice:x"})
            })
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(handler))
            .await
            .unwrap()
    });
    (url, asked)
}

#[tokio::test]
async fn a_bot_apart_from_the_sender_is_registered_and_asserted_on_every_request() {
    let registration = Registration::generate_with_bot("t", None, "bot", "t_", "x");
    let sender = format!("@{}:x", registration.sender_localpart);
    let (url, asked) = recording_homeserver().await;
    let app = Appservice::builder(registration.clone(), url.clone(), "x")
        .bot("bot")
        .build()
        .await
        .unwrap();
    let bot = UserId::parse("@bot:x").unwrap();
    assert_eq!(app.bot_user_id(), &bot);
    assert_eq!(app.sender_user_id().as_str(), sender);
    assert!(app.is_own_user(&bot));
    assert!(app.is_own_user(app.sender_user_id()));

    let room = ruma::RoomId::parse("!r:x").unwrap();
    app.bot().send_text(&room, "hi").await.unwrap();
    let _: Option<serde_json::Value> = app
        .state_content(&room, "m.room.create".into(), "")
        .await
        .unwrap();
    app.ping_homeserver().await.unwrap();
    let asked = asked.lock().unwrap().clone();
    let as_bot = "user_id=%40bot%3Ax";
    // Registered as the appservice itself (the bot does not exist yet), then everything the
    // bot does asserts its id, also a request made with no user named; the ping as the sender.
    let (register, rest) = asked.split_first().unwrap();
    assert!(register.1.ends_with("/register"), "{asked:?}");
    assert!(!register.2.contains("user_id"), "{asked:?}");
    let (ping, rest) = rest.split_last().unwrap();
    assert!(
        ping.1.ends_with("/ping") && !ping.2.contains("user_id"),
        "{asked:?}"
    );
    assert!(rest.iter().any(|(_, path, _)| path.contains("/send/")));
    assert!(
        rest.iter().all(|(_, _, query)| query.contains(as_bot)),
        "{asked:?}"
    );

    // A bot the homeserver would not let the appservice act as is refused.
    let refused = Appservice::builder(registration, url, "x")
        .bot("stranger")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("@stranger:x"), "{refused}");
    assert!(refused.contains("exclusive user namespace"), "{refused}");
}

/// The future that handles one event is moved whole into its box for every event
/// (`Upstream::handle`), so its size is a per-event cost: the rare paths (a membership tracked, a
/// power level read, an answer sent, `help`) are boxed where they are taken. Inline they made
/// it 8 kB; boxed, about 1.5 kB (in this test's profile).
#[tokio::test]
async fn the_future_that_handles_an_event_stays_small() {
    let registration = Registration::parse(REGISTRATION, "irc.yaml").unwrap();
    let hs = MockHomeserver::start(json!({}), json!({})).await;
    let app = Appservice::builder(registration, hs.url.clone(), "x")
        .build()
        .await
        .unwrap();
    let body = json!({"events": [text("$1", "!r:x", "@alice:x", "!ping")]});
    let item = serde_json::from_value::<crate::transaction::TransactionBody>(body)
        .unwrap()
        .into_items("t")
        .items
        .remove(0);
    let handling = app.handle(item, "k", 0);
    let size = std::mem::size_of_val(&handling);
    assert!(size < 3000, "{size} bytes");
}
