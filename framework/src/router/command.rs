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
