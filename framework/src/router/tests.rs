use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::events::room::{member::RoomMemberEventContent, message::RoomMessageEventContent};
use serde_json::json;
use trestle_registration::Registration;

use super::*;
use crate::{
    Appservice,
    testing::{MockHomeserver, deliver, text},
};

type Log = Arc<Mutex<Vec<String>>>;

async fn app(router: Router) -> Appservice {
    let registration = Registration::generate("test", None, "bot", "t_", "x");
    Appservice::builder(registration, "http://127.0.0.1:9", "x")
        .router(router)
        .build()
        .await
        .unwrap()
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

#[test]
fn usage_lines_and_required_arguments() {
    let plain: CommandSpec = "ping".into();
    assert_eq!(plain, CommandSpec::new("ping"));
    assert_eq!(plain.usage_line("!"), "!ping");
    assert_eq!(plain.required_args(), 0);

    let spec = CommandSpec::new("echo-as").usage("<name> <text...>");
    assert_eq!(spec.usage_line("bot: "), "bot: echo-as <name> <text...>");
    assert_eq!(spec.required_args(), 2);
    assert_eq!(
        CommandSpec::new("roll")
            .usage("[sides] [count]")
            .required_args(),
        0
    );
    assert_eq!(
        CommandSpec::new("kick")
            .usage("<user> [reason]")
            .required_args(),
        1
    );
    // Usage words without brackets are shown, never enforced.
    assert_eq!(CommandSpec::new("x").usage("NAME text").required_args(), 0);
    assert_eq!(CommandSpec::new("x").usage("  ").usage_line("!"), "!x");
}

fn specs() -> Vec<CommandSpec> {
    vec![
        CommandSpec::new("echo")
            .usage("<text>")
            .about("Repeats <text> & more."),
        CommandSpec::new("kick")
            .usage("<user> [reason]")
            .about("Removes a user.")
            .min_power(50),
        CommandSpec::new("ping"),
        help::help_spec(),
    ]
}

#[test]
fn help_lists_usage_and_descriptions_as_text_and_html() {
    let specs = specs();
    let refs: Vec<&CommandSpec> = specs.iter().collect();
    let text = help::render(&refs, "!", None);
    assert_eq!(
        text.plain,
        "Commands:\n\
         !echo <text> — Repeats <text> & more.\n\
         !kick <user> [reason] — Removes a user. (power level 50)\n\
         !ping\n\
         !help [command] — Lists the commands, or shows one."
    );
    assert_eq!(
        text.html,
        "<p>Commands:</p>\n<ul>\n\
         <li><code>!echo &lt;text&gt;</code> — Repeats &lt;text&gt; &amp; more.</li>\n\
         <li><code>!kick &lt;user&gt; [reason]</code> — Removes a user. (power level 50)</li>\n\
         <li><code>!ping</code></li>\n\
         <li><code>!help [command]</code> — Lists the commands, or shows one.</li>\n</ul>"
    );
}

#[test]
fn help_leaves_out_what_the_sender_may_not_use() {
    use ruma::{events::room::power_levels::UserPowerLevel, int};
    let specs = specs();
    let refs: Vec<&CommandSpec> = specs.iter().collect();
    let user = help::render(&refs, "!", Some(UserPowerLevel::Int(int!(0))));
    assert!(!user.plain.contains("kick"), "{}", user.plain);
    assert!(user.plain.contains("!echo <text>"));
    let moderator = help::render(&refs, "!", Some(UserPowerLevel::Int(int!(50))));
    assert!(moderator.plain.contains("!kick"));
    let creator = help::render(&refs, "!", Some(UserPowerLevel::Infinite));
    assert_eq!(creator, help::render(&refs, "!", None));
    assert_eq!(help::render(&[], "!", None).plain, "No commands.");
}

#[test]
fn router_lists_its_commands_once_with_help_last() {
    async fn noop() {}
    let router: Router = Router::new()
        .command(CommandSpec::new("echo").about("first"), noop)
        .command("echo", noop)
        .on(noop)
        .command("ping", noop);
    let names = |r: &Router| {
        r.commands()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&router), ["echo", "ping"]);
    assert_eq!(router.commands()[0].about.as_deref(), Some("first"));
    let router = router.help(true);
    assert_eq!(names(&router), ["echo", "ping", "help"]);
    // A help command of the plugin's own replaces the built-in one.
    let router = router.command(CommandSpec::new("help").about("mine"), noop);
    assert_eq!(names(&router), ["echo", "ping", "help"]);
    assert_eq!(router.commands()[2].about.as_deref(), Some("mine"));
}

#[test]
fn power_levels_follow_the_room_version() {
    use ruma::{events::room::power_levels::UserPowerLevel, int, user_id};
    let v12 = r#"{"type": "m.room.create", "sender": "@creator:x", "state_key": "",
        "content": {"room_version": "12", "additional_creators": ["@co:x"]}}"#;
    let levels = help::room_power_levels(
        v12,
        Some(r#"{"users": {"@mod:x": 50}, "users_default": 10}"#),
    )
    .unwrap();
    assert_eq!(
        levels.for_user(user_id!("@creator:x")),
        UserPowerLevel::Infinite
    );
    assert_eq!(levels.for_user(user_id!("@co:x")), UserPowerLevel::Infinite);
    assert_eq!(
        levels.for_user(user_id!("@mod:x")),
        UserPowerLevel::Int(int!(50))
    );
    assert_eq!(
        levels.for_user(user_id!("@u:x")),
        UserPowerLevel::Int(int!(10))
    );

    // Before version 12 the creator has only what the power levels give (100 without them),
    // and `additional_creators` means nothing.
    let v11 = r#"{"type": "m.room.create", "sender": "@creator:x", "state_key": "",
        "content": {"room_version": "11", "additional_creators": ["@co:x"]}}"#;
    let levels = help::room_power_levels(v11, Some(r#"{"users": {"@creator:x": 75}}"#)).unwrap();
    assert_eq!(
        levels.for_user(user_id!("@creator:x")),
        UserPowerLevel::Int(int!(75))
    );
    assert_eq!(
        levels.for_user(user_id!("@co:x")),
        UserPowerLevel::Int(int!(0))
    );
    // Version 10 names the creator in the content.
    let v10 = r#"{"type": "m.room.create", "sender": "@sender:x", "state_key": "",
        "content": {"room_version": "10", "creator": "@creator:x"}}"#;
    let levels = help::room_power_levels(v10, None).unwrap();
    assert_eq!(
        levels.for_user(user_id!("@creator:x")),
        UserPowerLevel::Int(int!(100))
    );
    assert_eq!(
        levels.for_user(user_id!("@sender:x")),
        UserPowerLevel::Int(int!(0))
    );
}

#[tokio::test]
async fn commands_check_power_and_arguments_and_help_lists_them() {
    async fn kick(cmd: Command, Sender(sender): Sender, State(log): State<Log>) {
        log.lock()
            .unwrap()
            .push(format!("kick {} by {sender}", cmd.args));
    }
    async fn echo(cmd: Command, State(log): State<Log>) {
        log.lock().unwrap().push(format!("echo {}", cmd.args));
    }
    let hs = MockHomeserver::start(
        json!({"type": "m.room.create", "sender": "@creator:x", "state_key": "",
               "event_id": "$create", "room_id": "!r:x", "origin_server_ts": 1,
               "content": {"room_version": "12"}}),
        json!({"users": {"@mod:x": 50}}),
    )
    .await;
    let log = Log::default();
    let router = Router::new()
        .help(true)
        .command(
            CommandSpec::new("echo")
                .usage("<text>")
                .about("Repeats the text."),
            echo,
        )
        .command(
            CommandSpec::new("kick")
                .usage("<user>")
                .about("Kicks.")
                .min_power(50),
            kick,
        )
        .with_state(log.clone());
    let registration = Registration::generate("test", None, "bot", "t_", "x");
    let app = Appservice::builder(registration, hs.url.clone(), "x")
        .router(router)
        .build()
        .await
        .unwrap();

    deliver(&app, vec![text("$1", "!r:x", "@u:x", "!kick @v:x")]).await;
    assert_eq!(
        hs.bodies(),
        ["!kick needs power level 50 in this room; yours is 0."]
    );
    deliver(&app, vec![text("$2", "!r:x", "@mod:x", "!kick @v:x")]).await;
    deliver(&app, vec![text("$3", "!r:x", "@creator:x", "!kick")]).await;
    deliver(&app, vec![text("$4", "!r:x", "@u:x", "!echo")]).await;
    deliver(&app, vec![text("$5", "!r:x", "@u:x", "!echo hi")]).await;
    assert_eq!(hs.bodies(), ["Usage: !kick <user>", "Usage: !echo <text>"]);
    assert_eq!(*log.lock().unwrap(), ["kick @v:x by @mod:x", "echo hi"]);
    // Read per use, never cached: three uses of !kick, three reads. !echo needs none.
    assert_eq!(hs.state_reads.load(std::sync::atomic::Ordering::Relaxed), 3);

    deliver(&app, vec![text("$6", "!r:x", "@u:x", "!help")]).await;
    deliver(&app, vec![text("$7", "!r:x", "@creator:x", "!help")]).await;
    deliver(&app, vec![text("$8", "!r:x", "@u:x", "!help kick")]).await;
    deliver(&app, vec![text("$9", "!r:x", "@u:x", "!help nope")]).await;
    let bodies = hs.bodies();
    assert_eq!(
        bodies[0],
        "Commands:\n!echo <text> — Repeats the text.\n\
         !help [command] — Lists the commands, or shows one."
    );
    assert!(bodies[1].contains("!kick <user> — Kicks. (power level 50)"));
    assert_eq!(
        bodies[2],
        "Commands:\n!kick <user> — Kicks. (power level 50)"
    );
    assert_eq!(bodies[3], "There is no command !nope. Try !help.");
}
