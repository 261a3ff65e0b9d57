//! The bridge's remote ids (rooms, direct chats, users) and the names they take on each side:
//! Matrix localparts for XMPP rooms and users, JIDs for Matrix users.

use std::{fmt, str::FromStr};

use tokio_xmpp::jid::{BareJid, FullJid};
use trestle_bridge::{MessageContent, MessageKind};

/// The prefix of every localpart the bridge owns (its ghosts and its portals' aliases).
pub const PREFIX: &str = "xmpp_";

/// A chat: a multi-user chat room, or the direct conversation of a Matrix user with a JID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChatId {
    /// `muc:room@service`.
    Muc(BareJid),
    /// `dm:@user:server jid@domain`: a Matrix user and an XMPP user.
    Direct {
        /// The Matrix side's user id.
        user: String,
        /// The XMPP side's bare JID.
        remote: BareJid,
    },
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatId::Muc(room) => write!(f, "muc:{room}"),
            // Neither a Matrix user id nor a JID holds a space.
            ChatId::Direct { user, remote } => write!(f, "dm:{user} {remote}"),
        }
    }
}

/// An id that is not one of the bridge's.
#[derive(Debug, thiserror::Error)]
#[error("not an XMPP bridge id: {0:?}")]
pub struct BadId(String);

impl FromStr for ChatId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, BadId> {
        let bad = || BadId(s.to_owned());
        if let Some(room) = s.strip_prefix("muc:") {
            return BareJid::from_str(room).map(ChatId::Muc).map_err(|_| bad());
        }
        let (user, remote) = s
            .strip_prefix("dm:")
            .and_then(|rest| rest.split_once(' '))
            .ok_or_else(bad)?;
        Ok(ChatId::Direct {
            user: user.to_owned(),
            remote: BareJid::from_str(remote).map_err(|_| bad())?,
        })
    }
}

/// A remote user: by their real JID when the room shows it (or they wrote directly), else by
/// their occupant JID in a room (`room@service/nick`), which is all a semi-anonymous room
/// tells.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserId {
    /// A bare JID: `alice@example.org`.
    Jid(BareJid),
    /// An occupant of a room: `room@service/nick`.
    Occupant(FullJid),
}

impl UserId {
    /// The name to show for the user: the nick of an occupant, the JID of anyone else.
    pub fn name(&self) -> String {
        match self {
            UserId::Jid(jid) => jid.to_string(),
            UserId::Occupant(occupant) => occupant.resource().to_string(),
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserId::Jid(jid) => jid.fmt(f),
            UserId::Occupant(occupant) => occupant.fmt(f),
        }
    }
}

impl FromStr for UserId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, BadId> {
        // A bare JID never holds a `/`; an occupant JID always does.
        if s.contains('/') {
            FullJid::from_str(s)
                .map(UserId::Occupant)
                .map_err(|_| BadId(s.to_owned()))
        } else {
            BareJid::from_str(s)
                .map(UserId::Jid)
                .map_err(|_| BadId(s.to_owned()))
        }
    }
}

/// Escapes text into a Matrix localpart: lower-case ASCII letters, digits, `.` and `-` stay,
/// every other byte of its UTF-8 (`_` and `=` included) becomes `=xx`, so that `_` can
/// separate escaped parts. [`unescape`] reverses it.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => out.push(char::from(byte)),
            other => out.push_str(&format!("={other:02x}")),
        }
    }
    out
}

/// Reverses [`escape`]; `None` for text [`escape`] cannot have made.
pub fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => {
                bytes.push(byte);
                rest = tail;
            }
            b'=' if tail.len() >= 2 => {
                let hex = std::str::from_utf8(&tail[..2]).ok()?;
                if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            }
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

/// The alias localpart of a room's portal: `xmpp_<room>_<service>`, each part escaped.
pub fn room_alias(room: &BareJid) -> String {
    let node = room.node().map(|n| n.as_str()).unwrap_or_default();
    format!(
        "{PREFIX}{}_{}",
        escape(node),
        escape(room.domain().as_str())
    )
}

/// The room an alias localpart names: the inverse of [`room_alias`].
pub fn room_for_alias(localpart: &str) -> Option<BareJid> {
    let (node, service) = localpart.strip_prefix(PREFIX)?.split_once('_')?;
    let (node, service) = (unescape(node)?, unescape(service)?);
    if node.is_empty() || service.is_empty() {
        return None;
    }
    BareJid::new(&format!("{node}@{service}")).ok()
}

/// The ghost localpart of a remote user: `xmpp_` and their JID, escaped.
pub fn ghost_localpart(user: &UserId) -> String {
    format!("{PREFIX}{}", escape(&user.to_string()))
}

/// The remote user a ghost localpart stands for: the inverse of [`ghost_localpart`].
pub fn user_for_ghost(localpart: &str) -> Option<UserId> {
    unescape(localpart.strip_prefix(PREFIX)?)?.parse().ok()
}

/// The characters XEP-0106 escapes in a JID's node, with their escapes.
const NODE_ESCAPES: [(char, &str); 10] = [
    ('\\', "\\5c"),
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
];

/// The JID of a Matrix user on the component `domain`: the node is the localpart for a user
/// of `server_name` (the bridge's homeserver), `localpart:server` for anyone else, escaped
/// the XEP-0106 way. [`matrix_user`] reverses it.
pub fn user_jid(user: &str, server_name: &str, domain: &str) -> Option<BareJid> {
    let (localpart, server) = user.strip_prefix('@')?.split_once(':')?;
    let name = if server == server_name {
        localpart.to_owned()
    } else {
        format!("{localpart}:{server}")
    };
    let mut node = String::with_capacity(name.len());
    for c in name.chars() {
        match NODE_ESCAPES.iter().find(|(from, _)| *from == c) {
            Some((_, escaped)) => node.push_str(escaped),
            None => node.push(c),
        }
    }
    BareJid::new(&format!("{node}@{domain}")).ok()
}

/// The Matrix user whose JID `jid` is on the component (see [`user_jid`]).
pub fn matrix_user(jid: &BareJid, server_name: &str) -> Option<String> {
    let node = jid.node()?.as_str();
    let mut name = String::with_capacity(node.len());
    let mut rest = node;
    while let Some(c) = rest.chars().next() {
        if let Some((from, escaped)) = NODE_ESCAPES.iter().find(|(_, e)| rest.starts_with(e)) {
            name.push(*from);
            rest = &rest[escaped.len()..];
        } else {
            name.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if name.contains(':') {
        Some(format!("@{name}"))
    } else {
        Some(format!("@{name}:{server_name}"))
    }
}

/// The ghost of an occupant: by real JID when the room shows it.
pub fn occupant_user(jid: Option<BareJid>, occupant: FullJid) -> UserId {
    match jid {
        Some(jid) => UserId::Jid(jid),
        None => UserId::Occupant(occupant),
    }
}

/// A message's content: `/me` (XEP-0245) is an emote.
pub fn content(body: String) -> MessageContent {
    match body.strip_prefix("/me ") {
        Some(action) => MessageContent::text(action).kind(MessageKind::Emote),
        None => MessageContent::text(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_and_user_ids_round_trip() {
        for chat in [
            ChatId::Muc(BareJid::new("room@conference.example.org").unwrap()),
            ChatId::Direct {
                user: "@bob:example.org".into(),
                remote: BareJid::new("alice@example.org").unwrap(),
            },
        ] {
            assert_eq!(chat.to_string().parse::<ChatId>().unwrap(), chat);
        }
        for user in ["alice@example.org", "room@conference.example.org/Al Ice"] {
            assert_eq!(user.parse::<UserId>().unwrap().to_string(), user);
        }
        assert!("dm:nospace".parse::<ChatId>().is_err());
        assert!("irc:x".parse::<ChatId>().is_err());
    }

    #[test]
    fn aliases_and_ghosts_round_trip_through_escaping() {
        let room = BareJid::new("my_room@conference.example.org").unwrap();
        let alias = room_alias(&room);
        assert_eq!(alias, "xmpp_my=5froom_conference.example.org");
        assert_eq!(room_for_alias(&alias), Some(room));
        assert_eq!(room_for_alias("xmpp_room"), None);
        assert_eq!(room_for_alias("xmpp_r=ZZ_x"), None);
        assert_eq!(room_for_alias("irc_room_service"), None);

        let occupant = UserId::Occupant(FullJid::new("room@conf.example/Al Ice").unwrap());
        let ghost = ghost_localpart(&occupant);
        assert_eq!(ghost, "xmpp_room=40conf.example=2f=41l=20=49ce");
        assert_eq!(user_for_ghost(&ghost), Some(occupant));
        let jid = UserId::Jid(BareJid::new("alice@example.org").unwrap());
        assert_eq!(user_for_ghost(&ghost_localpart(&jid)), Some(jid));
        assert_eq!(user_for_ghost("xmpp_UPPER"), None);
    }

    #[test]
    fn matrix_users_have_jids_on_the_component() {
        let local = user_jid("@bob:example.org", "example.org", "matrix.example.org").unwrap();
        assert_eq!(local.to_string(), "bob@matrix.example.org");
        assert_eq!(
            matrix_user(&local, "example.org").as_deref(),
            Some("@bob:example.org")
        );
        let remote = user_jid("@a/b:other.org", "example.org", "matrix.example.org").unwrap();
        assert_eq!(remote.to_string(), "a\\2fb\\3aother.org@matrix.example.org");
        assert_eq!(
            matrix_user(&remote, "example.org").as_deref(),
            Some("@a/b:other.org")
        );
        assert!(user_jid("not a user", "example.org", "m.example.org").is_none());
    }
}
