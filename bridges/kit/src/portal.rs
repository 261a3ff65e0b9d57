//! Portals: a remote chat and its Matrix room, made on demand or linked, with bridge info
//! state in each.

use std::{future::Future, str::FromStr};

use ruma::{
    Int, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
    api::{
        AppserviceUserIdentity,
        client::{alias::get_alias, room::create_room},
        error::ErrorKind,
    },
    events::{AnyInitialStateEvent, room::power_levels::UserPowerLevel},
    serde::Raw,
};
use serde_json::{Value, json};
use trestle::Appservice;

use super::{
    BridgeError, BridgeHandle, ChatInfo, InfoSection, Network, NetworkResult, PortalRef,
    store::PortalRow,
};

/// The state event types of bridge info: MSC2346's, and the unstable one older clients read.
/// Spec: <https://github.com/matrix-org/matrix-spec-proposals/pull/2346>
pub const BRIDGE_STATE_TYPES: [&str; 2] = ["m.bridge", "uk.half-shot.bridge"];

/// The power level needed to link or unlink a room, or change its relay mode, for users who
/// are not admins of the bridge.
const MANAGE_LEVEL: i64 = 50;

fn parse_id<T: FromStr>(what: &str, value: &str) -> NetworkResult<T> {
    value
        .parse()
        .map_err(|_| BridgeError::BadRequest(format!("`{value}` is not a valid {what}")))
}

fn section(section: &InfoSection) -> Value {
    let mut value = json!({ "id": section.id });
    if let Some(name) = &section.displayname {
        value["displayname"] = json!(name);
    }
    if let Some(avatar) = &section.avatar_url {
        value["avatar_url"] = json!(avatar);
    }
    if let Some(url) = &section.external_url {
        value["external_url"] = json!(url);
    }
    value
}

impl<N: Network> BridgeHandle<N> {
    pub(crate) fn portal_ref(&self, row: PortalRow) -> NetworkResult<PortalRef<N>> {
        Ok(PortalRef {
            chat: parse_id("chat id", &row.chat_id)?,
            room_id: RoomId::parse(&row.room_id)?,
            relay: row.relay,
        })
    }

    /// The portal of a chat, if it has one; refused while the bridge left it for a room rule
    /// of the policy lists it follows.
    pub async fn portal(&self, chat: &N::ChatId) -> NetworkResult<Option<PortalRef<N>>> {
        let row = self.store()?.portal_by_chat(&chat.to_string()).await?;
        let portal = row.map(|r| self.portal_ref(r)).transpose()?;
        if let Some(portal) = &portal {
            self.refuse_left(&portal.room_id)?;
        }
        Ok(portal)
    }

    /// The portal a room is, if it is one.
    pub async fn portal_for_room(&self, room_id: &RoomId) -> NetworkResult<Option<PortalRef<N>>> {
        let row = self.store()?.portal_by_room(room_id.as_str()).await?;
        row.map(|r| self.portal_ref(r)).transpose()
    }

    /// Every portal, oldest first.
    pub async fn portals(&self) -> NetworkResult<Vec<PortalRef<N>>> {
        let rows = self.store()?.portals().await?;
        rows.into_iter().map(|r| self.portal_ref(r)).collect()
    }

    /// The `m.bridge` content of a chat's portal (MSC2346: `bridgebot`, `creator`,
    /// `protocol`, `network`, `channel`).
    pub fn bridge_info(&self, chat: &N::ChatId, info: &ChatInfo, creator: &UserId) -> Value {
        let app = self.app().ok();
        let protocol = self.network().protocol();
        let mut content = json!({
            "bridgebot": app.as_ref().map(|a| a.bot_user_id().to_string()),
            "creator": creator,
            "protocol": section(&InfoSection {
                id: protocol.id,
                displayname: Some(protocol.displayname),
                avatar_url: protocol.avatar_url,
                external_url: protocol.external_url,
            }),
        });
        if let Some(network) = &info.network {
            content["network"] = section(network);
        }
        let channel = info.channel.clone().unwrap_or_else(|| InfoSection {
            id: chat.to_string(),
            displayname: info.name.clone(),
            ..InfoSection::default()
        });
        content["channel"] = section(&channel);
        content
    }

    /// The state key of a portal's bridge info: unique per bridge and chat, as MSC2346 asks.
    pub fn bridge_state_key(&self, chat: &N::ChatId, info: &ChatInfo) -> String {
        let protocol = self.network().protocol().id;
        let network = info.network.as_ref().map(|n| n.id.as_str()).unwrap_or("");
        let app = self.app().map(|a| a.registration().id.clone());
        format!(
            "{}://{protocol}/{network}/{chat}",
            app.unwrap_or(protocol.clone())
        )
    }

    /// Bridge info as `initial_state` of a new portal room.
    pub(crate) fn initial_bridge_state(
        &self,
        chat: &N::ChatId,
        info: &ChatInfo,
        creator: &UserId,
    ) -> NetworkResult<Vec<Raw<AnyInitialStateEvent>>> {
        let content = self.bridge_info(chat, info, creator);
        let state_key = self.bridge_state_key(chat, info);
        BRIDGE_STATE_TYPES
            .iter()
            .map(|event_type| {
                let event =
                    json!({ "type": event_type, "state_key": state_key, "content": content });
                Ok(Raw::from_json(serde_json::value::to_raw_value(&event)?))
            })
            .collect()
    }

    /// The portal of a chat, made now if it has none: a public room with the chat's alias,
    /// name and topic, and bridge info state, created by the bot. Refused for an alias the
    /// followed policy lists ban.
    pub async fn ensure_portal(&self, chat: &N::ChatId) -> NetworkResult<PortalRef<N>> {
        let relay = self.config().relay;
        self.portal_or_make(chat, relay, || async {
            self.refuse_new_portal(chat).await?;
            self.make_portal_room(chat).await
        })
        .await
    }

    /// The portal of `chat`, or a new one in the room `make` makes. Made under a lock, so two
    /// callers at once (two joins of one alias) make one room. A new portal's history is
    /// filled in (module `history`) behind its chat's gate, closed before this returns.
    pub(crate) async fn portal_or_make<F>(
        &self,
        chat: &N::ChatId,
        relay: bool,
        make: impl FnOnce() -> F,
    ) -> NetworkResult<PortalRef<N>>
    where
        F: Future<Output = NetworkResult<OwnedRoomId>>,
    {
        if let Some(portal) = self.portal(chat).await? {
            return Ok(portal);
        }
        let _making = self.shared.portal_lock.lock().await;
        if let Some(portal) = self.portal(chat).await? {
            return Ok(portal);
        }
        let room_id = make().await?;
        let row = PortalRow {
            chat_id: chat.to_string(),
            room_id: room_id.to_string(),
            relay,
        };
        self.store()?.insert_portal(&row).await?;
        tracing::info!(chat = %chat, %room_id, "made a portal");
        let gate = self.close_gate(chat).await;
        self.fill_new_portal(self.portal_ref(row.clone())?, gate);
        self.portal_ref(row)
    }

    /// Creates a chat's public portal room with its alias, as the bot.
    async fn make_portal_room(&self, chat: &N::ChatId) -> NetworkResult<OwnedRoomId> {
        let app = self.app()?;
        let info = self.network().chat_info(chat).await?;
        let bot = app.bot_user_id().clone();
        let initial_state = self.initial_bridge_state(chat, &info, &bot)?;
        let alias = self.network().chat_alias(chat);
        let mut request = create_room::v3::Request::new();
        request.room_alias_name = Some(alias.clone());
        request.name = info.name.clone();
        request.topic = info.topic.clone();
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        request.initial_state = initial_state;
        match app
            .client()
            .send(request, AppserviceUserIdentity::default())
            .await
        {
            Ok(response) => Ok(response.room_id),
            // The alias outlived our record of its room (a store reset): adopt the room.
            Err(e) if matches!(e.kind(), Some(ErrorKind::RoomInUse)) => {
                let alias = RoomAliasId::parse(format!("#{alias}:{}", app.server_name()))?;
                let found = app
                    .client()
                    .send(
                        get_alias::v3::Request::new(alias),
                        AppserviceUserIdentity::default(),
                    )
                    .await?;
                Ok(found.room_id)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Answers the homeserver's alias query: an alias the network knows as a chat gets its
    /// portal made, and the homeserver is told it exists.
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1roomsroomalias>
    pub(crate) async fn answer_alias_query(
        &self,
        app: &Appservice,
        alias: &OwnedRoomAliasId,
    ) -> NetworkResult<bool> {
        self.attach(app).await?;
        if alias.server_name() != app.server_name() {
            return Ok(false);
        }
        let Some(chat) = self.network().chat_for_alias(alias.alias()) else {
            return Ok(false);
        };
        match self.ensure_portal(&chat).await {
            Ok(_) => Ok(true),
            // A room the policy lists ban: for the homeserver, no such alias.
            Err(BridgeError::Forbidden(reason)) => {
                tracing::info!(%alias, %reason, "no portal made");
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Answers the homeserver's user query: a ghost the network knows a user for exists.
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1usersuserid>
    pub(crate) async fn answer_user_query(
        &self,
        app: &Appservice,
        user_id: &OwnedUserId,
    ) -> NetworkResult<bool> {
        self.attach(app).await?;
        Ok(user_id.server_name() == app.server_name()
            && self.network().user_for_ghost(user_id.localpart()).is_some())
    }

    /// Whether `user` may link, unlink or set relay mode in `room_id`: a bridge admin, or power
    /// level 50 there.
    pub async fn may_manage(&self, room_id: &RoomId, user: &UserId) -> NetworkResult<bool> {
        if self.config().admins.iter().any(|a| a == user.as_str()) {
            return Ok(true);
        }
        let level = trestle::router::power_level(&self.app()?, room_id, user).await?;
        Ok(match level {
            UserPowerLevel::Infinite => true,
            UserPowerLevel::Int(level) => level >= Int::from(MANAGE_LEVEL as i32),
            _ => false,
        })
    }

    async fn require_manage(&self, room_id: &RoomId, user: &UserId) -> NetworkResult<()> {
        if self.may_manage(room_id, user).await? {
            Ok(())
        } else {
            Err(BridgeError::Forbidden(format!(
                "you need power level {MANAGE_LEVEL} in {room_id} (or to be a bridge admin)"
            )))
        }
    }

    /// Links an existing room to a chat, as `by` asks: the bot joins (it must be invited to a
    /// room it cannot join), and bridge info state is sent. Refused if `by` may not manage the
    /// room, or the room or the chat is already a portal.
    pub async fn link(
        &self,
        chat: &N::ChatId,
        room_id: &RoomId,
        by: &UserId,
    ) -> NetworkResult<PortalRef<N>> {
        let app = self.app()?;
        let bot = app.bot();
        bot.ensure_joined(room_id).await.map_err(|e| {
            BridgeError::Forbidden(format!(
                "the bridge bot could not join {room_id} ({e}); invite it first"
            ))
        })?;
        self.require_manage(room_id, by).await?;
        self.refuse_link(room_id).await?;
        let _making = self.shared.portal_lock.lock().await;
        if self.portal(chat).await?.is_some() {
            return Err(BridgeError::BadRequest(format!(
                "{chat} already has a portal"
            )));
        }
        if self.portal_for_room(room_id).await?.is_some() {
            return Err(BridgeError::BadRequest(format!(
                "{room_id} is already a portal"
            )));
        }
        let info = self.network().chat_info(chat).await?;
        let content = self.bridge_info(chat, &info, by);
        let state_key = self.bridge_state_key(chat, &info);
        for event_type in BRIDGE_STATE_TYPES {
            bot.send_state_json(room_id, event_type, &state_key, content.clone(), None)
                .await
                .map_err(|e| match e {
                    e if e.is_forbidden() => BridgeError::Forbidden(format!(
                        "the bridge bot may not send state in {room_id}: give it power level 50 there"
                    )),
                    e => e.into(),
                })?;
        }
        let row = PortalRow {
            chat_id: chat.to_string(),
            room_id: room_id.to_string(),
            relay: self.config().relay,
        };
        if !self.store()?.insert_portal(&row).await? {
            return Err(BridgeError::BadRequest(format!(
                "{room_id} is already a portal"
            )));
        }
        tracing::info!(chat = %chat, %room_id, by = %by, "linked a portal");
        self.portal_ref(row)
    }

    /// Unlinks a portal, as `by` asks: its bridge info is emptied and its message map
    /// forgotten; the room stays. Returns the chat it was linked to.
    pub async fn unlink(&self, room_id: &RoomId, by: &UserId) -> NetworkResult<N::ChatId> {
        let Some(portal) = self.portal_for_room(room_id).await? else {
            return Err(BridgeError::NoPortal(room_id.to_string()));
        };
        self.require_manage(room_id, by).await?;
        let info = self
            .network()
            .chat_info(&portal.chat)
            .await
            .unwrap_or_default();
        let state_key = self.bridge_state_key(&portal.chat, &info);
        let bot = self.app()?.bot();
        for event_type in BRIDGE_STATE_TYPES {
            // Best effort: the link is gone from the store either way.
            if let Err(error) = bot
                .send_state_json(room_id, event_type, &state_key, json!({}), None)
                .await
            {
                tracing::warn!(%room_id, %error, "could not clear bridge info");
            }
        }
        self.store()?.delete_portal(room_id.as_str()).await?;
        self.forget_left(room_id);
        // Its message map is gone, so a catch-up from its old marks would post into a new
        // portal what was said while the chat had none.
        self.store()?
            .forget_history(&portal.chat.to_string())
            .await?;
        tracing::info!(chat = %portal.chat, %room_id, by = %by, "unlinked a portal");
        Ok(portal.chat)
    }

    /// Turns relay mode on or off in a portal, as `by` asks.
    pub async fn set_relay(&self, room_id: &RoomId, relay: bool, by: &UserId) -> NetworkResult<()> {
        self.require_manage(room_id, by).await?;
        if self.store()?.set_relay(room_id.as_str(), relay).await? {
            Ok(())
        } else {
            Err(BridgeError::NoPortal(room_id.to_string()))
        }
    }
}

/// A room id or alias given by a user, resolved to a room id.
pub(crate) async fn resolve_room(app: &Appservice, room: &str) -> NetworkResult<OwnedRoomId> {
    if room.starts_with('#') {
        let alias = RoomAliasId::parse(room)?;
        let found = app
            .client()
            .send(
                get_alias::v3::Request::new(alias),
                AppserviceUserIdentity::default(),
            )
            .await
            .map_err(|_| BridgeError::NoPortal(room.to_owned()))?;
        Ok(found.room_id)
    } else {
        RoomId::parse(room)
            .map_err(|_| BridgeError::BadRequest(format!("`{room}` is not a room id or alias")))
    }
}
