//! Presence both ways, where the settings turn it on (`presence: true`): an occupant's
//! availability (`show`) and status ([RFC 6121 §4.7](https://www.rfc-editor.org/rfc/rfc6121#section-4.7))
//! as their ghost's Matrix presence, and a Matrix user's presence (`m.presence`, which the
//! homeserver hands the appservice as an ephemeral event) as their occupant's in each room
//! they are in.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#presence>
//!
//! | XMPP `show` | Matrix `presence` |
//! |---|---|
//! | none, `chat` | `online` |
//! | `away`, `dnd` | `unavailable` |
//! | `xa` | `unavailable` (and `offline` from Matrix becomes `xa`: an occupant who is gone has left the room) |
//!
//! Rooms repeat each occupant's presence, and homeservers each user's: only a change is passed
//! on. Each side's echo of the other is dropped: presences of the bridge's own users (ghosts)
//! are not read from Matrix, nor those of Matrix users' occupants from XMPP.

use serde_json::Value;
use tokio_xmpp::{
    jid::{BareJid, FullJid},
    parsers::presence::{Presence, Show},
};
use trestle::{
    router::RawEvent,
    ruma::{
        OwnedUserId,
        api::{AppserviceUserIdentity, client::presence::set_presence},
        presence::PresenceState,
    },
};
use trestle_bridge::NetworkResult;

use crate::{
    hub::{Hub, Kit},
    ids::{ChatId, UserId},
    users::LOGIN_ID,
};

/// The Matrix presence an occupant's `show` gives their ghost.
fn matrix_state(show: Option<&Show>) -> PresenceState {
    match show {
        None | Some(Show::Chat) => PresenceState::Online,
        Some(Show::Away | Show::Dnd | Show::Xa) => PresenceState::Unavailable,
    }
}

/// The `show` a Matrix presence gives a Matrix user's occupant (`None`: available); not one for
/// a state the bridge does not know.
fn xmpp_show(state: &str) -> Option<Option<Show>> {
    match state {
        "online" => Some(None),
        "unavailable" => Some(Some(Show::Away)),
        "offline" => Some(Some(Show::Xa)),
        _ => None,
    }
}

/// The status text of a presence, if it has one.
fn status_of(presence: &Presence) -> Option<String> {
    let status = presence.statuses.values().next()?;
    Some(status.clone()).filter(|s| !s.trim().is_empty())
}

impl Hub {
    /// Records `now` as `who`'s last presence; answers whether it changed.
    fn presence_changed(&self, who: String, now: String) -> bool {
        self.presences_lock().insert(who, now.clone()) != Some(now)
    }
}

/// An occupant's presence in a room of `chat` (available, with its `show` and status): their
/// ghost's Matrix presence follows it, when it changed, where the room has a portal.
pub async fn occupant(
    bridge: &Kit,
    chat: &ChatId,
    user: &UserId,
    presence: &Presence,
) -> NetworkResult<()> {
    let hub = bridge.network();
    if !hub.cfg.settings.presence || bridge.portal(chat).await?.is_none() {
        return Ok(());
    }
    let state = matrix_state(presence.show.as_ref());
    let status = status_of(presence);
    let ghost = bridge.ghost(user)?;
    let ghost_id = ghost.user_id().to_owned();
    let now = format!("{state:?} {}", status.as_deref().unwrap_or_default());
    if hub.presences_lock().get(ghost_id.as_str()) == Some(&now) {
        return Ok(());
    }
    // Its presence may come before its join: the homeserver knows only registered users.
    ghost.ensure_registered().await?;
    let mut request = set_presence::v3::Request::new(ghost_id.clone(), state);
    request.status_msg = status;
    bridge
        .app()?
        .client()
        .send(request, AppserviceUserIdentity::new(&ghost_id))
        .await?;
    hub.presence_changed(ghost_id.to_string(), now);
    Ok(())
}

/// A Matrix user's presence (an ephemeral `m.presence`): their occupant in each room they are
/// in says it, when it changed.
pub async fn matrix_presence(bridge: &Kit, event: RawEvent) -> NetworkResult<()> {
    let hub = bridge.network();
    if !hub.cfg.settings.presence {
        return Ok(());
    }
    let json: Value = serde_json::from_str(event.json.get())?;
    let Some(sender) = json["sender"].as_str() else {
        return Ok(());
    };
    let sender = OwnedUserId::try_from(sender)?;
    if bridge.app()?.is_own_user(&sender) {
        return Ok(());
    }
    let content = &json["content"];
    let Some(show) = content["presence"].as_str().and_then(xmpp_show) else {
        return Ok(());
    };
    let status = content["status_msg"]
        .as_str()
        .filter(|s| !s.trim().is_empty());
    let Some(puppet) = bridge.connection(&sender, LOGIN_ID) else {
        return Ok(());
    };
    let now = format!("{show:?} {}", status.unwrap_or_default());
    if !hub.presence_changed(sender.to_string(), now) {
        return Ok(());
    }
    for (room, nick) in hub.rooms_of(&puppet.full) {
        if let Some(presence) = occupant_presence(&puppet.full, &room, &nick, show.clone(), status)
        {
            hub.send(presence);
        }
    }
    Ok(())
}

/// The presence with which a Matrix user's occupant `nick` in `room` shows `show` and `status`.
fn occupant_presence(
    from: &FullJid,
    room: &BareJid,
    nick: &str,
    show: Option<Show>,
    status: Option<&str>,
) -> Option<Presence> {
    let occupant = room.with_resource_str(nick).ok()?;
    let mut presence = Presence::available()
        .with_from(from.clone())
        .with_to(occupant);
    presence.show = show;
    if let Some(status) = status {
        presence.set_status("", status);
    }
    Some(presence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_both_ways() {
        assert_eq!(matrix_state(None), PresenceState::Online);
        assert_eq!(matrix_state(Some(&Show::Dnd)), PresenceState::Unavailable);
        assert_eq!(xmpp_show("online"), Some(None));
        assert_eq!(xmpp_show("unavailable"), Some(Some(Show::Away)));
        assert_eq!(xmpp_show("offline"), Some(Some(Show::Xa)));
        assert_eq!(xmpp_show("dancing"), None);
        let from = FullJid::new("bob@matrix.example.org/matrix").unwrap();
        let room = BareJid::new("chat@muc.example.org").unwrap();
        let presence =
            occupant_presence(&from, &room, "bob", Some(Show::Away), Some("lunch")).unwrap();
        assert_eq!(
            presence.to.as_ref().map(|to| to.to_string()).as_deref(),
            Some("chat@muc.example.org/bob")
        );
        assert_eq!(status_of(&presence).as_deref(), Some("lunch"));
        assert_eq!(presence.show, Some(Show::Away));
    }
}
