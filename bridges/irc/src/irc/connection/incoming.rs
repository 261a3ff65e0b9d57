//! What the actor does with each line from the server.

use base64::Engine;

use super::{Actor, Event, Kind, SHORT_NICK, Session};
use crate::irc::{
    message::{Message, ctcp_action, is_other_ctcp},
    naming::{irc_lowercase, nick_candidates},
};

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
        let from = message.source_nick().unwrap_or_default().to_owned();
        let own_nick = self.state.borrow().nick.clone();
        let me = irc_lowercase(&from) == irc_lowercase(&own_nick);
        match message.command.as_str() {
            "PING" => out.push(Message::new("PONG", &[message.param(0)])),
            "PONG" => {
                let token = message.params.last().map(String::as_str).unwrap_or("");
                if let Some(seq) = token
                    .strip_prefix("trestle-")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    while self.unconfirmed.front().is_some_and(|(s, _)| *s <= seq) {
                        self.unconfirmed.pop_front();
                    }
                    session.confirming = false;
                    if !self.unconfirmed.is_empty() {
                        out.push(self.confirm_ping(session));
                    }
                }
            }
            "CAP" => self.handle_cap(&message, session, out),
            "AUTHENTICATE" if message.param(0) == "+" => {
                if let Some((user, password)) = &self.config.sasl {
                    let blob = format!("{user}\0{user}\0{password}");
                    let encoded = base64::engine::general_purpose::STANDARD.encode(blob);
                    // Payloads of 400 bytes or more go in chunks; a plain one never is that long
                    // unless the password is absurd, but the protocol allows it.
                    for chunk in encoded.as_bytes().chunks(400) {
                        out.push(Message::new(
                            "AUTHENTICATE",
                            &[&String::from_utf8_lossy(chunk)],
                        ));
                    }
                    if encoded.len() % 400 == 0 {
                        out.push(Message::new("AUTHENTICATE", &["+"]));
                    }
                }
            }
            "903" | "907" => out.push(Message::new("CAP", &["END"])),
            "902" | "904" | "905" | "906" | "908" => {
                self.emit(Event::Error {
                    message: format!(
                        "SASL failed: {}",
                        message.params.last().cloned().unwrap_or_default()
                    ),
                });
                out.push(Message::new("CAP", &["END"]));
            }
            "001" => {
                let nick = message.param(0).to_owned();
                session.registered = true;
                self.state.send_modify(|s| {
                    s.registered = true;
                    s.nick = nick.clone();
                    s.sessions += 1;
                });
                self.emit(Event::Registered { nick });
                // Rejoin before anything queued is sent, so queued channel messages land.
                for channel in self.channels.values() {
                    out.push(Message::new("JOIN", &[channel]));
                }
            }
            "433" | "432" | "436" | "437" if !session.registered => {
                if message.command == "432" && !session.short_nicks {
                    // Too long or bad characters: servers with short nicks allow nine.
                    session.short_nicks = true;
                    session.candidates = nick_candidates(&self.wanted_nick, SHORT_NICK).collect();
                }
                let next = session.next_nick();
                self.state.send_modify(|s| s.nick = next.clone());
                out.push(Message::new("NICK", &[&next]));
            }
            "433" | "432" | "436" | "437" => self.emit(Event::Error {
                message: format!(
                    "nick {} refused: {}",
                    message.param(1),
                    message.params.last().cloned().unwrap_or_default()
                ),
            }),
            "PRIVMSG" | "NOTICE" => {
                let text = message.param(1);
                if is_other_ctcp(text) {
                    return;
                }
                let (kind, text) = match (message.command.as_str(), ctcp_action(text)) {
                    ("PRIVMSG", Some(action)) => (Kind::Action, action),
                    ("PRIVMSG", None) => (Kind::Privmsg, text),
                    _ => (Kind::Notice, text),
                };
                // Server notices (no `!` in the prefix) are not chat.
                if !message.prefix.as_deref().unwrap_or("").contains('!') {
                    return;
                }
                self.emit(Event::Message {
                    from,
                    target: message.param(0).to_owned(),
                    kind,
                    text: text.to_owned(),
                    time: message.tag("time").map(str::to_owned),
                });
            }
            "JOIN" => self.emit(Event::Join {
                nick: from,
                channel: message.param(0).to_owned(),
                mask: message
                    .prefix
                    .as_deref()
                    .and_then(|p| p.split_once('!'))
                    .map(|(_, mask)| mask.to_owned())
                    .unwrap_or_default(),
            }),
            // Cannot join: full, invite only, banned, bad key.
            "471" | "473" | "474" | "475" => {
                self.channels.remove(&irc_lowercase(message.param(1)));
                self.emit(Event::JoinRefused {
                    channel: message.param(1).to_owned(),
                    reason: message.params.last().cloned().unwrap_or_default(),
                })
            }
            "PART" => {
                if me {
                    self.channels.remove(&irc_lowercase(message.param(0)));
                }
                self.emit(Event::Part {
                    nick: from,
                    channel: message.param(0).to_owned(),
                    reason: message.param(1).to_owned(),
                })
            }
            "QUIT" => self.emit(Event::Quit {
                nick: from,
                reason: message.param(0).to_owned(),
            }),
            "KICK" => {
                if irc_lowercase(message.param(1)) == irc_lowercase(&own_nick) {
                    self.channels.remove(&irc_lowercase(message.param(0)));
                }
                self.emit(Event::Kick {
                    channel: message.param(0).to_owned(),
                    nick: message.param(1).to_owned(),
                    by: from,
                    reason: message.param(2).to_owned(),
                })
            }
            "NICK" => {
                let new = message.param(0).to_owned();
                if me {
                    self.state.send_modify(|s| s.nick = new.clone());
                }
                self.emit(Event::Nick { old: from, new })
            }
            "MODE" if message.param(0).starts_with(['#', '&', '!', '+']) => {
                self.emit(Event::Mode {
                    channel: message.param(0).to_owned(),
                    by: from,
                    changes: mode_changes(
                        message.param(1),
                        &message.params[2.min(message.params.len())..],
                    ),
                })
            }
            "TOPIC" => self.emit(Event::Topic {
                channel: message.param(0).to_owned(),
                topic: message.param(1).to_owned(),
                by: Some(from),
            }),
            "332" => self.emit(Event::Topic {
                channel: message.param(1).to_owned(),
                topic: message.param(2).to_owned(),
                by: None,
            }),
            "353" => {
                let nicks = message.params.last().cloned().unwrap_or_default();
                session
                    .names
                    .entry(message.param(2).to_owned())
                    .or_default()
                    .extend(nicks.split_whitespace().map(|n| {
                        let nick = n.trim_start_matches(|c| {
                            session.prefixes.iter().any(|(symbol, _)| *symbol == c)
                        });
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
            // `ISUPPORT`: the channel prefixes (`PREFIX=(ov)@+`).
            "005" => {
                let prefix = message
                    .params
                    .iter()
                    .find_map(|p| p.strip_prefix("PREFIX="));
                if let Some(table) = prefix.and_then(parse_prefix) {
                    session.prefixes = table;
                }
            }
            "366" => {
                let names = session.names.remove(message.param(1)).unwrap_or_default();
                let (nicks, prefixes) = names.into_iter().unzip();
                self.emit(Event::Names {
                    channel: message.param(1).to_owned(),
                    nicks,
                    prefixes,
                });
            }
            _ => {}
        }
    }

    fn handle_cap(&mut self, message: &Message, session: &mut Session, out: &mut Vec<Message>) {
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
                    out.push(Message::new("CAP", &["END"]));
                } else {
                    out.push(Message::new("CAP", &["REQ", &request.join(" ")]));
                }
            }
            "ACK" => {
                let acked = message.params.last().cloned().unwrap_or_default();
                if acked.split_whitespace().any(|c| c == "sasl") {
                    out.push(Message::new("AUTHENTICATE", &["PLAIN"]));
                } else {
                    out.push(Message::new("CAP", &["END"]));
                }
            }
            "NAK" => out.push(Message::new("CAP", &["END"])),
            _ => {}
        }
    }
}

/// The `PREFIX` of `ISUPPORT`, `(modes)symbols`, as symbol → mode pairs.
pub(super) fn parse_prefix(value: &str) -> Option<Vec<(char, char)>> {
    let (modes, symbols) = value.strip_prefix('(')?.split_once(')')?;
    (modes.chars().count() == symbols.chars().count())
        .then(|| symbols.chars().zip(modes.chars()).collect())
}

/// Splits `+ov-b nick nick mask` into changes with their arguments. Modes that take an
/// argument are the usual ones (list modes, prefixes, key; limit only when set).
pub(super) fn mode_changes(modes: &str, args: &[String]) -> Vec<(bool, char, Option<String>)> {
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
