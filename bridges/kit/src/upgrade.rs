//! Room upgrades: a portal or a management room follows `m.room.tombstone` to the room that
//! replaces it, and the bridge goes on there.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#room-upgrades>
//!
//! An upgrade makes a new room whose `m.room.create` names the old one as `predecessor`, and
//! puts a tombstone naming the new one in the old room. The homeserver moves the old room's
//! local aliases to the new one, so a portal's alias leads there already; the kit moves its
//! own records: the portal (or the management room) now names the new room, the bot and the
//! ghosts of the old room join it, and the portal's bridge info is put in it. The message map
//! stays as it is: it is keyed by chat, so replies to messages from before the upgrade still
//! find them, in the old room where they are.
//!
//! A public portal's new room is followed when the tombstone arrives: the bot joins it. An
//! invite-only room (a management room, a direct chat's portal, a private linked room) can
//! only be joined when invited, as clients do when they upgrade ("invite the members"): the
//! room is followed when the bot or the ghost is invited to it. Either way the kit checks that
//! the old room's tombstone names the new room, since a room's `predecessor` is whatever its
//! creator wrote. Room ids without a server part (room version 12) and creators outside the
//! power levels change nothing here: the kit joins with the servers of the upgrader and of
//! the rooms as `via`, and asks nothing of power levels.

use ruma::{
    EventId, OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId,
    api::{
        AppserviceUserIdentity,
        client::{
            membership::{join_room_by_id_or_alias, joined_members},
            state::get_state_event_for_key,
        },
        error::ErrorKind,
    },
    events::{StateEventType, room::message::RoomMessageEventContent},
};
use serde_json::Value;
use trestle::transaction::TimelineEvent;

use super::{BRIDGE_STATE_TYPES, BridgeHandle, Network, NetworkResult, PortalRef};

/// The servers to join a replacement room through: the upgrader's (or inviter's), the old
/// and the new room's where their ids still name one, and our own.
fn via_servers(sender: &UserId, rooms: [&RoomId; 2], own: &ServerName) -> Vec<OwnedServerName> {
    let mut via = vec![sender.server_name().to_owned()];
    via.extend(
        rooms
            .iter()
            .filter_map(|r| r.server_name())
            .map(ToOwned::to_owned),
    );
    via.push(own.to_owned());
    let mut seen = std::collections::HashSet::new();
    via.retain(|server| seen.insert(server.clone()));
    via
}

/// The room an invite's room says it replaces (`predecessor` of the `m.room.create` in the
/// invite's stripped state), if it says.
fn predecessor_in_invite(json: &Value) -> Option<OwnedRoomId> {
    let state = json["unsigned"]["invite_room_state"].as_array()?;
    let create = state.iter().find(|e| e["type"] == "m.room.create")?;
    RoomId::parse(create["content"]["predecessor"]["room_id"].as_str()?).ok()
}

impl<N: Network> BridgeHandle<N> {
    /// A tombstone in a room: if it is a portal or a management room the bot is in, the bot
    /// follows it to the replacement room. A room the bot cannot join yet (invite-only) is
    /// followed when it is invited; a direct chat's portal, without the bot, when its ghost is.
    pub(crate) async fn on_tombstone(
        &self,
        event: &TimelineEvent,
        json: &Value,
    ) -> NetworkResult<()> {
        if event.state_key.as_deref() != Some("") {
            return Ok(());
        }
        let Some(new) = json["content"]["replacement_room"]
            .as_str()
            .and_then(|r| RoomId::parse(r).ok())
        else {
            return Ok(());
        };
        if !self
            .store()?
            .room_roles(event.room_id.as_str())
            .await?
            .any()
        {
            return Ok(());
        }
        let app = self.app()?;
        let bot = app.bot_user_id().clone();
        if !self.is_member(&event.room_id, &bot).await {
            tracing::info!(old = %event.room_id, %new, "upgraded; its ghost follows when invited");
            return Ok(());
        }
        let via = via_servers(&event.sender, [&event.room_id, &new], app.server_name());
        self.follow_upgrade(&event.room_id, &new, &bot, via).await?;
        Ok(())
    }

    /// The bot or a ghost (`invitee`) is invited to a room: if the room replaces a portal or a
    /// management room (its predecessor's tombstone names it), the invitee joins and the
    /// bridge follows. Returns whether it was such a room.
    pub(crate) async fn invited_to_replacement(
        &self,
        event: &TimelineEvent,
        invitee: &UserId,
        json: &Value,
    ) -> NetworkResult<bool> {
        let Some(old) = predecessor_in_invite(json) else {
            return Ok(false);
        };
        if !self.store()?.room_roles(old.as_str()).await?.any() {
            // Followed already (the tombstone came first): the invitee joins the rest there.
            if self
                .store()?
                .room_roles(event.room_id.as_str())
                .await?
                .any()
            {
                self.app()?.intent(invitee).join(&event.room_id).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        // Anyone may name any room as predecessor; only the old room's own tombstone, sent
        // by someone with the power to, says this room replaces it.
        let tombstone = self
            .state_as(invitee, &old, StateEventType::RoomTombstone, "")
            .await?;
        let replacement = tombstone
            .as_ref()
            .and_then(|t| t["replacement_room"].as_str());
        if replacement != Some(event.room_id.as_str()) {
            tracing::warn!(%old, new = %event.room_id, "invited to a room claiming to replace a bridged room, which names no such replacement");
            return Ok(false);
        }
        let via = via_servers(
            &event.sender,
            [&old, &event.room_id],
            self.app()?.server_name(),
        );
        self.follow_upgrade(&old, &event.room_id, invitee, via)
            .await?;
        Ok(true)
    }

    /// Moves what `old` is to the bridge to `new`: `actor` (the bot, or a direct chat's ghost),
    /// a member of `old`, joins `new`; the records move; the portal's bridge info and the
    /// other ghosts of `old` follow. Returns whether it moved (not when `actor` cannot join
    /// yet, or it moved already).
    async fn follow_upgrade(
        &self,
        old: &RoomId,
        new: &RoomId,
        actor: &UserId,
        via: Vec<OwnedServerName>,
    ) -> NetworkResult<bool> {
        // The lock portals are made under: a portal made or linked meanwhile cannot collide.
        let _moving = self.shared.portal_lock.lock().await;
        let store = self.store()?;
        let roles = store.room_roles(old.as_str()).await?;
        if !roles.any() {
            return Ok(false);
        }
        if store.room_roles(new.as_str()).await?.any() {
            tracing::warn!(%old, %new, "the replacement room is bridged already; not followed");
            return Ok(false);
        }
        let app = self.app()?;
        let mut join = join_room_by_id_or_alias::v3::Request::new(new.to_owned().into());
        join.via = via;
        let identity = AppserviceUserIdentity::new(actor);
        if let Err(error) = app.client().send(join, identity).await {
            tracing::info!(%old, %new, %actor, %error, "cannot join the replacement room yet; followed when invited");
            return Ok(false);
        }
        store.move_room(old.as_str(), new.as_str()).await?;
        tracing::info!(%old, %new, ?roles, "followed a room upgrade");
        if roles.portal_of.is_some() {
            if !self.put_bridge_info(old, new, actor).await {
                // In room version 12 the old room's creator (the bot, which made the portal)
                // is no creator of the new one, and not in its power levels either: the bot
                // lost its power, unless the upgrade named it in `additional_creators`.
                let protocol = self.network().protocol().displayname;
                let notice = RoomMessageEventContent::notice_plain(format!(
                    "{actor} may not set state in this new room, so it cannot keep it in step \
                     with {protocol} (its bridge info, power levels, kicks). Give it the power \
                     to, or name it in `additional_creators` when upgrading."
                ));
                if let Err(error) = app.intent(actor).send(new, &notice).await {
                    tracing::warn!(%new, %error, "could not say the bridge lacks power");
                }
            }
            self.ghosts_follow(old, new, actor).await;
        }
        if roles.management_of.is_some() {
            let notice = RoomMessageEventContent::notice_plain(
                "This room replaces your old management room: send your commands here.",
            );
            app.intent(actor).send(new, &notice).await?;
        }
        Ok(true)
    }

    /// Puts the portal's bridge info (`m.bridge` and its older name) in the new room, as
    /// `actor`, made afresh (the old room may lack it, an earlier upgrade having failed to put
    /// it there), with the creator the old room names. Best effort: the portal bridges without
    /// it. `false` when `actor` may not.
    async fn put_bridge_info(&self, old: &RoomId, new: &RoomId, actor: &UserId) -> bool {
        let Ok(Some(portal)) = self.portal_for_room(new).await else {
            return true;
        };
        let info = self
            .network()
            .chat_info(&portal.chat)
            .await
            .unwrap_or_default();
        let state_key = self.bridge_state_key(&portal.chat, &info);
        let before = self
            .state_as(actor, old, BRIDGE_STATE_TYPES[0].into(), &state_key)
            .await;
        let creator = before
            .ok()
            .flatten()
            .and_then(|c| UserId::parse(c["creator"].as_str()?).ok())
            .unwrap_or_else(|| actor.to_owned());
        let content = self.bridge_info(&portal.chat, &info, &creator);
        let Ok(app) = self.app() else { return true };
        let intent = app.intent(actor);
        for event_type in BRIDGE_STATE_TYPES {
            if let Err(error) = intent
                .send_state_json(new, event_type, &state_key, content.clone(), None)
                .await
            {
                tracing::warn!(%new, %error, "could not put bridge info in the replacement room");
                return !error.is_forbidden();
            }
        }
        true
    }

    /// The appservice's users in `old`, other than `actor`, join `new`. Best effort: a ghost
    /// that cannot join now joins when it next speaks there.
    async fn ghosts_follow(&self, old: &RoomId, new: &RoomId, actor: &UserId) {
        let Ok(app) = self.app() else { return };
        let request = joined_members::v3::Request::new(old.to_owned());
        let members = match app
            .client()
            .send(request, AppserviceUserIdentity::new(actor))
            .await
        {
            Ok(members) => members.joined,
            Err(error) => {
                tracing::warn!(%old, %error, "could not list the old room's members");
                return;
            }
        };
        for user in members.keys() {
            if user == actor || !app.is_own_user(user) {
                continue;
            }
            if let Err(error) = app.intent(user).ensure_joined(new).await {
                tracing::warn!(%new, %user, %error, "could not join the replacement room");
            }
        }
    }

    /// Whether a mapped event was left behind in a portal's former room by an upgrade. Edits,
    /// reactions and redactions of it are not bridged: they belong in its room, which the
    /// upgrade locked, and would mean nothing in the new one.
    pub(crate) async fn left_behind(
        &self,
        portal: &PortalRef<N>,
        event_id: &EventId,
    ) -> NetworkResult<bool> {
        let room = self.store()?.room_of_event(event_id.as_str()).await?;
        Ok(room.is_some_and(|room| room != portal.room_id.as_str()))
    }

    /// Whether `user`, one of ours, is joined to `room_id` (read as them).
    async fn is_member(&self, room_id: &RoomId, user: &UserId) -> bool {
        let member = self
            .state_as(user, room_id, StateEventType::RoomMember, user.as_str())
            .await;
        matches!(member, Ok(Some(content)) if content["membership"] == "join")
    }

    /// A room's current state event content, read as one of the appservice's users; `None`
    /// when there is none.
    async fn state_as(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_type: StateEventType,
        state_key: &str,
    ) -> NetworkResult<Option<Value>> {
        let request = get_state_event_for_key::v3::Request::new(
            room_id.to_owned(),
            event_type,
            state_key.to_owned(),
        );
        match self
            .app()?
            .client()
            .send(request, AppserviceUserIdentity::new(user))
            .await
        {
            Ok(response) => Ok(Some(serde_json::from_str(response.event_or_content.get())?)),
            Err(e) if e.is_forbidden() || matches!(e.kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, server_name, user_id};
    use serde_json::json;

    use super::*;

    #[test]
    fn the_servers_to_join_through_skip_room_ids_without_one_and_repeats() {
        let via = via_servers(
            user_id!("@alice:example.org"),
            [room_id!("!old:example.org"), room_id!("!hashonlyroomid12")],
            server_name!("bridge.example"),
        );
        let via: Vec<&str> = via.iter().map(|s| s.as_str()).collect();
        assert_eq!(via, ["example.org", "bridge.example"]);
    }

    #[test]
    fn an_invite_names_the_room_it_replaces_only_in_its_create_event() {
        let invite = json!({"unsigned": {"invite_room_state": [
            {"type": "m.room.name", "content": {"name": "x", "predecessor": {"room_id": "!no"}}},
            {"type": "m.room.create", "content": {"room_version": "12",
                "predecessor": {"room_id": "!old12345"}}},
        ]}});
        assert_eq!(
            predecessor_in_invite(&invite).as_deref(),
            Some(room_id!("!old12345"))
        );
        let plain = json!({"unsigned": {"invite_room_state": [
            {"type": "m.room.create", "content": {"room_version": "12"}},
        ]}});
        assert_eq!(predecessor_in_invite(&plain), None);
        assert_eq!(predecessor_in_invite(&json!({})), None);
    }
}
