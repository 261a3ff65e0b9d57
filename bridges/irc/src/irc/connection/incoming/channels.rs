//! Channels as the connection sees them: who joins, leaves, is kicked or renamed, modes,
//! topics and member lists. What concerns this connection's own channels is kept (a channel
//! it was removed from is not rejoined).

use super::super::{Actor, Event, Session};
use super::{mode_changes, source};
use crate::irc::{
    message::Message,
    naming::{irc_lowercase, is_channel},
};

impl Actor {
    /// Whether a nick is this connection's.
    fn is_me(&self, nick: &str) -> bool {
        irc_lowercase(nick) == irc_lowercase(&self.state.borrow().nick)
    }

    pub(super) fn joined(&self, message: &Message) {
        self.emit(Event::Join {
            nick: source(message),
            channel: message.param(0).to_owned(),
            mask: message
                .prefix
                .as_deref()
                .and_then(|p| p.split_once('!'))
                .map(|(_, mask)| mask.to_owned())
                .unwrap_or_default(),
        })
    }

    pub(super) fn join_refused(&mut self, message: &Message) {
        self.channels.remove(&irc_lowercase(message.param(1)));
        self.emit(Event::JoinRefused {
            channel: message.param(1).to_owned(),
            reason: message.params.last().cloned().unwrap_or_default(),
        })
    }

    pub(super) fn parted(&mut self, message: &Message) {
        let from = source(message);
        if self.is_me(&from) {
            self.channels.remove(&irc_lowercase(message.param(0)));
        }
        self.emit(Event::Part {
            nick: from,
            channel: message.param(0).to_owned(),
            reason: message.param(1).to_owned(),
        })
    }

    pub(super) fn quit_seen(&self, message: &Message) {
        self.emit(Event::Quit {
            nick: source(message),
            reason: message.param(0).to_owned(),
        })
    }

    pub(super) fn kicked(&mut self, message: &Message) {
        if self.is_me(message.param(1)) {
            self.channels.remove(&irc_lowercase(message.param(0)));
        }
        self.emit(Event::Kick {
            channel: message.param(0).to_owned(),
            nick: message.param(1).to_owned(),
            by: source(message),
            reason: message.param(2).to_owned(),
        })
    }

    pub(super) fn nick_changed(&self, message: &Message) {
        let from = source(message);
        let new = message.param(0).to_owned();
        if self.is_me(&from) {
            self.state.send_modify(|s| s.nick = new.clone());
        }
        self.emit(Event::Nick { old: from, new })
    }

    /// Channel modes; a user's own modes are not reported.
    pub(super) fn mode_changed(&self, message: &Message) {
        if !is_channel(message.param(0)) {
            return;
        }
        self.emit(Event::Mode {
            channel: message.param(0).to_owned(),
            by: source(message),
            changes: mode_changes(
                message.param(1),
                &message.params[2.min(message.params.len())..],
            ),
        })
    }

    pub(super) fn topic_set(&self, message: &Message) {
        self.emit(Event::Topic {
            channel: message.param(0).to_owned(),
            topic: message.param(1).to_owned(),
            by: Some(source(message)),
        })
    }

    /// `RPL_TOPIC`: the topic of a channel just joined.
    pub(super) fn topic_on_join(&self, message: &Message) {
        self.emit(Event::Topic {
            channel: message.param(1).to_owned(),
            topic: message.param(2).to_owned(),
            by: None,
        })
    }

    /// `RPL_ENDOFNAMES`: the members gathered from `RPL_NAMREPLY` are reported at once.
    pub(super) fn end_of_names(&self, message: &Message, session: &mut Session) {
        let names = session.names.remove(message.param(1)).unwrap_or_default();
        let (nicks, prefixes) = names.into_iter().unzip();
        self.emit(Event::Names {
            channel: message.param(1).to_owned(),
            nicks,
            prefixes,
        });
    }
}

/// `RPL_NAMREPLY`: some of a channel's members, each with the modes its prefixes stand for.
pub(super) fn names(message: &Message, session: &mut Session) {
    let nicks = message.params.last().cloned().unwrap_or_default();
    session
        .names
        .entry(message.param(2).to_owned())
        .or_default()
        .extend(nicks.split_whitespace().map(|n| {
            let nick =
                n.trim_start_matches(|c| session.prefixes.iter().any(|(symbol, _)| *symbol == c));
            let modes = n[..n.len() - nick.len()]
                .chars()
                .filter_map(|c| {
                    session
                        .prefixes
                        .iter()
                        .find(|(s, _)| *s == c)
                        .map(|(_, m)| *m)
                })
                .collect();
            (nick.to_owned(), modes)
        }));
}
