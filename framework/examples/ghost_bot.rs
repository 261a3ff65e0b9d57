//! A bot that speaks through ghosts: `!as <name> <text>` says the text as the user
//! `@_example_<name>:<server>`. Ghosts ("puppets") are the users of the appservice's
//! exclusive namespace, here every localpart starting `_example_`: the appservice creates
//! them when first needed and acts as them with its own token, no password involved.
//! Run it with `cargo run -p trestle --example ghost_bot` (see `README.md` here).

use trestle::{
    Appservice, Router, Standalone,
    router::{Command, CommandSpec, Reply, Room},
};

/// The ghosts' localpart prefix; the registration claims `@_example_.*` for this appservice,
/// so no one else can register such a user and the homeserver asks us about them.
const GHOST_PREFIX: &str = "_example_";

async fn speak_as(
    cmd: Command,
    Room(room): Room,
    app: Appservice,
    reply: Reply,
) -> trestle::Result<()> {
    let argv = cmd.argv();
    let [name, words @ ..] = argv.as_slice() else {
        return Ok(()); // never: the usage requires a <name>
    };
    // A localpart may hold only a-z, 0-9 and `._=-/`: refuse other names rather than
    // mangle them into a user the sender did not mean.
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        reply
            .text(&format!("{name:?} cannot be a user name"))
            .await?;
        return Ok(());
    }
    let ghost = app.ghost(&format!("{GHOST_PREFIX}{}", name.to_lowercase()))?;
    // Registering the ghost, its display name and its join happen once and are remembered in
    // the store, so doing them before every message costs nothing after the first time. In
    // an invite-only room the bot invites the ghost first.
    ghost.set_display_name(name).await?;
    ghost.ensure_joined(&room).await?;
    ghost.send_text(&room, &words.join(" ")).await?;
    Ok(())
}

fn router() -> Router {
    Router::new()
        .accept_invites(true)
        .help(true)
        .command(
            CommandSpec::new("as")
                .usage("<name> <text>")
                .about("Says the text as a ghost called <name>."),
            speak_as,
        )
        // Someone invites or messages `@_example_bob` before it has spoken: the homeserver
        // asks whether the user exists, and a yes has it registered on the spot.
        .on_user_query(|_, _| async { Ok(true) })
}

#[tokio::main]
async fn main() -> trestle::Result<()> {
    tracing_subscriber::fmt().init();
    let standalone = Standalone::from_env("ghost_bot", "ghostbot", GHOST_PREFIX)?;
    standalone.run(router()).await
}
