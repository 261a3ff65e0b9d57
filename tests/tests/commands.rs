//! Commands against a real Synapse: the generated `help`, usage checks, and a command that
//! needs a power level, checked against the room's current power levels (room version 12,
//! where the creator's power is infinite and not listed).

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::Method;
use serde_json::{Value, json};
use trestle::{
    Appservice, Registration, Router,
    router::{Command, CommandSpec, Room},
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::{UserClient, encode},
};

const BOT: &str = "@cmdbot:localhost";

fn registration() -> Registration {
    Registration::generate("commands", None, "cmdbot", "cmd_", "localhost")
}

async fn echo(cmd: Command, Room(room): Room, app: Appservice) -> trestle::Result<()> {
    app.bot()
        .send_text(&room, &format!("echo: {}", cmd.args))
        .await?;
    Ok(())
}

async fn announce(cmd: Command, Room(room): Room, app: Appservice) -> trestle::Result<()> {
    app.bot()
        .send_text(&room, &format!("announced: {}", cmd.args))
        .await?;
    Ok(())
}

fn router() -> Router {
    Router::new()
        .help(true)
        .command(
            CommandSpec::new("echo")
                .usage("<text>")
                .about("Repeats the text."),
            echo,
        )
        .command(
            CommandSpec::new("announce")
                .usage("<text>")
                .about("Announces the text to the room.")
                .min_power(50),
            announce,
        )
        .command("ping", |Room(room): Room, app: Appservice| async move {
            app.bot().send_text(&room, "pong").await.map(drop)
        })
}

/// Sends `command` as `user` and waits for the bot's reply to it.
async fn reply_to(user: &UserClient, room: &str, command: &str) -> Value {
    let event_id = user.send_text(room, command).await;
    user.wait_for_event(room, WAIT, |e| {
        e["sender"] == BOT && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
    })
    .await
}

/// Sends `command` as `user` and waits for the bot to say `body`.
async fn bot_says(user: &UserClient, room: &str, command: &str, body: &str) {
    user.send_text(room, command).await;
    user.wait_for_event(room, WAIT, |e| {
        e["sender"] == BOT && e["content"]["body"] == body
    })
    .await;
}

#[tokio::test]
async fn help_lists_commands_and_power_levels_gate_them() {
    let harness = Harness::start(registration(), router()).await;
    let (creator, room) = harness.user_in_room_with_bot("ada").await;
    let member = harness.synapse.register_user("bert", "password-1234").await;
    creator.invite(&room, &member.user_id).await;
    member.join(&room).await;
    let create = creator
        .call_ok(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.create/",
                encode(&room)
            ),
            None,
        )
        .await;
    assert_eq!(create["room_version"], "12", "the test is about v12 rules");

    // Help for a normal member: usage lines and descriptions, but not what needs power 50.
    let help = reply_to(&member, &room, "!help").await;
    assert_eq!(help["content"]["msgtype"], "m.notice");
    assert_eq!(
        help["content"]["body"],
        "Commands:\n\
         !echo <text> — Repeats the text.\n\
         !ping\n\
         !help [command] — Lists the commands, or shows one.",
        "{help}"
    );
    assert_eq!(help["content"]["format"], "org.matrix.custom.html");
    let html = help["content"]["formatted_body"].as_str().unwrap();
    assert!(
        html.contains("<li><code>!echo &lt;text&gt;</code> — Repeats the text.</li>"),
        "{html}"
    );
    // The creator has infinite power in room version 12, and sees everything.
    let help = reply_to(&creator, &room, "!help").await;
    assert!(
        help["content"]["body"]
            .as_str()
            .unwrap()
            .contains("!announce <text> — Announces the text to the room. (power level 50)"),
        "{help}"
    );
    // One command, asked about by name, is shown even to whom may not use it.
    let help = reply_to(&member, &room, "!help announce").await;
    assert_eq!(
        help["content"]["body"],
        "Commands:\n!announce <text> — Announces the text to the room. (power level 50)"
    );

    // Plain commands and usage checks.
    bot_says(&member, &room, "!ping", "pong").await;
    bot_says(&member, &room, "!echo hi there", "echo: hi there").await;
    let usage = reply_to(&member, &room, "!echo").await;
    assert_eq!(usage["content"]["body"], "Usage: !echo <text>");

    // A member below 50 is refused; the handler does not run.
    let refusal = reply_to(&member, &room, "!announce too early").await;
    assert_eq!(
        refusal["content"]["body"],
        "!announce needs power level 50 in this room; yours is 0."
    );
    // The creator may, without being listed in the power levels.
    bot_says(
        &creator,
        &room,
        "!announce by the creator",
        "announced: by the creator",
    )
    .await;

    // The creator raises the member to 50: the next use reads the new power levels and runs.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        encode(&room)
    );
    let mut levels = creator.call_ok(Method::GET, &path, None).await;
    assert!(
        levels["users"].get(&creator.user_id).is_none(),
        "v12 creators are not listed: {levels}"
    );
    levels["users"][&member.user_id] = json!(50);
    creator.call_ok(Method::PUT, &path, Some(&levels)).await;
    bot_says(&member, &room, "!announce at last", "announced: at last").await;

    // And back down: refused again, at once.
    levels["users"][&member.user_id] = json!(10);
    creator.call_ok(Method::PUT, &path, Some(&levels)).await;
    let refusal = reply_to(&member, &room, "!announce again").await;
    assert_eq!(
        refusal["content"]["body"],
        "!announce needs power level 50 in this room; yours is 10."
    );

    // Nothing was announced that should not have been.
    let announced: Vec<String> = member
        .messages(&room)
        .await
        .iter()
        .filter(|e| e["sender"] == BOT)
        .filter_map(|e| e["content"]["body"].as_str())
        .filter(|b| b.starts_with("announced:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        announced,
        ["announced: by the creator", "announced: at last"]
    );
}
