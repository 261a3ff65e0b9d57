//! IRC messages: parsing and writing lines with IRCv3 message tags and prefixes.
//! Spec: <https://modern.ircdocs.horse/#messages>, <https://ircv3.net/specs/extensions/message-tags>

use std::fmt;

mod command;
mod numeric;

pub use command::Command;
pub use numeric::Numeric;

/// The longest line a server accepts, CRLF included, tags excluded (RFC 1459 §2.3).
pub const MAX_LINE: usize = 512;

/// One IRC message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// IRCv3 tags in the order received; a tag without a value has `None`.
    pub tags: Vec<(String, Option<String>)>,
    /// Who sent it (`nick!user@host` or a server name), if given.
    pub prefix: Option<String>,
    /// The command or numeric reply, read once when the line is parsed.
    pub command: Command,
    /// The parameters; the last may contain spaces.
    pub params: Vec<String>,
}

/// A line that is not an IRC message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an IRC message: {0:?}")]
pub struct ParseError(pub String);

impl Message {
    /// A message with a command and parameters.
    pub fn new(command: impl Into<Command>, params: &[&str]) -> Self {
        Message {
            tags: Vec::new(),
            prefix: None,
            command: command.into(),
            params: params.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// Parses one line, with or without its CRLF.
    pub fn parse(line: &str) -> Result<Self, ParseError> {
        let err = || ParseError(line.to_owned());
        let mut rest = line.trim_end_matches(['\r', '\n']);
        let mut message = Message::default();
        if let Some(tagged) = rest.strip_prefix('@') {
            let (tags, after) = tagged.split_once(' ').ok_or_else(err)?;
            message.tags = tags
                .split(';')
                .filter(|t| !t.is_empty())
                .map(|tag| match tag.split_once('=') {
                    Some((key, value)) => (key.to_owned(), Some(unescape_tag(value))),
                    None => (tag.to_owned(), None),
                })
                .collect();
            rest = after.trim_start_matches(' ');
        }
        if let Some(prefixed) = rest.strip_prefix(':') {
            let (prefix, after) = prefixed.split_once(' ').ok_or_else(err)?;
            message.prefix = Some(prefix.to_owned());
            rest = after.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return Err(err());
        }
        message.command = Command::parse(command);
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                message.params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            message.params.push(param.to_owned());
            rest = after;
        }
        Ok(message)
    }

    /// The nick of the sender, from a `nick!user@host` prefix.
    pub fn source_nick(&self) -> Option<&str> {
        let prefix = self.prefix.as_deref()?;
        Some(prefix.split(['!', '@']).next().unwrap_or(prefix))
    }

    /// The value of a tag, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The parameter at `index`, or "".
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map(String::as_str).unwrap_or("")
    }
}

impl fmt::Display for Message {
    /// Writes the line without CRLF. The last parameter is written as trailing when it needs
    /// to be (empty, has a space, or starts with ':').
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.tags.is_empty() {
            f.write_str("@")?;
            for (i, (key, value)) in self.tags.iter().enumerate() {
                if i > 0 {
                    f.write_str(";")?;
                }
                f.write_str(key)?;
                if let Some(value) = value {
                    write!(f, "={}", escape_tag(value))?;
                }
            }
            f.write_str(" ")?;
        }
        if let Some(prefix) = &self.prefix {
            write!(f, ":{prefix} ")?;
        }
        f.write_str(self.command.as_str())?;
        for (i, param) in self.params.iter().enumerate() {
            let last = i + 1 == self.params.len();
            if last && (param.is_empty() || param.contains(' ') || param.starts_with(':')) {
                write!(f, " :{param}")?;
            } else {
                write!(f, " {param}")?;
            }
        }
        Ok(())
    }
}

/// Escapes a tag value (`;`, space, `\`, CR, LF).
pub fn escape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape_tag`]; an unknown escape keeps the character, a lone trailing `\` is dropped,
/// as the spec says.
pub fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A CTCP ACTION (`/me`) body, or `None` for an ordinary message.
pub fn ctcp_action(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("\x01ACTION")?;
    let inner = inner.strip_suffix('\x01').unwrap_or(inner);
    Some(inner.strip_prefix(' ').unwrap_or(inner))
}

/// Wraps text as a CTCP ACTION.
pub fn make_action(text: &str) -> String {
    format!("\x01ACTION {text}\x01")
}

/// Whether a message body is a CTCP request other than ACTION (VERSION, PING, …), which the
/// bridge does not relay.
pub fn is_other_ctcp(text: &str) -> bool {
    text.starts_with('\x01') && ctcp_action(text).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_prefix_command_and_trailing() {
        let m = Message::parse(
            "@time=2024-01-02T03:04:05.678Z;msgid=a\\sb\\:c;+draft/x :nick!user@host PRIVMSG #chan :hello there\r\n",
        )
        .unwrap();
        assert_eq!(m.tag("time"), Some("2024-01-02T03:04:05.678Z"));
        assert_eq!(m.tag("msgid"), Some("a b;c"));
        assert_eq!(m.tags[2], ("+draft/x".to_owned(), None));
        assert_eq!(m.source_nick(), Some("nick"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#chan", "hello there"]);
    }

    #[test]
    fn parses_without_prefix_and_with_middle_params() {
        let m = Message::parse("PING :irc.example").unwrap();
        assert_eq!((m.command.as_str(), m.param(0)), ("PING", "irc.example"));
        let m = Message::parse(":srv 001 me :Welcome").unwrap();
        assert_eq!(m.source_nick(), Some("srv"));
        assert_eq!(m.params, ["me", "Welcome"]);
        let m = Message::parse(":srv 353 me = #c :a @b +c").unwrap();
        assert_eq!(m.params, ["me", "=", "#c", "a @b +c"]);
        let m = Message::parse("join   #a  #b").unwrap();
        assert_eq!((m.command.as_str(), m.params.len()), ("JOIN", 2));
        assert!(Message::parse("").is_err());
        assert!(Message::parse(":onlyprefix").is_err());
        assert!(Message::parse("@a=b").is_err());
    }

    #[test]
    fn commands_are_typed_whatever_their_case() {
        let m = Message::parse(":n!u@h privmsg #c :hi").unwrap();
        assert_eq!(m.command, Command::Privmsg);
        assert_eq!(m.to_string(), ":n!u@h PRIVMSG #c hi");
        let m = Message::parse(":srv 433 * bob :Nickname is already in use").unwrap();
        assert_eq!(m.command, Command::Numeric(Numeric::ERR_NICKNAMEINUSE));
        let m = Message::parse(":srv 742 me #c k v :odd").unwrap();
        assert_eq!(m.command.numeric().map(Numeric::code), Some(742));
        assert_eq!(m.to_string(), ":srv 742 me #c k v odd");
        let m = Message::parse("FOO bar").unwrap();
        assert_eq!(m.command, Command::Other("FOO".into()));
    }

    #[test]
    fn writes_and_reads_back() {
        let mut m = Message::new("PRIVMSG", &["#chan", ":starts with colon"]);
        m.tags.push(("+reply".into(), Some("x; y\\z\r\n".into())));
        let line = m.to_string();
        assert_eq!(
            line,
            "@+reply=x\\:\\sy\\\\z\\r\\n PRIVMSG #chan ::starts with colon"
        );
        assert_eq!(Message::parse(&line).unwrap(), m);
        assert_eq!(
            Message::new("PRIVMSG", &["#c", ""]).to_string(),
            "PRIVMSG #c :"
        );
        assert_eq!(Message::new("NICK", &["bob"]).to_string(), "NICK bob");
    }

    #[test]
    fn tag_unescape_edge_cases() {
        assert_eq!(unescape_tag("a\\"), "a");
        assert_eq!(unescape_tag("\\b"), "b");
        assert_eq!(unescape_tag(&escape_tag("; \\\r\n")), "; \\\r\n");
    }

    #[test]
    fn ctcp_actions() {
        assert_eq!(ctcp_action("\x01ACTION waves\x01"), Some("waves"));
        assert_eq!(ctcp_action("\x01ACTION waves"), Some("waves"));
        assert_eq!(ctcp_action("\x01ACTION\x01"), Some(""));
        assert_eq!(ctcp_action("hello"), None);
        assert_eq!(make_action("waves"), "\x01ACTION waves\x01");
        assert!(is_other_ctcp("\x01VERSION\x01"));
        assert!(!is_other_ctcp(&make_action("x")));
    }
}
