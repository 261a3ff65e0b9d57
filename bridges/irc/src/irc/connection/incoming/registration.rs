//! Registering a connection: capabilities, SASL, the nick the server accepts, and what it
//! says it supports.

use base64::Engine;

use super::super::{Actor, Event, SHORT_NICK, Session};
use super::parse_prefix;
use crate::irc::{
    message::{Command, Message, Numeric},
    naming::nick_candidates,
};

impl Actor {
    /// `RPL_WELCOME`: registered, under the nick the server names.
    pub(super) fn welcome(
        &mut self,
        message: &Message,
        session: &mut Session,
        out: &mut Vec<Message>,
    ) {
        let nick = message.param(0).to_owned();
        session.registered = true;
        self.state.send_modify(|s| {
            s.registered = true;
            s.down = None;
            s.nick = nick.clone();
            s.sessions += 1;
        });
        self.emit(Event::Registered { nick });
        // Rejoin before anything queued is sent, so queued channel messages land.
        for channel in self.channels.values() {
            out.push(Message::new(Command::Join, &[channel]));
        }
    }

    /// A nick refused: while registering the next candidate is tried; afterwards the change
    /// is reported.
    pub(super) fn nick_refused(
        &mut self,
        numeric: Numeric,
        message: &Message,
        session: &mut Session,
        out: &mut Vec<Message>,
    ) {
        if session.registered {
            self.emit(Event::Error {
                message: format!(
                    "nick {} refused: {}",
                    message.param(1),
                    message.params.last().cloned().unwrap_or_default()
                ),
            });
            return;
        }
        if numeric == Numeric::ERR_ERRONEUSNICKNAME && !session.short_nicks {
            // Too long or bad characters: servers with short nicks allow nine.
            session.short_nicks = true;
            session.candidates = nick_candidates(&self.wanted_nick, SHORT_NICK).collect();
        }
        let next = session.next_nick();
        self.state.send_modify(|s| s.nick = next.clone());
        out.push(Message::new(Command::Nick, &[&next]));
    }

    /// The server asks for our SASL PLAIN credentials (`AUTHENTICATE +`).
    pub(super) fn authenticate(&self, out: &mut Vec<Message>) {
        let Some((user, password)) = &self.config.sasl else {
            return;
        };
        let blob = format!("{user}\0{user}\0{password}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(blob);
        // Payloads of 400 bytes or more go in chunks; a plain one never is that long
        // unless the password is absurd, but the protocol allows it.
        for chunk in encoded.as_bytes().chunks(400) {
            out.push(Message::new(
                Command::Authenticate,
                &[&String::from_utf8_lossy(chunk)],
            ));
        }
        if encoded.len() % 400 == 0 {
            out.push(Message::new(Command::Authenticate, &["+"]));
        }
    }

    /// SASL did not log us in: said, and registration goes on without it.
    pub(super) fn sasl_failed(&self, message: &Message, out: &mut Vec<Message>) {
        self.emit(Event::Error {
            message: format!(
                "SASL failed: {}",
                message.params.last().cloned().unwrap_or_default()
            ),
        });
        out.push(Message::new(Command::Cap, &["END"]));
    }

    pub(super) fn handle_cap(
        &mut self,
        message: &Message,
        session: &mut Session,
        out: &mut Vec<Message>,
    ) {
        match message.param(1) {
            "LS" => {
                // `CAP * LS * :caps` means more lines follow.
                let more = message.params.len() > 3 && message.param(2) == "*";
                let caps = message.params.last().cloned().unwrap_or_default();
                session.offered.extend(
                    caps.split_whitespace()
                        .map(|c| c.split('=').next().unwrap_or(c).to_owned()),
                );
                if more {
                    return;
                }
                let mut wanted = vec!["server-time", "message-tags", "multi-prefix"];
                if self.config.sasl.is_some() {
                    wanted.push("sasl");
                }
                let request: Vec<&str> = wanted
                    .into_iter()
                    .filter(|c| session.offered.iter().any(|o| o == c))
                    .collect();
                if request.is_empty() {
                    out.push(Message::new(Command::Cap, &["END"]));
                } else {
                    out.push(Message::new(Command::Cap, &["REQ", &request.join(" ")]));
                }
            }
            "ACK" => {
                let acked = message.params.last().cloned().unwrap_or_default();
                if acked.split_whitespace().any(|c| c == "sasl") {
                    out.push(Message::new(Command::Authenticate, &["PLAIN"]));
                } else {
                    out.push(Message::new(Command::Cap, &["END"]));
                }
            }
            "NAK" => out.push(Message::new(Command::Cap, &["END"])),
            _ => {}
        }
    }
}

/// `RPL_ISUPPORT`: the channel prefixes (`PREFIX=(ov)@+`).
pub(super) fn isupport(message: &Message, session: &mut Session) {
    let prefix = message
        .params
        .iter()
        .find_map(|p| p.strip_prefix("PREFIX="));
    if let Some(table) = prefix.and_then(parse_prefix) {
        session.prefixes = table;
    }
}
