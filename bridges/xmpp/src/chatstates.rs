//! Typing and reading, both ways: chat states ([XEP-0085](https://xmpp.org/extensions/xep-0085.html))
//! are Matrix typing notifications, and `displayed` chat markers
//! ([XEP-0333](https://xmpp.org/extensions/xep-0333.html)) are Matrix read receipts.
//!
//! A marker names the message read by the id its reader knows it by: in a room the room's
//! (XEP-0359 `stanza-id`), in a direct chat the sender's. Those are the ids the kit's message
//! map holds (see `events`), so a marker is a read receipt on the mapped event and a receipt
//! is a marker naming the mapped message.

use tokio_xmpp::{
    jid::{FullJid, Jid},
    parsers::{
        chatstates::ChatState,
        displayed_markers::{Displayed, Markable},
        message::{Id, Message},
    },
};
use trestle_bridge::{MatrixReceipt, MatrixTyping, NetworkResult, Via};

use crate::{
    hub::{Hub, Kit, Puppet},
    ids::{ChatId, UserId},
    xmpp::stanzas,
};

/// What a message says of its sender's typing and reading, if anything.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// Their chat state: typing (`composing`) or not (any other state).
    pub typing: Option<bool>,
    /// The message they marked displayed, by the id they name it by.
    pub displayed: Option<String>,
}

impl Signals {
    /// What `message` carries.
    pub fn of(message: &Message) -> Signals {
        let mut signals = Signals::default();
        for payload in &message.payloads {
            if let Ok(state) = ChatState::try_from(payload.clone()) {
                signals.typing = Some(state == ChatState::Composing);
            } else if let Ok(marker) = Displayed::try_from(payload.clone()) {
                signals.displayed = Some(marker.id.0);
            }
        }
        signals
    }

    /// Whether there is anything.
    pub fn any(&self) -> bool {
        self.typing.is_some() || self.displayed.is_some()
    }
}

/// XMPP into Matrix: the sender's typing shown by their ghost (a stop only when a start was
/// shown, since every message of most clients says `active`), and the message they marked
/// displayed read by it.
pub async fn incoming(
    bridge: &Kit,
    chat: &ChatId,
    sender: &UserId,
    signals: Signals,
) -> NetworkResult<()> {
    if let Some(typing) = signals.typing {
        let key = format!("{chat} {sender}");
        let was = {
            let mut typers = bridge.network().typing_lock();
            if typing {
                !typers.insert(key)
            } else {
                typers.remove(&key)
            }
        };
        if typing != was {
            bridge.remote_typing(chat, sender, typing).await?;
        }
    }
    if let Some(up_to) = signals.displayed {
        let up_to = match chat {
            ChatId::Muc(room) => bridge.network().mapped_id(room, &up_to).await?,
            ChatId::Direct { .. } => up_to,
        };
        let shown = bridge.remote_read(chat, sender, &up_to).await?;
        tracing::debug!(%chat, %sender, %up_to, shown, "read up to");
    }
    Ok(())
}

/// A message from `from` to the chat, carrying nothing yet.
fn bare_message(chat: &ChatId, from: &FullJid) -> Message {
    let mut message = match chat {
        ChatId::Muc(room) => Message::groupchat(Jid::from(room.clone())),
        ChatId::Direct { remote, .. } => Message::chat(Jid::from(remote.clone())),
    };
    message.from = Some(Jid::from(from.clone()));
    message.id = Some(Id(stanzas::fresh_id()));
    message
}

/// The Matrix user's own JID, when they speak for themselves: the relay types and reads for
/// nobody.
fn own<'a>(via: &'a Via<'_, Hub>) -> Option<&'a Puppet> {
    match via {
        Via::Puppet { connection, .. } => Some(connection),
        _ => None,
    }
}

impl Hub {
    /// Matrix into XMPP: a Matrix user typing is `composing` from their JID, stopping is
    /// `active` (they are still there; `paused` would read as a draft left half-written).
    pub(crate) fn send_typing(&self, typing: &MatrixTyping<'_, Hub>) {
        let Some(puppet) = own(&typing.via) else {
            return;
        };
        let state = if typing.typing {
            ChatState::Composing
        } else {
            ChatState::Active
        };
        self.send(bare_message(&typing.portal.chat, &puppet.full).with_payload(state));
    }

    /// Matrix into XMPP: a Matrix user's read receipt is a `displayed` marker from their JID,
    /// naming the message by the id its chat knows it by (the room's, in a room).
    pub(crate) async fn send_displayed(
        &self,
        receipt: &MatrixReceipt<'_, Hub>,
    ) -> NetworkResult<()> {
        let Some(puppet) = own(&receipt.via) else {
            return Ok(());
        };
        let chat = &receipt.portal.chat;
        let id = match chat {
            ChatId::Muc(room) => self.room_id_of(room, &receipt.up_to).await?,
            ChatId::Direct { .. } => receipt.up_to.clone(),
        };
        let marker = Displayed { id: Id(id) };
        self.send(bare_message(chat, &puppet.full).with_payload(marker));
        Ok(())
    }
}

/// The message, asking for chat markers: clients mark displayed only what asks (XEP-0333).
pub fn markable(message: Message) -> Message {
    message.with_payload(Markable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::minidom::Element;

    fn message(payloads: &str) -> Message {
        let xml = format!(
            "<message xmlns='jabber:client' type='chat' to='bob@matrix.example' \
             from='alice@example/phone'>{payloads}</message>"
        );
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn chat_states_and_markers_are_read() {
        let typing = message("<composing xmlns='http://jabber.org/protocol/chatstates'/>");
        assert_eq!(
            Signals::of(&typing),
            Signals {
                typing: Some(true),
                displayed: None
            }
        );
        let done = message(
            "<body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
             <displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>",
        );
        let signals = Signals::of(&done);
        assert_eq!(signals.typing, Some(false));
        assert_eq!(signals.displayed.as_deref(), Some("m1"));
        assert!(!Signals::of(&message("<body>plain</body>")).any());
    }
}
