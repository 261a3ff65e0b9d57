use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::events::room::{member::RoomMemberEventContent, message::RoomMessageEventContent};
use serde_json::json;
use trestle_registration::Registration;

use super::*;
use crate::{Appservice, transaction::TransactionBody};

type Log = Arc<Mutex<Vec<String>>>;

async fn app(router: Router) -> Appservice {
    let registration = Registration::generate("test", None, "bot", "t_", "x");
    Appservice::builder(registration, "http://127.0.0.1:9", "x")
        .router(router)
        .build()
        .await
        .unwrap()
}

fn text(id: &str, room: &str, sender: &str, body: &str) -> serde_json::Value {
    json!({"type": "m.room.message", "room_id": room, "sender": sender, "event_id": id,
           "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body}})
}

async fn deliver(app: &Appservice, events: Vec<serde_json::Value>) {
    static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let txn = TXN
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let body: TransactionBody = serde_json::from_value(json!({ "events": events })).unwrap();
    assert!(app.receive(&txn, body).await.unwrap());
    app.idle().await;
}

async fn log_message(ev: super::Event<RoomMessageEventContent>, State(log): State<Log>) {
    log.lock().unwrap().push(format!("msg {}", ev.event_id));
}

#[tokio::test]
async fn commands_route_by_name_and_carry_args() {
    async fn echo(cmd: Command, State(log): State<Log>) {
        log.lock().unwrap().push(format!("echo:{}", cmd.args));
    }
    async fn any_command(cmd: Command, State(log): State<Log>) {
        log.lock().unwrap().push(format!("any:{}", cmd.name));
    }
    let log = Log::default();
    let app = app(Router::new()
        .command("echo", echo)
        .on(any_command)
        .with_state(log.clone()))
    .await;
    deliver(
        &app,
        vec![
            text("$1", "!r:x", "@u:x", "!echo hello world"),
            text("$2", "!r:x", "@u:x", "!other x"),
            text("$3", "!r:x", "@u:x", "not a command"),
        ],
    )
    .await;
    assert_eq!(
        *log.lock().unwrap(),
        ["echo:hello world", "any:echo", "any:other"]
    );
}

#[tokio::test]
async fn typed_events_reach_only_matching_handlers() {
    async fn member(ev: super::Event<RoomMemberEventContent>, State(log): State<Log>) {
        log.lock()
            .unwrap()
            .push(format!("member {}", ev.state_key.unwrap()));
    }
    async fn message(ev: super::Event<RoomMessageEventContent>, State(log): State<Log>) {
        log.lock().unwrap().push(format!("msg {}", ev.event_id));
    }
    let log = Log::default();
    let app = app(Router::new().on(member).on(message).with_state(log.clone())).await;
    deliver(
        &app,
        vec![
            text("$1", "!r:x", "@u:x", "hi"),
            json!({"type": "m.room.member", "room_id": "!r:x", "sender": "@u:x", "event_id": "$2",
               "state_key": "@u:x", "origin_server_ts": 1, "content": {"membership": "join"}}),
            // Right type, wrong content: rejected and logged, not a crash.
            json!({"type": "m.room.member", "room_id": "!r:x", "sender": "@u:x", "event_id": "$3",
               "state_key": "@u:x", "origin_server_ts": 1, "content": {"membership": 5}}),
        ],
    )
    .await;
    assert_eq!(*log.lock().unwrap(), ["msg $1", "member @u:x"]);
}

#[tokio::test]
async fn errors_and_panics_are_contained() {
    async fn fails() -> Result<(), String> {
        Err("boom".into())
    }
    async fn panics(cmd: Command) {
        if cmd.name == "panic" {
            panic!("handler bug");
        }
    }
    let log = Log::default();
    let app = app(Router::new()
        .on(fails)
        .on(panics)
        .on(log_message)
        .with_state(log.clone()))
    .await;
    deliver(
        &app,
        vec![
            text("$1", "!r:x", "@u:x", "!panic"),
            text("$2", "!r:x", "@u:x", "ok"),
        ],
    )
    .await;
    assert_eq!(*log.lock().unwrap(), ["msg $1", "msg $2"]);
}

#[tokio::test]
async fn events_are_handled_in_order_per_room_and_rooms_concurrently() {
    async fn slow(
        Room(room): Room,
        ev: super::Event<RoomMessageEventContent>,
        State(log): State<Log>,
    ) {
        log.lock()
            .unwrap()
            .push(format!("start {room} {}", ev.event_id));
        if room.as_str() == "!slow:x" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        log.lock()
            .unwrap()
            .push(format!("end {room} {}", ev.event_id));
    }
    let log = Log::default();
    let app = app(Router::new().on(slow).with_state(log.clone())).await;
    deliver(
        &app,
        vec![
            text("$1", "!slow:x", "@u:x", "a"),
            text("$2", "!slow:x", "@u:x", "b"),
            text("$3", "!fast:x", "@u:x", "c"),
        ],
    )
    .await;
    let log = log.lock().unwrap().clone();
    let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
    // In order within the slow room, never overlapping...
    assert!(pos("end !slow:x $1") < pos("start !slow:x $2"));
    // ...while the other room does not wait behind it.
    assert!(pos("end !fast:x $3") < pos("end !slow:x $1"));
}

#[tokio::test]
async fn own_users_are_not_echoed_back_unless_asked() {
    let log = Log::default();
    let quiet = app(Router::new().on(log_message).with_state(log.clone())).await;
    deliver(
        &quiet,
        vec![
            text("$bot", "!r:x", "@bot:x", "hi"),
            text("$ghost", "!r:x", "@t_ghost:x", "hi"),
            text("$user", "!r:x", "@u:x", "hi"),
        ],
    )
    .await;
    assert_eq!(*log.lock().unwrap(), ["msg $user"]);

    let log = Log::default();
    let chatty = app(Router::new()
        .own_events(true)
        .on(log_message)
        .with_state(log.clone()))
    .await;
    deliver(&chatty, vec![text("$bot", "!r:x", "@bot:x", "hi")]).await;
    assert_eq!(*log.lock().unwrap(), ["msg $bot"]);
}

#[tokio::test]
async fn custom_event_types_route_by_type_as_raw_json() {
    async fn post(raw: RawEvent, State(log): State<Log>) {
        let content: serde_json::Value = raw.content().unwrap();
        log.lock()
            .unwrap()
            .push(format!("{} {}", raw.event_type, content["text"]));
    }
    let log = Log::default();
    let app = app(Router::new()
        .on_type("org.example.post", post)
        .with_state(log.clone()))
    .await;
    deliver(&app, vec![
        json!({"type": "org.example.post", "room_id": "!r:x", "sender": "@u:x", "event_id": "$1",
               "origin_server_ts": 1, "content": {"text": "hello"}}),
        text("$2", "!r:x", "@u:x", "ignored"),
    ])
    .await;
    assert_eq!(*log.lock().unwrap(), ["org.example.post \"hello\""]);
}

#[tokio::test]
async fn optional_extractors_never_reject() {
    async fn maybe(cmd: Option<Command>, State(log): State<Log>) {
        log.lock()
            .unwrap()
            .push(format!("{:?}", cmd.map(|c| c.name)));
    }
    let log = Log::default();
    let app = app(Router::new().on(maybe).with_state(log.clone())).await;
    deliver(
        &app,
        vec![
            text("$1", "!r:x", "@u:x", "!a"),
            text("$2", "!r:x", "@u:x", "b"),
        ],
    )
    .await;
    assert_eq!(*log.lock().unwrap(), ["Some(\"a\")", "None"]);
}

#[tokio::test]
async fn state_parts_come_from_ref() {
    #[derive(Clone)]
    struct AppState {
        name: Arc<str>,
        log: Log,
    }
    impl FromRef<AppState> for Log {
        fn from_ref(s: &AppState) -> Log {
            s.log.clone()
        }
    }
    async fn handler(State(log): State<Log>, State(state): State<AppState>, _: Command) {
        log.lock().unwrap().push(state.name.to_string());
    }
    let log = Log::default();
    let state = AppState {
        name: Arc::from("named"),
        log: log.clone(),
    };
    let app = app(Router::new().on(handler).with_state(state)).await;
    deliver(&app, vec![text("$1", "!r:x", "@u:x", "!go")]).await;
    assert_eq!(*log.lock().unwrap(), ["named"]);
}
