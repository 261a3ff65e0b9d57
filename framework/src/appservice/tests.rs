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
