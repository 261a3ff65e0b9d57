//! The echo bot: the smallest proof that commands, replies and ghosts work end to end.
//!
//! - `!echo text` — the bot replies to the message with `text`.
//! - `!echo-as NAME text` — a ghost whose display name is NAME says `text` (quote a NAME with
//!   spaces: `!echo-as "Ada Lovelace" hello`).

use serde::Deserialize;
use trestle::{
    Appservice, Plugin, Router,
    plugin::PluginSettings,
    router::{Command, CommandSpec, Reply, Room},
};

/// The plugin, for the `trestle` host.
pub const PLUGIN: Plugin = Plugin::new("echo", "echo", "echo_", build)
    .with_settings_help("settings:\n  command_prefix: \"!\"   # what commands start with");

/// The echo bot's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// What commands start with.
    pub command_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            command_prefix: "!".to_owned(),
        }
    }
}

fn build(settings: &PluginSettings<'_>) -> trestle::Result<Router> {
    let settings: Settings = settings.get()?;
    Ok(router().command_prefix(settings.command_prefix))
}

/// The echo bot's routes with default settings. It joins rooms it is invited to.
pub fn router() -> Router {
    Router::new()
        .accept_invites(true)
        .help(true)
        .command(
            CommandSpec::new("echo")
                .usage("<text>")
                .about("Replies with the text."),
            echo,
        )
        .command(
            CommandSpec::new("echo-as")
                .usage("<name> <text>")
                .about("A ghost named <name> says the text (quote a name with spaces)."),
            echo_as,
        )
}

async fn echo(cmd: Command, reply: Reply) -> trestle::Result<()> {
    if !cmd.args.is_empty() {
        reply.text(&cmd.args).await?;
    }
    Ok(())
}

async fn echo_as(cmd: Command, Room(room): Room, app: Appservice) -> trestle::Result<()> {
    let Some((name, text)) = split_name(&cmd.args) else {
        app.bot()
            .send_text(&room, "usage: !echo-as NAME text")
            .await?;
        return Ok(());
    };
    let ghost = app.ghost(&format!("{}{}", PLUGIN.ghost_prefix, localpart_for(&name)))?;
    ghost.set_display_name(&name).await?;
    ghost.ensure_joined(&room).await?;
    ghost.send_text(&room, text).await?;
    Ok(())
}

/// Splits `NAME rest` or `"A NAME" rest`.
fn split_name(args: &str) -> Option<(String, &str)> {
    let (name, rest) = if let Some(quoted) = args.strip_prefix('"') {
        let end = quoted.find('"')?;
        (quoted[..end].to_owned(), &quoted[end + 1..])
    } else {
        let end = args.find(char::is_whitespace)?;
        (args[..end].to_owned(), &args[end..])
    };
    let text = rest.trim_start();
    (!name.trim().is_empty() && !text.is_empty()).then_some((name, text))
}

/// A user localpart for a display name: lowercase, with every character Matrix does not allow
/// in a localpart written as `=xx` hex, so different names give different ghosts.
fn localpart_for(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => out.push(byte as char),
            b'A'..=b'Z' => out.push((byte as char).to_ascii_lowercase()),
            _ => out.push_str(&format!("={byte:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_plain_and_quoted() {
        assert_eq!(
            split_name("Alice hi there"),
            Some(("Alice".into(), "hi there"))
        );
        assert_eq!(
            split_name("\"Ada L\" hello"),
            Some(("Ada L".into(), "hello"))
        );
        assert_eq!(split_name("Alice"), None);
        assert_eq!(split_name("\"unclosed hi"), None);
        assert_eq!(split_name("\"\" hi"), None);
    }

    #[test]
    fn localparts_are_valid_and_distinct() {
        assert_eq!(localpart_for("Alice"), "alice");
        assert_eq!(localpart_for("Ada L"), "ada=20l");
        assert_ne!(localpart_for("a b"), localpart_for("a_b"));
        assert_eq!(localpart_for("é"), "=c3=a9");
    }
}
