//! Who is in a room, both ways: an occupant leaving, kicked (status 307), banned (301) or
//! changing nick (303) in a room ([XEP-0045](https://xmpp.org/extensions/xep-0045.html) §7.2.10,
//! §9.1, §9.5), and a Matrix user kicking or banning someone in a portal, which becomes the
//! room's role or affiliation change, asked of the room as that user.
//!
//! The room decides who may: a kick asked by a Matrix user whose occupant is no moderator is
//! refused, and the portal is told so in a notice (the ghost comes back, since it is still in
//! the room).

use tokio_xmpp::{
    jid::{BareJid, FullJid, Jid},
    minidom::{Element, rxml::xml_ncname},
    parsers::presence::Presence,
};
use trestle::ruma::{UserId as MatrixUserId, events::room::message::RoomMessageEventContent};
use trestle_bridge::{MatrixMembership, NetworkResult, RemoteMembership};

use crate::{
    hub::{Hub, Kit, requests::Kind},
    ids::{self, ChatId, UserId},
    users::LOGIN_ID,
};

/// Multi-user chat's namespace for occupants' extra information in presences.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Multi-user chat's namespace for moderators' and admins' requests.
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";

/// Why an occupant is no longer there, as a room's `unavailable` presence says.
#[derive(Debug, PartialEq, Eq)]
pub enum Departure {
    /// They left.
    Left,
    /// They are the same occupant under a new nick (303).
    Renamed(String),
    /// A moderator kicked them (307).
    Kicked(Removal),
    /// An admin banned them (301).
    Banned(Removal),
}

/// Who removed an occupant and why, when the room tells.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// The nick of the moderator or admin who did.
    pub by: Option<String>,
    /// The reason they gave.
    pub reason: Option<String>,
}

impl Removal {
    /// The reason to show in Matrix: who did it, and why.
    fn matrix_reason(&self) -> Option<String> {
        match (&self.by, &self.reason) {
            (Some(by), Some(reason)) => Some(format!("{by}: {reason}")),
            (Some(by), None) => Some(format!("by {by}")),
            (None, reason) => reason.clone(),
        }
    }
}

/// Reads a room's `unavailable` presence. The parts are read as XML: xmpp-parsers keeps the
/// `<actor/>` of an item private.
pub fn departure(presence: &Presence) -> Departure {
    let Some(x) = presence.payloads.iter().find(|p| p.is("x", MUC_USER)) else {
        return Departure::Left;
    };
    let codes: Vec<&str> = x
        .children()
        .filter(|c| c.is("status", MUC_USER))
        .filter_map(|c| c.attr("code"))
        .collect();
    let item = x.get_child("item", MUC_USER);
    let removal = || Removal {
        by: item
            .and_then(|i| i.get_child("actor", MUC_USER))
            .and_then(|a| a.attr("nick"))
            .map(str::to_owned),
        reason: item
            .and_then(|i| i.get_child("reason", MUC_USER))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty()),
    };
    if codes.contains(&"301") {
        Departure::Banned(removal())
    } else if codes.contains(&"307") {
        Departure::Kicked(removal())
    } else if codes.contains(&"303")
        && let Some(nick) = item.and_then(|i| i.attr("nick"))
    {
        Departure::Renamed(nick.to_owned())
    } else {
        Departure::Left
    }
}

/// An occupant of `room` is no longer there (the bot's copy of their `unavailable` presence).
/// Their ghost leaves the portal, is kicked or banned by the bot (saying by whom and why), or,
/// on a nick change, stays where the ghost is the user's (the room shows real JIDs: their next
/// presence renames it) and leaves where it is the occupant's (the new nick is a new ghost). A
/// Matrix user's occupant removed by the room is removed from the portal the same way.
pub async fn left(
    bridge: &Kit,
    occupant: FullJid,
    jid: Option<BareJid>,
    presence: &Presence,
) -> NetworkResult<()> {
    let hub = bridge.network();
    let room = occupant.to_bare();
    let nick = occupant.resource().to_string();
    let chat = ChatId::Muc(room.clone());
    let departure = departure(presence);
    if nick == hub.cfg.settings.bot_nick {
        return Ok(());
    }
    if let Some(ours) = hub.nick_owner(&room, &nick) {
        return ours_removed(bridge, &chat, &ours, departure).await;
    }
    // A nick the bridge never saw join is none of its ghosts: the old nick of a Matrix user
    // who took a new one, or who left (their occupant is forgotten before it goes).
    let seen = hub.occupants(&room).iter().any(|(n, _)| *n == nick);
    let known = hub.occupant_left(&room, &nick);
    if !seen {
        return Ok(());
    }
    let Some(portal) = bridge.portal(&chat).await? else {
        return Ok(());
    };
    let user = ids::occupant_user(jid.or(known), occupant);
    match departure {
        Departure::Renamed(_) if matches!(user, UserId::Jid(_)) => Ok(()),
        Departure::Left | Departure::Renamed(_) => {
            bridge
                .remote_membership(&chat, &user, RemoteMembership::Leave(None))
                .await
        }
        // Removed in Matrix first (a Matrix user's kick, carried out): nothing to show.
        Departure::Kicked(_) | Departure::Banned(_)
            if !is_member(bridge, &portal.room_id, &user).await =>
        {
            Ok(())
        }
        Departure::Kicked(removal) => {
            let kick = RemoteMembership::Kick {
                by: None,
                reason: removal.matrix_reason(),
            };
            bridge.remote_membership(&chat, &user, kick).await
        }
        Departure::Banned(removal) => {
            let ghost = bridge.ghost(&user)?;
            bridge
                .app()?
                .bot()
                .ban(
                    &portal.room_id,
                    ghost.user_id(),
                    removal.matrix_reason().as_deref(),
                )
                .await?;
            Ok(())
        }
    }
}

/// Whether the ghost of `user` is in the portal now.
async fn is_member(bridge: &Kit, room_id: &trestle::ruma::RoomId, user: &UserId) -> bool {
    let Ok(ghost) = bridge.ghost(user) else {
        return false;
    };
    bridge
        .member_content(room_id, ghost.user_id())
        .await
        .is_some_and(|c| c["membership"] == "join")
}

/// A Matrix user's occupant was kicked or banned by the room: the bot does the same to them in
/// the portal (they could not speak there any more). Leaving is their own doing, and a nick
/// change theirs too: nothing to show.
async fn ours_removed(
    bridge: &Kit,
    chat: &ChatId,
    ours: &FullJid,
    departure: Departure,
) -> NetworkResult<()> {
    let (banned, removal) = match departure {
        Departure::Kicked(removal) => (false, removal),
        Departure::Banned(removal) => (true, removal),
        Departure::Left | Departure::Renamed(_) => return Ok(()),
    };
    let hub = bridge.network();
    let ChatId::Muc(room) = chat else {
        return Ok(());
    };
    hub.forget_ours(room, ours);
    let (Some(portal), Some(user)) = (
        bridge.portal(chat).await?,
        ids::matrix_user(&ours.to_bare(), hub.server_name()?),
    ) else {
        return Ok(());
    };
    let Ok(user) = MatrixUserId::parse(user) else {
        return Ok(());
    };
    let bot = bridge.app()?.bot();
    let reason = removal.matrix_reason();
    if banned {
        bot.ban(&portal.room_id, &user, reason.as_deref()).await?;
    } else {
        bot.kick(&portal.room_id, &user, reason.as_deref()).await?;
    }
    Ok(())
}

/// What a Matrix user asks of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Role `none`, by nick.
    Kick,
    /// Affiliation `outcast`, by real JID.
    Ban,
    /// Affiliation `none`, by real JID.
    Unban,
}

impl Ask {
    fn verb(self) -> &'static str {
        match self {
            Ask::Kick => "kick",
            Ask::Ban => "ban",
            Ask::Unban => "unban",
        }
    }
}

/// A Matrix user kicked, banned or unbanned someone in a room's portal: an XMPP user's ghost
/// (by their nick for a kick, their real JID for a ban), or another Matrix user (banned by
/// their JID on the component; a kick is their leaving, done by the caller). Asked of the room
/// as the Matrix user who did it, so that the room's rules decide; what it refuses is told in
/// the portal. The bridge's own kicks and bans (carrying out XMPP's) go nowhere.
pub async fn matrix_removal(bridge: &Kit, change: &MatrixMembership<'_, Hub>) -> NetworkResult<()> {
    let hub = bridge.network();
    let ChatId::Muc(room) = &change.portal.chat else {
        return Ok(());
    };
    if bridge.app()?.is_own_user(change.sender) || change.sender == change.user {
        return Ok(());
    }
    let ask = match (change.membership.as_str(), change.previous.as_deref()) {
        ("ban", _) => Ask::Ban,
        ("leave", Some("ban")) => Ask::Unban,
        ("leave", _) => Ask::Kick,
        _ => return Ok(()),
    };
    let (name, nick, jid) = match &change.remote {
        Some(UserId::Occupant(occupant)) if occupant.to_bare() == *room => (
            occupant.resource().to_string(),
            Some(occupant.resource().to_string()),
            hub.real_jid(room, occupant.resource().as_str()),
        ),
        Some(UserId::Occupant(occupant)) => (occupant.to_string(), None, None),
        Some(UserId::Jid(jid)) => (
            jid.to_string(),
            hub.nick_of_jid(room, jid),
            Some(jid.clone()),
        ),
        // A Matrix user: kicked is gone (the caller leaves for them); banned is banned.
        None => {
            let jid = hub.user_jid(change.user.as_str())?;
            (change.user.to_string(), None, Some(jid))
        }
    };
    if change.remote.is_none() && ask == Ask::Kick {
        return Ok(());
    }
    let item = match (ask, &nick, &jid) {
        (Ask::Kick, Some(nick), _) => Element::builder("item", MUC_ADMIN)
            .attr(xml_ncname!("nick").into(), nick.as_str())
            .attr(xml_ncname!("role").into(), "none"),
        (Ask::Kick, None, _) => return Ok(()),
        (Ask::Ban | Ask::Unban, _, Some(jid)) => Element::builder("item", MUC_ADMIN)
            .attr(xml_ncname!("jid").into(), jid.as_str())
            .attr(
                xml_ncname!("affiliation").into(),
                if ask == Ask::Ban { "outcast" } else { "none" },
            ),
        (Ask::Ban | Ask::Unban, _, None) => {
            let text = format!(
                "{name} is {}ned here only: the XMPP room {room} does not show the bridge their address, which an XMPP {} needs.",
                ask.verb(),
                ask.verb()
            );
            return notice(bridge, change.portal, &text).await;
        }
    };
    let item = match &change.reason {
        Some(reason) => item.append(Element::builder("reason", MUC_ADMIN).append(reason.as_str())),
        None => item,
    };
    let query = Element::builder("query", MUC_ADMIN)
        .append(item.build())
        .build();
    let from = match bridge.connection(change.sender, LOGIN_ID) {
        Some(puppet) => puppet.full.clone(),
        None => hub.bot_jid().clone(),
    };
    // The room's answer may take a while: waited for aside.
    let bridge = bridge.clone();
    let portal = change.portal.clone();
    let sender = change.sender.clone();
    let remote = change.remote.clone();
    let room = room.clone();
    tokio::spawn(async move {
        let to = Jid::from(room.clone());
        let answer = bridge
            .network()
            .request(Kind::Set, Jid::from(from), to, query)
            .await;
        let refused = match answer {
            Some(Ok(_)) => return,
            Some(Err(why)) => why,
            None => "no answer".to_owned(),
        };
        let text = format!(
            "The XMPP room {room} refused {sender}'s {} of {name}: {refused}.",
            ask.verb()
        );
        if let Err(error) = notice(&bridge, &portal, &text).await {
            tracing::warn!(%error, "could not tell a portal of a refusal");
        }
        // Still in the room: the ghost comes back.
        if let (Ask::Kick, Some(user)) = (ask, remote)
            && let Err(error) = bridge
                .remote_membership(&portal.chat, &user, RemoteMembership::Join)
                .await
        {
            tracing::warn!(%error, "a ghost kicked in vain could not come back");
        }
    });
    Ok(())
}

/// The bot's notice in a portal.
async fn notice(
    bridge: &Kit,
    portal: &trestle_bridge::PortalRef<Hub>,
    text: &str,
) -> NetworkResult<()> {
    bridge
        .app()?
        .bot()
        .send(
            &portal.room_id,
            &RoomMessageEventContent::notice_plain(text),
        )
        .await?;
    Ok(())
}

impl Hub {
    /// The room's nick of the user whose real JID is `jid`, when the room shows it.
    fn nick_of_jid(&self, room: &BareJid, jid: &BareJid) -> Option<String> {
        self.occupants(room)
            .into_iter()
            .find(|(_, real)| real.as_ref() == Some(jid))
            .map(|(nick, _)| nick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(x: &str) -> Presence {
        let xml = format!(
            "<presence xmlns='jabber:client' type='unavailable' from='room@conf.example/carol' \
             to='matrix.example/bridge'>{x}</presence>"
        );
        Presence::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn departures_are_told_apart_by_their_status_codes() {
        let x = |codes: &str, item: &str| {
            unavailable(&format!("<x xmlns='{MUC_USER}'>{item}{codes}</x>"))
        };
        assert_eq!(departure(&unavailable("")), Departure::Left);
        let renamed = x(
            "<status code='303'/>",
            "<item affiliation='none' role='participant' nick='caroline'/>",
        );
        assert_eq!(departure(&renamed), Departure::Renamed("caroline".into()));
        let kicked = x(
            "<status code='307'/>",
            "<item affiliation='none' role='none'><actor nick='alice'/><reason>spam</reason></item>",
        );
        let by_alice = Removal {
            by: Some("alice".into()),
            reason: Some("spam".into()),
        };
        assert_eq!(by_alice.matrix_reason().as_deref(), Some("alice: spam"));
        assert_eq!(departure(&kicked), Departure::Kicked(by_alice));
        let banned = x(
            "<status code='301'/>",
            "<item affiliation='outcast' role='none'/>",
        );
        assert_eq!(departure(&banned), Departure::Banned(Removal::default()));
        assert_eq!(Removal::default().matrix_reason(), None);
    }
}
