//! The stanzas the bridge sends, built, and the parts it reads of those it receives.

use std::collections::BTreeSet;

use tokio_xmpp::{
    jid::{BareJid, FullJid, Jid},
    minidom::{Element, rxml::xml_ncname},
    parsers::{
        data_forms::{DataForm, DataFormType},
        delay::Delay,
        iq::Iq,
        message::{Id, Lang, Message},
        message_correct::Replace,
        muc::{
            Muc,
            muc::History,
            user::{MucUser, Status},
        },
        presence::Presence,
        reactions::{Reaction, Reactions},
        stanza_id::{OriginId, StanzaId},
    },
};

/// Message retraction ([XEP-0424](https://xmpp.org/extensions/xep-0424.html)).
const RETRACT: &str = "urn:xmpp:message-retract:1";

/// Message replies ([XEP-0461](https://xmpp.org/extensions/xep-0461.html)).
const REPLY: &str = "urn:xmpp:reply:0";

/// The namespace of MUC occupants' extra information, which marks private messages sent
/// through a room.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Joins `room` as `nick`, asking for no history: what was said before the portal existed is
/// not replayed into it.
pub fn join(from: &FullJid, room: &BareJid, nick: &str) -> Option<Presence> {
    let occupant = room.with_resource_str(nick).ok()?;
    let mut muc = Muc::new();
    muc.history = Some(History {
        maxchars: None,
        maxstanzas: Some(0),
        seconds: None,
        since: None,
    });
    Some(
        Presence::available()
            .with_from(from.clone())
            .with_to(occupant)
            .with_payload(muc),
    )
}

/// Leaves `room`.
pub fn leave(from: &FullJid, room: &BareJid, nick: &str) -> Option<Presence> {
    let occupant = room.with_resource_str(nick).ok()?;
    Some(
        Presence::unavailable()
            .with_from(from.clone())
            .with_to(occupant),
    )
}

/// A text message with our id (also as XEP-0359 `origin-id`, which rooms keep).
pub fn text(message: Message, from: &FullJid, id: &str, body: &str) -> Message {
    let mut message = message
        .with_body(Lang::new(), body.to_owned())
        .with_payload(OriginId { id: id.to_owned() });
    message.from = Some(Jid::from(from.clone()));
    message.id = Some(Id(id.to_owned()));
    message
}

/// A message to a room.
pub fn groupchat(from: &FullJid, room: &BareJid, id: &str, body: &str) -> Message {
    text(Message::groupchat(Jid::from(room.clone())), from, id, body)
}

/// A message to one user.
pub fn chat(from: &FullJid, to: &BareJid, id: &str, body: &str) -> Message {
    text(Message::chat(Jid::from(to.clone())), from, id, body)
}

/// A correction ([XEP-0308](https://xmpp.org/extensions/xep-0308.html)) of the message
/// `target`: the same kind of message, with the new text.
pub fn correction(message: Message, target: &str) -> Message {
    message.with_payload(Replace {
        id: Id(target.to_owned()),
    })
}

/// A retraction ([XEP-0424](https://xmpp.org/extensions/xep-0424.html)) of our message
/// `target`, with a body for clients that do not know retractions (marked as a fallback) and a
/// hint to archive it.
pub fn retraction(message: Message, from: &FullJid, id: &str, target: &str) -> Message {
    let retract = Element::builder("retract", RETRACT)
        .attr(xml_ncname!("id").into(), target)
        .build();
    let fallback = Element::builder("fallback", "urn:xmpp:fallback:0")
        .attr(xml_ncname!("for").into(), RETRACT)
        .build();
    let store = Element::builder("store", "urn:xmpp:hints").build();
    let mut message = text(message, from, id, "/me retracted a message");
    message.payloads.extend([retract, fallback, store]);
    message
}

/// The message as a reply ([XEP-0461](https://xmpp.org/extensions/xep-0461.html)) to the
/// message `target` (in a room, the room's id of it).
pub fn reply(mut message: Message, target: &str) -> Message {
    let reply = Element::builder("reply", REPLY)
        .attr(xml_ncname!("id").into(), target)
        .build();
    message.payloads.push(reply);
    message
}

/// A sender's reactions ([XEP-0444](https://xmpp.org/extensions/xep-0444.html)) to the
/// message `target`: the whole set (none takes them all back), with a hint to archive it.
pub fn reactions(
    message: Message,
    from: &FullJid,
    id: &str,
    target: &str,
    emojis: &BTreeSet<String>,
) -> Message {
    let reactions = Reactions {
        id: target.to_owned(),
        reactions: emojis
            .iter()
            .map(|emoji| Reaction {
                emoji: emoji.clone(),
            })
            .collect(),
    };
    let store = Element::builder("store", "urn:xmpp:hints").build();
    let mut message = message.with_payload(reactions);
    message.payloads.push(store);
    message.from = Some(Jid::from(from.clone()));
    message.id = Some(Id(id.to_owned()));
    message
}

/// A room's new subject.
pub fn subject(from: &FullJid, room: &BareJid, subject: &str) -> Message {
    let mut message = Message::groupchat(Jid::from(room.clone()));
    message.from = Some(Jid::from(from.clone()));
    message.subjects.insert(Lang::new(), subject.to_owned());
    message
}

/// Accepts the default configuration of a room the bridge just created, which the server
/// keeps locked until its owner does ([XEP-0045 §10.1.2](https://xmpp.org/extensions/xep-0045.html#createroom-instant)).
pub fn instant_room(from: &FullJid, room: &BareJid, id: &str) -> Iq {
    let form = DataForm::new(
        DataFormType::Submit,
        "http://jabber.org/protocol/muc#roomconfig",
        vec![],
    );
    let query = Element::builder("query", "http://jabber.org/protocol/muc#owner")
        .append(Element::from(form))
        .build();
    Iq::Set {
        from: Some(Jid::from(from.clone())),
        to: Some(Jid::from(room.clone())),
        id: id.to_owned(),
        payload: query,
    }
}

/// An id for a stanza (or a message that came without one): unique enough for the message
/// map and the server.
pub fn fresh_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("trestle-{}", now.as_nanos())
}

/// The message's body, if it has one.
pub fn body(message: &Message) -> Option<String> {
    message.get_best_body_cloned(vec![]).map(|(_, body)| body)
}

/// The message's subject, if it sets one (an empty subject clears it).
pub fn subject_of(message: &Message) -> Option<String> {
    message
        .get_best_subject_cloned(vec![])
        .map(|(_, subject)| subject)
}

/// The id the sender gave the message (XEP-0359 `origin-id` first, which a room keeps when it
/// rewrites the `id` attribute).
pub fn message_id(message: &Message) -> Option<String> {
    let origin = message
        .payloads
        .iter()
        .find_map(|p| OriginId::try_from(p.clone()).ok())
        .map(|o| o.id);
    origin.or_else(|| message.id.as_ref().map(|id| id.0.clone()))
}

/// The id `room` gave the message (XEP-0359 `stanza-id`): the one its archive knows it by.
/// Only the room's own counts: a sender could put any `stanza-id` in.
pub fn room_stanza_id(message: &Message, room: &BareJid) -> Option<String> {
    message
        .payloads
        .iter()
        .filter_map(|p| StanzaId::try_from(p.clone()).ok())
        .find(|s| s.by.as_str() == room.as_str())
        .map(|s| s.id)
}

/// Whether `id` is one the bridge gave: a Matrix event's id (they start with `$`, which
/// XMPP servers' ids do not).
pub fn is_matrix_id(id: &str) -> bool {
    id.starts_with('$')
}

/// The sender's real JID in a message from a room, when the room tells it (non-anonymous
/// rooms, in their archives).
pub fn occupant_jid(message: &Message) -> Option<BareJid> {
    message
        .payloads
        .iter()
        .find_map(|p| MucUser::try_from(p.clone()).ok())
        .and_then(|user| {
            user.items
                .iter()
                .find_map(|item| item.jid.clone().map(FullJid::into_bare))
        })
}

/// The message a correction replaces, if it is one.
pub fn replaces(message: &Message) -> Option<String> {
    message
        .payloads
        .iter()
        .find_map(|p| Replace::try_from(p.clone()).ok())
        .map(|r| r.id.0)
}

/// The message a retraction retracts, if it is one.
pub fn retracts(message: &Message) -> Option<String> {
    payload_id(message, "retract", RETRACT)
}

/// The message a reply replies to, if it is one.
pub fn replies_to(message: &Message) -> Option<String> {
    payload_id(message, "reply", REPLY)
}

/// The `id` of the message's payload `name` in `ns`: the message that payload is about.
fn payload_id(message: &Message, name: &str, ns: &str) -> Option<String> {
    message
        .payloads
        .iter()
        .find(|p| p.is(name, ns))
        .and_then(|p| p.attr("id"))
        .map(str::to_owned)
}

/// The message's reactions, if it is a reactions message: the message they are to and the
/// sender's whole set.
pub fn reactions_of(message: &Message) -> Option<(String, BTreeSet<String>)> {
    let reactions = message
        .payloads
        .iter()
        .find_map(|p| Reactions::try_from(p.clone()).ok())?;
    let emojis = reactions.reactions.into_iter().map(|r| r.emoji).collect();
    Some((reactions.id, emojis))
}

/// Whether the message was delayed (history or offline storage, XEP-0203).
pub fn is_delayed(message: &Message) -> bool {
    message
        .payloads
        .iter()
        .any(|p| Delay::try_from(p.clone()).is_ok())
}

/// Whether a private message came through a room (from an occupant, not from a user's own
/// JID).
pub fn through_room(message: &Message) -> bool {
    message.payloads.iter().any(|p| p.is("x", MUC_USER))
}

/// A room's presence, read: the occupant's real JID when the room tells it, and its status
/// codes.
pub fn occupant(presence: &Presence) -> (Option<BareJid>, Vec<Status>) {
    presence
        .payloads
        .iter()
        .find_map(|p| MucUser::try_from(p.clone()).ok())
        .map(|user| {
            let jid = user
                .items
                .iter()
                .find_map(|item| item.jid.clone().map(FullJid::into_bare));
            (jid, user.status)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_our_id_and_corrections_their_target() {
        let from = FullJid::new("bob@matrix.example/matrix").unwrap();
        let room = BareJid::new("room@conference.example").unwrap();
        let sent = groupchat(&from, &room, "$event", "hello");
        assert_eq!(body(&sent).as_deref(), Some("hello"));
        assert_eq!(message_id(&sent).as_deref(), Some("$event"));
        assert!(replaces(&sent).is_none());
        let fixed = correction(groupchat(&from, &room, "$edit", "hullo"), "$event");
        assert_eq!(replaces(&fixed).as_deref(), Some("$event"));
        assert!(!is_delayed(&fixed) && !through_room(&fixed));
        let gone = retraction(
            Message::chat(Jid::from(room.clone())),
            &from,
            "$r",
            "$event",
        );
        assert_eq!(retracts(&gone).as_deref(), Some("$event"));
        assert!(retracts(&sent).is_none());
        let presence = join(&from, &room, "Bob").unwrap();
        assert_eq!(
            presence.to.map(|j| j.to_string()).as_deref(),
            Some("room@conference.example/Bob")
        );
        assert!(join(&from, &room, "").is_none());
    }

    #[test]
    fn an_empty_subject_is_a_subject() {
        let xml = "<message xmlns='jabber:client' type='groupchat' to='a@b/c' \
                   from='room@conference.example'><subject/></message>";
        let message = Message::try_from(xml.parse::<Element>().unwrap()).unwrap();
        assert_eq!(subject_of(&message).as_deref(), Some(""));
        assert!(body(&message).is_none());
    }
}
