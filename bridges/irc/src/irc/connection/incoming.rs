//! What the actor does with each line from the server: the command, parsed once with the
//! line, picks a small handler per concern (registration in `registration.rs`, channels in
//! `channels.rs`, messages and keepalive here).

use super::{Actor, Event, Kind, Session};
use crate::irc::message::{Command, Message, Numeric, ctcp_action, is_other_ctcp};

mod channels;
mod registration;

impl Actor {
    pub(super) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(super) fn handle(
        &mut self,
        message: Message,
        session: &mut Session,
        out: &mut Vec<Message>,
    ) {
        match &message.command {
            Command::Ping => out.push(Message::new(Command::Pong, &[message.param(0)])),
            Command::Pong => self.pong(&message, session, out),
            Command::Cap => self.handle_cap(&message, session, out),
            Command::Authenticate if message.param(0) == "+" => self.authenticate(out),
            Command::Privmsg | Command::Notice => self.chat(&message),
            Command::Join => self.joined(&message),
            Command::Part => self.parted(&message),
            Command::Quit => self.quit_seen(&message),
            Command::Kick => self.kicked(&message),
            Command::Nick => self.nick_changed(&message),
            Command::Mode => self.mode_changed(&message),
            Command::Topic => self.topic_set(&message),
            Command::Numeric(numeric) => self.numeric(*numeric, &message, session, out),
            _ => {}
        }
    }

    fn numeric(
        &mut self,
        numeric: Numeric,
        message: &Message,
        session: &mut Session,
        out: &mut Vec<Message>,
    ) {
        match numeric {
            Numeric::RPL_WELCOME => self.welcome(message, session, out),
            Numeric::RPL_ISUPPORT => registration::isupport(message, session),
            Numeric::RPL_SASLSUCCESS | Numeric::ERR_SASLALREADY => {
                out.push(Message::new(Command::Cap, &["END"]))
            }
            Numeric::ERR_NICKLOCKED
            | Numeric::ERR_SASLFAIL
            | Numeric::ERR_SASLTOOLONG
            | Numeric::ERR_SASLABORTED
            | Numeric::RPL_SASLMECHS => self.sasl_failed(message, out),
            Numeric::ERR_ERRONEUSNICKNAME
            | Numeric::ERR_NICKNAMEINUSE
            | Numeric::ERR_NICKCOLLISION
            | Numeric::ERR_UNAVAILRESOURCE => self.nick_refused(numeric, message, session, out),
            // Cannot join: full, invite only, banned, bad key.
            Numeric::ERR_CHANNELISFULL
            | Numeric::ERR_INVITEONLYCHAN
            | Numeric::ERR_BANNEDFROMCHAN
            | Numeric::ERR_BADCHANNELKEY => self.join_refused(message),
            Numeric::RPL_TOPIC => self.topic_on_join(message),
            Numeric::RPL_NAMREPLY => channels::names(message, session),
            Numeric::RPL_ENDOFNAMES => self.end_of_names(message, session),
            _ => {}
        }
    }

    /// The answer to one of our confirmation `PING`s: every line written before it was
    /// handled, so it is forgotten.
    fn pong(&mut self, message: &Message, session: &mut Session, out: &mut Vec<Message>) {
        let token = message.params.last().map(String::as_str).unwrap_or("");
        let Some(seq) = token
            .strip_prefix("trestle-")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        while self.unconfirmed.front().is_some_and(|(s, _)| *s <= seq) {
            self.unconfirmed.pop_front();
            self.confirmed += 1;
        }
        while self
            .waiters
            .front()
            .is_some_and(|(line, _)| *line <= self.confirmed)
        {
            if let Some((_, waiter)) = self.waiters.pop_front() {
                let _ = waiter.send(());
            }
        }
        session.confirming = false;
        if !self.unconfirmed.is_empty() {
            out.push(self.confirm_ping(session));
        }
    }

    /// A `PRIVMSG` or `NOTICE` from a user (CTCP other than `ACTION` is not relayed).
    fn chat(&self, message: &Message) {
        let text = message.param(1);
        if is_other_ctcp(text) {
            return;
        }
        let (kind, text) = match (&message.command, ctcp_action(text)) {
            (Command::Privmsg, Some(action)) => (Kind::Action, action),
            (Command::Privmsg, None) => (Kind::Privmsg, text),
            _ => (Kind::Notice, text),
        };
        // Server notices (no `!` in the prefix) are not chat.
        if !message.prefix.as_deref().unwrap_or("").contains('!') {
            return;
        }
        self.emit(Event::Message {
            from: source(message),
            target: message.param(0).to_owned(),
            kind,
            text: text.to_owned(),
            time: message.tag("time").map(str::to_owned),
        });
    }
}

/// The sender's nick, or "" for a line without a prefix.
fn source(message: &Message) -> String {
    message.source_nick().unwrap_or_default().to_owned()
}

/// The `PREFIX` of `ISUPPORT`, `(modes)symbols`, as symbol → mode pairs.
fn parse_prefix(value: &str) -> Option<Vec<(char, char)>> {
    let (modes, symbols) = value.strip_prefix('(')?.split_once(')')?;
    (modes.chars().count() == symbols.chars().count())
        .then(|| symbols.chars().zip(modes.chars()).collect())
}

/// Splits `+ov-b nick nick mask` into changes with their arguments. Modes that take an
/// argument are the usual ones (list modes, prefixes, key; limit only when set).
fn mode_changes(modes: &str, args: &[String]) -> Vec<(bool, char, Option<String>)> {
    let mut args = args.iter();
    let mut adding = true;
    let mut changes = Vec::new();
    for mode in modes.chars() {
        match mode {
            '+' => adding = true,
            '-' => adding = false,
            _ => {
                let takes_arg = matches!(mode, 'o' | 'v' | 'h' | 'a' | 'q' | 'b' | 'e' | 'I' | 'k')
                    || (mode == 'l' && adding);
                let arg = if takes_arg {
                    args.next().cloned()
                } else {
                    None
                };
                changes.push((adding, mode, arg));
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::{mode_changes, parse_prefix};

    #[test]
    fn the_prefix_table_is_read_from_isupport() {
        assert_eq!(
            parse_prefix("(Yov)!@+"),
            Some(vec![('!', 'Y'), ('@', 'o'), ('+', 'v')])
        );
        assert_eq!(parse_prefix("(ov)@"), None);
        assert_eq!(parse_prefix("ov@+"), None);
    }

    #[test]
    fn modes_split_with_their_arguments() {
        let args = [
            "alice".to_owned(),
            "bob".to_owned(),
            "*!*@x".to_owned(),
            "10".to_owned(),
        ];
        assert_eq!(
            mode_changes("+ov-bn+l", &args),
            vec![
                (true, 'o', Some("alice".into())),
                (true, 'v', Some("bob".into())),
                (false, 'b', Some("*!*@x".into())),
                (false, 'n', None),
                (true, 'l', Some("10".into())),
            ]
        );
        assert_eq!(mode_changes("-l", &[]), vec![(false, 'l', None)]);
    }
}
