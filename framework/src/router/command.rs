mod argv;

use ruma::OwnedUserId;
use serde::Deserialize;

use super::{
    EventContext, FromEventContext, Rejection,
    address::{Addressee, Reader},
};
use crate::transaction::Incoming;

/// A parsed `!name args…` command from an `m.room.message` event.
///
/// As an extractor it accepts only messages that are commands and not named for someone
/// else (see [`Addressee`]): in a route added with [`Router::command`](super::Router::command)
/// that route's command, elsewhere any.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Command {
    /// The command's name, without the prefix.
    pub name: String,
    /// Everything after the name, as typed, with the whitespace between them removed.
    pub args: String,
    /// Whom the message named as its recipient (see [`Addressee`]).
    pub addressee: Addressee,
}

#[derive(Deserialize)]
struct MessageContent {
    msgtype: Option<String>,
    body: Option<String>,
    /// Read loosely: a malformed `m.mentions` must not hide the command.
    #[serde(rename = "m.mentions", default)]
    mentions: serde_json::Value,
}

#[derive(Deserialize)]
struct MessageEvent {
    content: MessageContent,
}

/// A command route: its name, and what `help` shows and the router checks before the handler
/// runs. A plain name converts into one, so `.command("echo", echo)` and
/// `.command(CommandSpec::new("echo").usage("<text>"), echo)` both work.
///
/// ```
/// use trestle::router::CommandSpec;
///
/// let kick = CommandSpec::new("kick")
///     .usage("<user> [reason]")
///     .about("Removes a user from the room.")
///     .min_power(50);
/// assert_eq!(kick.usage_line("!"), "!kick <user> [reason]");
/// assert_eq!(kick.required_args(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandSpec {
    /// The name, without the prefix.
    pub name: String,
    /// The arguments as `help` shows them after the name: `<word>` is required, `[word]`
    /// optional.
    pub usage: Option<String>,
    /// One line on what the command does.
    pub about: Option<String>,
    /// The power level the sender needs in the room, checked against the room's current
    /// `m.room.power_levels` each time the command is used.
    pub min_power: Option<i64>,
}

impl CommandSpec {
    /// A command with only a name.
    pub fn new(name: impl Into<String>) -> Self {
        CommandSpec {
            name: name.into(),
            usage: None,
            about: None,
            min_power: None,
        }
    }

    /// Sets the arguments' synopsis, e.g. `<name> <text>` or `[count]`. Each `<word>` is a
    /// required argument: with fewer arguments ([`Command::argv`]) the bot answers with the usage
    /// line instead of running the handler.
    pub fn usage(mut self, usage: impl Into<String>) -> Self {
        self.usage = Some(usage.into());
        self
    }

    /// Sets the one-line description `help` shows.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// Requires the sender to have at least `level` in the room (room creators, from room
    /// version 12 on, always have). Below it, the bot refuses instead of running the handler.
    pub fn min_power(mut self, level: i64) -> Self {
        self.min_power = Some(level);
        self
    }

    /// How many arguments the usage requires: its `<word>`s (`<text...>` counts once).
    pub fn required_args(&self) -> usize {
        self.usage
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .filter(|word| word.starts_with('<'))
            .count()
    }

    /// `<prefix><name> <usage>`, as `help` shows it.
    pub fn usage_line(&self, prefix: &str) -> String {
        match self.usage.as_deref().map(str::trim) {
            Some(usage) if !usage.is_empty() => format!("{prefix}{} {usage}", self.name),
            _ => format!("{prefix}{}", self.name),
        }
    }
}

impl From<&str> for CommandSpec {
    fn from(name: &str) -> Self {
        CommandSpec::new(name)
    }
}

impl From<String> for CommandSpec {
    fn from(name: String) -> Self {
        CommandSpec::new(name)
    }
}

impl From<&String> for CommandSpec {
    fn from(name: &String) -> Self {
        CommandSpec::new(name.as_str())
    }
}

impl Command {
    /// The arguments, split at whitespace. A wholly quoted argument (`"two words"`) is one
    /// argument without its quotes; quotes inside an argument stay as typed, so
    /// `["a","b"]` is the argument `["a","b"]`. The rules are in `router/command/argv.rs`.
    pub fn argv(&self) -> Vec<String> {
        argv::split(&self.args)
    }

    /// Reads the context's event as a command for this bot, with its prefix, its commands,
    /// and the other command-taking bots it knows: `!name args`, `!<bot> name args`, or a
    /// leading mention of a bot (see [`Addressee`]). `None` when the event is no
    /// command at all. Old clients prefix replies with quoted `> ` lines; those are skipped
    /// so a reply can still be a command.
    pub fn read(ctx: &EventContext) -> Option<Command> {
        let Incoming::Timeline(event) = ctx.incoming() else {
            return None;
        };
        if event.event_type != "m.room.message" || event.state_key.is_some() {
            return None;
        }
        // The content alone where its place is known: the rest of the event was passed over once
        // already, as its routing fields were read.
        let content: MessageContent = match event.content_json() {
            Some(content) => serde_json::from_str(content).ok()?,
            None => {
                serde_json::from_str::<MessageEvent>(event.json.get())
                    .ok()?
                    .content
            }
        };
        if content.msgtype.as_deref() != Some("m.text") {
            return None;
        }
        let mentions: Vec<OwnedUserId> = content.mentions["user_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().and_then(|u| OwnedUserId::try_from(u).ok()))
            .collect();
        let router = &ctx.app.inner.router;
        let reader = Reader {
            prefix: &ctx.command_prefix,
            me: ctx.app.bot_user_id(),
            others: &router.options.other_bots,
            knows: &|name| router.knows(name),
        };
        reader.read(strip_reply_fallback(&content.body?), &mentions)
    }

    /// Whether this bot should answer the command: never when the message names someone
    /// else; a command the bot has (a route, a declared command or `help`), always
    /// otherwise; one it does not have only when the message names this bot, or when no
    /// other member of the room is a known command-taking bot (see [`Addressee::answers`]).
    /// A plugin that answers unknown commands itself asks this first.
    pub async fn is_for_this_bot(&self, ctx: &EventContext) -> bool {
        let known = ctx.app.inner.router.knows(&self.name);
        self.addressee.answers(ctx, known).await
    }

    /// Parses a message body as `<prefix><name> args`, knowing no bot's name: `name` when
    /// given must match. Quoted `> ` reply fallback lines are skipped.
    pub fn parse_body(body: &str, prefix: &str, name: Option<&str>) -> Option<Command> {
        let body = strip_reply_fallback(body);
        let rest = body.strip_prefix(prefix)?;
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (found, args) = rest.split_at(end);
        if found.is_empty() || name.is_some_and(|n| n != found) {
            return None;
        }
        Some(Command {
            name: found.to_owned(),
            args: args.trim_start().to_owned(),
            addressee: Addressee::Anyone,
        })
    }
}

fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    match body.find("\n\n") {
        Some(i) if body[..i].lines().all(|l| l.starts_with('>')) => &body[i + 2..],
        _ => body,
    }
}

impl<S> FromEventContext<S> for Command {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        if let Some(command) = &ctx.command {
            return Ok((**command).clone());
        }
        // A command named for someone else is theirs, not this bot's.
        Command::read(ctx)
            .filter(|c| !matches!(c.addressee, Addressee::Other(_)))
            .ok_or(Rejection::Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_args() {
        let c = Command::parse_body("!echo hello  world", "!", None).unwrap();
        assert_eq!((c.name.as_str(), c.args.as_str()), ("echo", "hello  world"));
        assert_eq!(c.argv(), ["hello", "world"]);
    }

    #[test]
    fn name_must_match_whole_word() {
        assert!(Command::parse_body("!echo-as A b", "!", Some("echo")).is_none());
        assert!(Command::parse_body("!echo-as A b", "!", Some("echo-as")).is_some());
        assert!(Command::parse_body("!echo", "!", Some("echo")).is_some());
        assert!(Command::parse_body("echo x", "!", Some("echo")).is_none());
        assert!(Command::parse_body("!", "!", None).is_none());
    }

    #[test]
    fn custom_prefix_and_quotes() {
        let c = Command::parse_body("bot: say \"two words\" three", "bot: ", None).unwrap();
        assert_eq!(c.name, "say");
        assert_eq!(c.argv(), ["two words", "three"]);
        let empty = Command::parse_body("!x \"\"", "!", None).unwrap();
        assert_eq!(empty.argv(), [""]);
    }

    #[test]
    fn reply_fallback_is_skipped() {
        let c = Command::parse_body("> <@a:x> earlier\n> more\n\n!echo hi", "!", None).unwrap();
        assert_eq!(c.args, "hi");
    }
}
