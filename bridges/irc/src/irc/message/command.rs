//! The command of a message, parsed once: a word the bridge acts on, a numeric reply, or any
//! other word, kept.

use std::fmt;

use super::numeric::Numeric;

/// What a message asks or answers. Command words are case-insensitive on the wire
/// (RFC 2812 §2.3); they are read here whatever their case and written upper-case.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// `PRIVMSG`: a message to a channel or a nick (CTCP `ACTION`s too).
    Privmsg,
    /// `NOTICE`: a message that must not be answered automatically.
    Notice,
    /// `JOIN`: someone joined a channel.
    Join,
    /// `PART`: someone left a channel.
    Part,
    /// `KICK`: someone was removed from a channel.
    Kick,
    /// `QUIT`: someone left the network.
    Quit,
    /// `NICK`: someone changed nick (or we ask for one).
    Nick,
    /// `TOPIC`: a channel's topic was set.
    Topic,
    /// `MODE`: a channel's or a user's modes changed.
    Mode,
    /// `PING`: the server checks we are there (or we check it is).
    Ping,
    /// `PONG`: the answer to a `PING`.
    Pong,
    /// `CAP`: IRCv3 capability negotiation.
    Cap,
    /// `AUTHENTICATE`: a step of SASL.
    Authenticate,
    /// `ERROR`: the server is closing the connection.
    Error,
    /// `PASS`: the server password, sent before registering.
    Pass,
    /// `USER`: the user name and real name, sent when registering.
    User,
    /// A three-digit reply.
    Numeric(Numeric),
    /// Any other command, upper-case as it is written back.
    Other(String),
}

/// The words with a variant of their own, for parsing and writing from one list.
const WORDS: [(Command, &str); 16] = [
    (Command::Privmsg, "PRIVMSG"),
    (Command::Notice, "NOTICE"),
    (Command::Join, "JOIN"),
    (Command::Part, "PART"),
    (Command::Kick, "KICK"),
    (Command::Quit, "QUIT"),
    (Command::Nick, "NICK"),
    (Command::Topic, "TOPIC"),
    (Command::Mode, "MODE"),
    (Command::Ping, "PING"),
    (Command::Pong, "PONG"),
    (Command::Cap, "CAP"),
    (Command::Authenticate, "AUTHENTICATE"),
    (Command::Error, "ERROR"),
    (Command::Pass, "PASS"),
    (Command::User, "USER"),
];

impl Command {
    /// The command for a word as it came, in any case. Every word is a command: those the
    /// bridge does not act on are kept as [`Command::Other`].
    pub fn parse(word: &str) -> Command {
        if let Some(numeric) = Numeric::parse(word) {
            return Command::Numeric(numeric);
        }
        WORDS
            .iter()
            .find(|(_, known)| known.eq_ignore_ascii_case(word))
            .map(|(command, _)| command.clone())
            .unwrap_or_else(|| Command::Other(word.to_ascii_uppercase()))
    }

    /// The word as written on the wire (`"PRIVMSG"`, `"001"`).
    pub fn as_str(&self) -> &str {
        match self {
            Command::Numeric(numeric) => numeric.as_str(),
            Command::Other(word) => word,
            known => WORDS
                .iter()
                .find(|(command, _)| command == known)
                .map_or("", |(_, word)| word),
        }
    }

    /// The numeric, for a numeric reply.
    pub fn numeric(&self) -> Option<Numeric> {
        match self {
            Command::Numeric(numeric) => Some(*numeric),
            _ => None,
        }
    }
}

impl From<&str> for Command {
    fn from(word: &str) -> Self {
        Command::parse(word)
    }
}

impl From<Numeric> for Command {
    fn from(numeric: Numeric) -> Self {
        Command::Numeric(numeric)
    }
}

impl Default for Command {
    /// An empty [`Command::Other`]: what a message is before its command is read.
    fn default() -> Self {
        Command::Other(String::new())
    }
}

/// Compares with the word as written (`message.command == "PRIVMSG"`, `== "001"`).
impl PartialEq<str> for Command {
    fn eq(&self, word: &str) -> bool {
        self.as_str() == word
    }
}

impl PartialEq<&str> for Command {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Numeric(numeric) => fmt::Debug::fmt(numeric, f),
            other => f.write_str(other.as_str()),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_case_insensitive() {
        for word in ["PRIVMSG", "privmsg", "PrivMsg"] {
            assert_eq!(Command::parse(word), Command::Privmsg, "{word}");
        }
        assert_eq!(Command::parse("kick"), Command::Kick);
        assert_eq!(Command::parse("Ping").as_str(), "PING");
    }

    #[test]
    fn every_known_word_reads_back_as_itself() {
        for (command, word) in &WORDS {
            assert_eq!(&Command::parse(word), command);
            assert_eq!(command.as_str(), *word);
        }
    }

    #[test]
    fn numerics_and_unknown_words_are_kept() {
        assert_eq!(
            Command::parse("433"),
            Command::Numeric(Numeric::ERR_NICKNAMEINUSE)
        );
        assert_eq!(
            Command::parse("999").numeric().map(Numeric::code),
            Some(999)
        );
        assert_eq!(Command::parse("wallops"), Command::Other("WALLOPS".into()));
        assert_eq!(Command::parse("wallops").as_str(), "WALLOPS");
        assert_eq!(Command::parse("PRIVMSG").numeric(), None);
        assert!(Command::parse("001") == "001");
    }
}
