//! The bridge's remote ids: chats (channels and private conversations), users and messages.

use std::{fmt, str::FromStr};

use crate::irc::naming::{irc_lowercase, is_channel};

/// A chat on a network: a channel, or the private conversation of a Matrix user with a nick.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChatId {
    /// `network/#channel` (lower-cased).
    Channel {
        /// The network's short name.
        network: String,
        /// The channel, lower-cased the IRC way.
        channel: String,
    },
    /// `network/nick/@user:server`.
    Private {
        /// The network's short name.
        network: String,
        /// The IRC side's nick, lower-cased the IRC way.
        nick: String,
        /// The Matrix side's user id.
        user: String,
    },
}

impl ChatId {
    /// The id of a channel of a network (any case: it is lower-cased here).
    pub fn channel(network: &str, channel: &str) -> Self {
        ChatId::Channel {
            network: network.to_owned(),
            channel: irc_lowercase(channel),
        }
    }

    /// The short name of the network the chat is on.
    pub fn network(&self) -> &str {
        match self {
            ChatId::Channel { network, .. } | ChatId::Private { network, .. } => network,
        }
    }

    /// Where IRC messages for this chat go: the channel, or the nick.
    pub fn target(&self) -> &str {
        match self {
            ChatId::Channel { channel, .. } => channel,
            ChatId::Private { nick, .. } => nick,
        }
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatId::Channel { network, channel } => write!(f, "{network}/{channel}"),
            ChatId::Private {
                network,
                nick,
                user,
            } => write!(f, "{network}/{nick}/{user}"),
        }
    }
}

impl FromStr for ChatId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (network, rest) = s
            .split_once('/')
            .ok_or_else(|| format!("bad chat id {s:?}"))?;
        if is_channel(rest) {
            return Ok(ChatId::channel(network, rest));
        }
        let (nick, user) = rest
            .split_once('/')
            .ok_or_else(|| format!("bad chat id {s:?}"))?;
        Ok(ChatId::Private {
            network: network.to_owned(),
            nick: irc_lowercase(nick),
            user: user.to_owned(),
        })
    }
}

/// An IRC user: `network/nick` (lower-cased: IRC nicks are case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId {
    /// The network's short name.
    pub network: String,
    /// The nick, lower-cased the IRC way.
    pub nick: String,
}

impl UserId {
    /// The id of a nick on a network (any case: it is lower-cased here).
    pub fn new(network: &str, nick: &str) -> Self {
        UserId {
            network: network.to_owned(),
            nick: irc_lowercase(nick),
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.nick)
    }
}

impl FromStr for UserId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (network, nick) = s
            .split_once('/')
            .ok_or_else(|| format!("bad user id {s:?}"))?;
        Ok(UserId::new(network, nick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for chat in [
            ChatId::channel("libera", "#Rust"),
            ChatId::Private {
                network: "libera".into(),
                nick: "bob".into(),
                user: "@alice:example.org".into(),
            },
        ] {
            assert_eq!(chat.to_string().parse::<ChatId>().unwrap(), chat);
        }
        assert_eq!(ChatId::channel("n", "#Rust").target(), "#rust");
        let user = UserId::new("libera", "Bob[x]");
        assert_eq!(user.to_string(), "libera/bob{x}");
        assert_eq!(user.to_string().parse::<UserId>().unwrap(), user);
        assert!("nonsense".parse::<ChatId>().is_err());
    }
}
