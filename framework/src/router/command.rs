use serde::Deserialize;

use super::{EventContext, FromEventContext, Rejection};
use crate::transaction::Incoming;

/// A parsed `!name args…` command from an `m.room.message` event.
///
/// As an extractor it accepts only messages that are commands: in a route added with
/// [`Router::command`](super::Router::command) that route's command, elsewhere any.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Command {
    /// The command's name, without the prefix.
    pub name: String,
    /// Everything after the name, with the whitespace between them removed.
    pub args: String,
}

#[derive(Deserialize)]
struct MessageContent {
    msgtype: Option<String>,
    body: Option<String>,
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
    /// The arguments split at whitespace, with `"double quoted"` words kept together.
    pub fn argv(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut quoted = false;
        let mut has_word = false;
        for c in self.args.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    has_word = true;
                }
                c if c.is_whitespace() && !quoted => {
                    if has_word {
                        out.push(std::mem::take(&mut current));
                        has_word = false;
                    }
                }
                c => {
                    current.push(c);
                    has_word = true;
                }
            }
        }
        if has_word {
            out.push(current);
        }
        out
    }

    /// Parses the context's event as a command: `name` when given must match.
    pub(crate) fn parse(ctx: &EventContext, prefix: &str, name: Option<&str>) -> Option<Command> {
        let Incoming::Timeline(event) = ctx.incoming() else {
            return None;
        };
        if event.event_type != "m.room.message" || event.state_key.is_some() {
            return None;
        }
        let message: MessageEvent = serde_json::from_str(event.json.get()).ok()?;
        if message.content.msgtype.as_deref() != Some("m.text") {
            return None;
        }
        Self::parse_body(&message.content.body?, prefix, name)
    }

    /// Parses a message body. Old clients prefix replies with quoted `> ` lines; those are
    /// skipped so a reply can still be a command.
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
        Command::parse(ctx, &ctx.command_prefix, None).ok_or(Rejection::Skip)
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
