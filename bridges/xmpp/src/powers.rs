//! Standing in a room as power in its portal: an occupant's affiliation and role
//! ([XEP-0045](https://xmpp.org/extensions/xep-0045.html) §5) give their ghost a power level
//! in the portal's `m.room.power_levels`.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#mroompower_levels>
//!
//! | XMPP | power level |
//! |---|---|
//! | affiliation `owner` | 90 |
//! | affiliation `admin` | 75 |
//! | role `moderator` | 50 |
//! | anyone else | the room's default (0) |
//!
//! The higher of the two counts. Owners stay below the bot's 100: Matrix lets nobody change
//! the level of a user as powerful as themselves, so at 100 the bridge could never lower an
//! owner it had raised.
//!
//! Rooms send every occupant's affiliation and role with each of their presences (a status
//! change too): the bridge remembers the level it gave each ghost and writes the power levels
//! only when one changes, one state event per change (the first presence of each occupant
//! after a start reads them, to correct what changed while the bridge was away).
//!
//! The other way, where the bridge has the right (the bot owns the room: the bridge made it),
//! a Matrix user's power level in the portal becomes their occupant's standing by the same
//! table: 90 an owner, 75 an admin, 50 a moderator (a role), below that back to a member and a
//! participant, for those the bridge raised. Only power levels a Matrix user sets are read:
//! the bridge's own writes (the bot's, mirroring XMPP) are not, so neither direction echoes
//! the other.

use serde_json::{Value, json};
use tokio_xmpp::{
    jid::{BareJid, Jid},
    minidom::{Element, rxml::xml_ncname},
    parsers::{
        muc::user::{Affiliation, MucUser, Role},
        presence::Presence,
    },
};
use trestle::{
    router::RawEvent,
    ruma::{OwnedUserId, RoomId, events::StateEventType},
};
use trestle_bridge::NetworkResult;

use crate::{
    hub::{Hub, Kit, requests::Kind},
    ids::{self, ChatId, UserId},
};

/// XEP-0045's namespace of the requests that change standing.
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";

/// The power level of an owner's ghost.
pub const OWNER: i64 = 90;
/// The power level of an admin's ghost.
pub const ADMIN: i64 = 75;
/// The power level of a moderator's ghost.
pub const MODERATOR: i64 = 50;

/// The power level an occupant's affiliation and role give their ghost.
pub fn level(affiliation: &Affiliation, role: &Role) -> i64 {
    let by_affiliation = match affiliation {
        Affiliation::Owner => OWNER,
        Affiliation::Admin => ADMIN,
        Affiliation::Member | Affiliation::Outcast | Affiliation::None => 0,
    };
    let by_role = match role {
        Role::Moderator => MODERATOR,
        Role::Participant | Role::Visitor | Role::None => 0,
    };
    by_affiliation.max(by_role)
}

/// The power level a room's presence of an occupant gives their ghost, if it says.
pub fn level_in(presence: &Presence) -> Option<i64> {
    let user = presence
        .payloads
        .iter()
        .find_map(|p| MucUser::try_from(p.clone()).ok())?;
    let item = user.items.first()?;
    Some(level(&item.affiliation, &item.role))
}

/// Whether a room's presence of the bot says it owns the room.
pub fn owns(presence: &Presence) -> bool {
    presence
        .payloads
        .iter()
        .find_map(|p| MucUser::try_from(p.clone()).ok())
        .and_then(|user| user.items.into_iter().next())
        .is_some_and(|item| item.affiliation == Affiliation::Owner)
}

/// The standing a power level gives a Matrix user in a room, as the level of the table's row.
pub fn standing(level: i64) -> i64 {
    [OWNER, ADMIN, MODERATOR]
        .into_iter()
        .find(|row| level >= *row)
        .unwrap_or(0)
}

/// The requests (XEP-0045 §9 and §10: an affiliation by real JID, a role by nick) that take a
/// Matrix user's occupant from standing `from` to `to`. Lowering an owner or admin makes them a
/// member, which also ends their moderator role.
fn requests(jid: &BareJid, nick: &str, from: i64, to: i64) -> Vec<Element> {
    let affiliation = |a: &str| {
        Element::builder("item", MUC_ADMIN)
            .attr(xml_ncname!("jid").into(), jid.as_str())
            .attr(xml_ncname!("affiliation").into(), a)
            .build()
    };
    let role = |r: &str| {
        Element::builder("item", MUC_ADMIN)
            .attr(xml_ncname!("nick").into(), nick)
            .attr(xml_ncname!("role").into(), r)
            .build()
    };
    let mut items = Vec::new();
    match to {
        OWNER => items.push(affiliation("owner")),
        ADMIN => items.push(affiliation("admin")),
        _ if from > MODERATOR => items.push(affiliation("member")),
        _ => {}
    }
    match to {
        MODERATOR => items.push(role("moderator")),
        0 if from == MODERATOR => items.push(role("participant")),
        _ => {}
    }
    items
        .into_iter()
        .map(|item| Element::builder("query", MUC_ADMIN).append(item).build())
        .collect()
}

/// Power levels changed in a portal: where the bot owns the room, each Matrix user in it whose
/// standing by the new levels differs from what the bridge gave them is given it (asked as the
/// bot). Levels the bridge wrote itself are not read.
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#mroompower_levels>
pub async fn matrix_levels(bridge: &Kit, event: RawEvent) -> NetworkResult<()> {
    let json: Value = serde_json::from_str(event.json.get())?;
    let (Some(sender), Some(room_id)) = (json["sender"].as_str(), json["room_id"].as_str()) else {
        return Ok(());
    };
    let app = bridge.app()?;
    let sender = OwnedUserId::try_from(sender)?;
    if app.is_own_user(&sender) {
        return Ok(());
    }
    let room_id = trestle::ruma::OwnedRoomId::try_from(room_id)?;
    let Some(portal) = bridge.portal_for_room(&room_id).await? else {
        return Ok(());
    };
    let ChatId::Muc(room) = &portal.chat else {
        return Ok(());
    };
    let hub = bridge.network();
    if !hub.bot_owns(room) {
        return Ok(());
    }
    let content = &json["content"];
    let default = content["users_default"].as_i64().unwrap_or(0);
    let server_name = hub.server_name()?;
    for (full, nick) in hub.ours_in(room) {
        let jid = full.to_bare();
        let user = ids::matrix_user(&jid, server_name).and_then(|u| OwnedUserId::try_from(u).ok());
        let Some(user) = user else {
            continue;
        };
        let to = standing(content["users"][user.as_str()].as_i64().unwrap_or(default));
        let key = (room.clone(), user.clone());
        let from = hub.granted_lock().get(&key).copied().unwrap_or(0);
        if to == from {
            continue;
        }
        for request in requests(&jid, &nick, from, to) {
            let bot = Jid::from(hub.bot_jid().clone());
            let to_room = Jid::from(room.clone());
            match hub.request(Kind::Set, bot, to_room, request).await {
                Some(Ok(_)) => {}
                Some(Err(why)) => {
                    tracing::warn!(%room, %user, why, "the room refused a Matrix user's standing");
                    return Ok(());
                }
                None => {
                    tracing::warn!(%room, %user, "the room did not answer a change of standing");
                    return Ok(());
                }
            }
        }
        hub.granted_lock().insert(key, to);
    }
    Ok(())
}

/// An occupant's presence in `room`: their ghost's power level in the portal follows it, when
/// it changed.
pub async fn occupant(
    bridge: &Kit,
    room: &BareJid,
    user: &UserId,
    presence: &Presence,
) -> NetworkResult<()> {
    let Some(level) = level_in(presence) else {
        return Ok(());
    };
    let ghost = bridge.ghost(user)?.user_id().to_owned();
    if !bridge.network().set_power(room, &ghost, level) {
        return Ok(());
    }
    if let Some(portal) = bridge
        .portal(&crate::ids::ChatId::Muc(room.clone()))
        .await?
    {
        write(bridge, &portal.room_id, &[(ghost, level)]).await?;
    }
    Ok(())
}

/// The levels of every ghost of `room` the bridge knows, written to its portal if they are not
/// there yet (for occupants seen before the portal was made).
pub async fn catch_up(bridge: &Kit, room: &BareJid, room_id: &RoomId) -> NetworkResult<()> {
    let levels = bridge.network().powers(room);
    if levels.is_empty() {
        return Ok(());
    }
    write(bridge, room_id, &levels).await
}

/// Sets `levels` in the portal's power levels, as the bot, in one state event; none when
/// they are all there already.
async fn write(bridge: &Kit, room_id: &RoomId, levels: &[(OwnedUserId, i64)]) -> NetworkResult<()> {
    let app = bridge.app()?;
    let mut content: Value = app
        .state_content(room_id, StateEventType::RoomPowerLevels, "")
        .await?
        .unwrap_or_else(|| json!({}));
    if !apply(&mut content, levels) {
        return Ok(());
    }
    app.bot()
        .send_state_json(room_id, "m.room.power_levels", "", content, None)
        .await?;
    Ok(())
}

/// Puts `levels` into power levels `content` (a level equal to the room's default is no entry
/// of its own); answers whether anything changed.
fn apply(content: &mut Value, levels: &[(OwnedUserId, i64)]) -> bool {
    let default = content["users_default"].as_i64().unwrap_or(0);
    let mut changed = false;
    for (user, level) in levels {
        let now = content["users"][user.as_str()].as_i64().unwrap_or(default);
        if now == *level {
            continue;
        }
        changed = true;
        if *level == default {
            if let Some(users) = content["users"].as_object_mut() {
                users.remove(user.as_str());
            }
        } else {
            content["users"][user.as_str()] = json!(level);
        }
    }
    changed
}

impl Hub {
    /// Records the level the bridge gives a ghost in `room`; answers whether it may differ
    /// from the portal's: it changed, or the ghost was not seen since the bridge started (its
    /// standing may have changed meanwhile; the portal's levels are read before any write).
    fn set_power(&self, room: &BareJid, ghost: &OwnedUserId, level: i64) -> bool {
        let key = (room.clone(), ghost.clone());
        self.powers_lock().insert(key, level) != Some(level)
    }

    /// The levels the bridge gives ghosts in `room`, other than the default.
    fn powers(&self, room: &BareJid) -> Vec<(OwnedUserId, i64)> {
        self.powers_lock()
            .iter()
            .filter(|((r, _), level)| r == room && **level != 0)
            .map(|((_, ghost), level)| (ghost.clone(), *level))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_maps_to_levels_and_only_changes_are_written() {
        assert_eq!(level(&Affiliation::Owner, &Role::Moderator), OWNER);
        assert_eq!(level(&Affiliation::Admin, &Role::Participant), ADMIN);
        assert_eq!(level(&Affiliation::Member, &Role::Moderator), MODERATOR);
        assert_eq!(level(&Affiliation::None, &Role::Participant), 0);

        let alice = OwnedUserId::try_from("@xmpp_alice:example.org").unwrap();
        let mut content = json!({"users": {"@xmpp:example.org": 100}, "users_default": 0});
        assert!(apply(&mut content, &[(alice.clone(), OWNER)]));
        assert_eq!(content["users"][alice.as_str()], OWNER);
        assert!(!apply(&mut content, &[(alice.clone(), OWNER)]));
        assert!(apply(&mut content, &[(alice.clone(), 0)]));
        assert_eq!(content["users"], json!({"@xmpp:example.org": 100}));
        let mut empty = json!({});
        assert!(!apply(&mut empty, &[(alice, 0)]));
    }

    #[test]
    fn levels_ask_for_standing_and_lowering_undoes_it() {
        assert_eq!(
            [100, 90, 89, 75, 60, 50, 49, 0, -5].map(standing),
            [OWNER, OWNER, ADMIN, ADMIN, MODERATOR, MODERATOR, 0, 0, 0]
        );
        let jid = BareJid::new("bob@matrix.example.org").unwrap();
        let asked = |from, to| -> Vec<String> {
            requests(&jid, "bob", from, to)
                .iter()
                .map(|query| {
                    let item = query.get_child("item", MUC_ADMIN).unwrap();
                    let what = ["affiliation", "role"].map(|a| item.attr(a));
                    format!("{:?}", what)
                })
                .collect()
        };
        assert_eq!(asked(0, OWNER), [r#"[Some("owner"), None]"#]);
        assert_eq!(
            asked(ADMIN, MODERATOR),
            [r#"[Some("member"), None]"#, r#"[None, Some("moderator")]"#]
        );
        assert_eq!(asked(MODERATOR, 0), [r#"[None, Some("participant")]"#]);
        assert_eq!(asked(OWNER, 0), [r#"[Some("member"), None]"#]);
    }
}
