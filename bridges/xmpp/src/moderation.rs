//! Moderation in rooms ([XEP-0425](https://xmpp.org/extensions/xep-0425.html)) ↔ redactions of
//! other people's messages. A room's moderator takes back someone's message by asking the room,
//! which tells every occupant; a Matrix moderator's redaction of someone else's message is
//! asked of the room the same way, as their occupant, where the room says it moderates.
//!
//! Two versions are in use: the first (`urn:xmpp:message-moderate:0`, on message fastening,
//! XEP-0422: what Prosody's `mod_muc_moderation` of 2023 speaks) and the current one
//! (`urn:xmpp:message-moderate:1`, inside a retraction). Both are read; a request is written in
//! the one the room advertises.

use tokio_xmpp::{
    jid::{BareJid, FullJid, Jid},
    minidom::Element,
    parsers::{
        disco::{DiscoInfoQuery, DiscoInfoResult},
        message::Message,
    },
};
use trestle_bridge::{BridgeError, NetworkResult};

use crate::{
    hub::{Hub, Kit, requests::Kind},
    ids::ChatId,
};

/// XEP-0425's first version.
const MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// XEP-0425's current version.
const MODERATE_1: &str = "urn:xmpp:message-moderate:1";
/// Message fastening (XEP-0422), which the first version applies to the message.
const FASTEN: &str = "urn:xmpp:fasten:0";
/// Retraction (XEP-0424) as the first version of moderation names it.
const RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// Retraction's current version.
const RETRACT_1: &str = "urn:xmpp:message-retract:1";

/// A room's announcement that a moderator took a message back.
#[derive(Debug, PartialEq, Eq)]
pub struct Moderated {
    /// The room's id (`stanza-id`) of the message.
    pub target: String,
    /// The moderator's occupant JID, when the room says.
    pub by: Option<FullJid>,
    /// Why, when they said.
    pub reason: Option<String>,
}

/// The moderation a message from a room announces, if it is one (either version; only a
/// retraction: the first version could also replace a message, which is not read).
pub fn moderated(message: &Message) -> Option<Moderated> {
    let (target, moderated) = message.payloads.iter().find_map(|p| {
        if p.is("apply-to", FASTEN) {
            let moderated = p.get_child("moderated", MODERATE_0)?;
            moderated.get_child("retract", RETRACT_0)?;
            Some((p.attr("id")?, moderated))
        } else if p.is("retract", RETRACT_1) {
            Some((p.attr("id")?, p.get_child("moderated", MODERATE_1)?))
        } else {
            None
        }
    })?;
    let reason = message
        .payloads
        .iter()
        .find(|p| p.is("retract", RETRACT_1))
        .and_then(|retract| retract.get_child("reason", RETRACT_1))
        .or_else(|| moderated.children().find(|c| c.name() == "reason"))
        .map(Element::text)
        .filter(|reason| !reason.trim().is_empty());
    Some(Moderated {
        target: target.to_owned(),
        by: moderated.attr("by").and_then(|by| FullJid::new(by).ok()),
        reason,
    })
}

/// The request to take back the message `target` of a room (its `stanza-id`) for `reason`, in
/// the version `moderate` names.
fn request(moderate: &str, target: &str, reason: Option<&str>) -> Element {
    let reason_in = |ns: &str| reason.map(|r| Element::builder("reason", ns).append(r).build());
    if moderate == MODERATE_1 {
        let mut request = Element::builder("moderate", MODERATE_1)
            .attr(tokio_xmpp::minidom::rxml::xml_ncname!("id").into(), target)
            .append(Element::builder("retract", RETRACT_1).build());
        if let Some(reason) = reason_in(MODERATE_1) {
            request = request.append(reason);
        }
        return request.build();
    }
    let mut moderate = Element::builder("moderate", MODERATE_0)
        .append(Element::builder("retract", RETRACT_0).build());
    if let Some(reason) = reason_in(MODERATE_0) {
        moderate = moderate.append(reason);
    }
    Element::builder("apply-to", FASTEN)
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("id").into(), target)
        .append(moderate.build())
        .build()
}

impl Hub {
    /// The version of moderation `room` says it does (its service discovery), if any.
    async fn moderation_of(&self, room: &BareJid) -> NetworkResult<Option<&'static str>> {
        let from = Jid::from(self.bot_jid().clone());
        let query = DiscoInfoQuery { node: None };
        let answer = self
            .ask(from, Jid::from(room.clone()), query.into())
            .await?;
        let info = answer.and_then(|answer| DiscoInfoResult::try_from(answer).ok());
        let features = info.map(|info| info.features).unwrap_or_default();
        Ok([MODERATE_1, MODERATE_0]
            .into_iter()
            .find(|version| features.iter().any(|f| f == version)))
    }

    /// Asks `room`, as `from` (a Matrix user's occupant), to take back the message `target`
    /// (the room's id of it) for `reason`. Unsupported where the room does not moderate; a
    /// refusal (they are no moderator there) is the error, with the room's reason.
    pub async fn moderate(
        &self,
        from: &FullJid,
        room: &BareJid,
        target: &str,
        reason: Option<&str>,
    ) -> NetworkResult<()> {
        let Some(version) = self.moderation_of(room).await? else {
            return Err(BridgeError::Unsupported("moderation in this room"));
        };
        let to = Jid::from(room.clone());
        let asked = request(version, target, reason);
        match self
            .request(Kind::Set, Jid::from(from.clone()), to, asked)
            .await
        {
            Some(Ok(_)) => Ok(()),
            Some(Err(why)) => Err(BridgeError::Forbidden(format!(
                "the XMPP room {room} refused to take the message back: {why}"
            ))),
            None => Err(BridgeError::Retriable(format!(
                "the XMPP room {room} did not answer a moderation request"
            ))),
        }
    }
}

/// A room announced that a moderator took a message back: the bot redacts it in the portal,
/// the reason saying who and why (`alice: spam`), as it does for kicks. A moderation by a
/// Matrix user's occupant was theirs from Matrix, redacted there already.
pub async fn room_moderated(
    bridge: &Kit,
    room: &BareJid,
    moderated: Moderated,
) -> NetworkResult<()> {
    let hub = bridge.network();
    let by = moderated.by.as_ref().map(|by| by.resource().to_string());
    if let Some(nick) = &by
        && hub.is_ours(room, nick)
        && *nick != hub.cfg.settings.bot_nick
    {
        return Ok(());
    }
    let chat = ChatId::Muc(room.clone());
    let target = hub.mapped_id(room, &moderated.target).await?;
    let Some(portal) = bridge.portal(&chat).await? else {
        return Ok(());
    };
    let Some(event_id) = bridge.event_for(&chat, &target).await? else {
        return Ok(());
    };
    let reason = match (by, moderated.reason) {
        (Some(by), Some(reason)) => format!("{by}: {reason}"),
        (Some(by), None) => by,
        (None, Some(reason)) => reason,
        (None, None) => String::new(),
    };
    let reason = Some(reason.as_str()).filter(|r| !r.is_empty());
    bridge
        .app()?
        .bot()
        .redact(&portal.room_id, &event_id, reason)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xml: &str) -> Message {
        let xml = format!(
            "<message xmlns='jabber:client' from='chat@muc.example.org' type='groupchat'>{xml}</message>"
        );
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn both_versions_of_a_moderation_are_read() {
        let first = message(
            "<apply-to xmlns='urn:xmpp:fasten:0' id='s1'>\
             <moderated xmlns='urn:xmpp:message-moderate:0' by='chat@muc.example.org/alice'>\
             <retract xmlns='urn:xmpp:message-retract:0'/><reason>spam</reason></moderated>\
             </apply-to>",
        );
        let by = FullJid::new("chat@muc.example.org/alice").unwrap();
        assert_eq!(
            moderated(&first),
            Some(Moderated {
                target: "s1".into(),
                by: Some(by.clone()),
                reason: Some("spam".into()),
            })
        );
        let current = message(
            "<retract xmlns='urn:xmpp:message-retract:1' id='s2'>\
             <moderated xmlns='urn:xmpp:message-moderate:1' by='chat@muc.example.org/alice'/>\
             <reason>rude</reason></retract>",
        );
        assert_eq!(
            moderated(&current),
            Some(Moderated {
                target: "s2".into(),
                by: Some(by),
                reason: Some("rude".into()),
            })
        );
        // A user's own retraction is no moderation.
        let own = message("<retract xmlns='urn:xmpp:message-retract:1' id='s3'/>");
        assert_eq!(moderated(&own), None);
    }

    #[test]
    fn requests_are_written_in_the_rooms_version() {
        let first = request(MODERATE_0, "s1", Some("spam"));
        assert!(first.is("apply-to", FASTEN));
        assert_eq!(first.attr("id"), Some("s1"));
        let moderate = first.get_child("moderate", MODERATE_0).unwrap();
        assert!(moderate.get_child("retract", RETRACT_0).is_some());
        assert_eq!(
            moderate.get_child("reason", MODERATE_0).unwrap().text(),
            "spam"
        );
        let current = request(MODERATE_1, "s2", None);
        assert!(current.is("moderate", MODERATE_1));
        assert_eq!(current.attr("id"), Some("s2"));
        assert!(current.get_child("retract", RETRACT_1).is_some());
        assert!(current.get_child("reason", MODERATE_1).is_none());
    }
}
