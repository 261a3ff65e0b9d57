//! Matrix events in portals and management rooms, turned into calls of the network.
//!
//! Events of the appservice's own users never get here (the router's `own_events` is off), so
//! what the bridge itself sent is never sent back to the network; nor are events it sent as a
//! user's own account (marked, see [`super::double_puppet`]).

use ruma::{
    EventId, OwnedEventId, OwnedUserId, RoomId, UserId,
    api::{AppserviceUserIdentity, client::room::get_room_event},
    events::{
        StateEventType,
        room::message::{MessageType, Relation, RoomMessageEventContent},
    },
};
use serde_json::Value;
use trestle::{
    Appservice,
    router::{EventContext, State},
    transaction::{Incoming, TimelineEvent},
};

use super::{
    BridgeError, BridgeHandle, MatrixEdit, MatrixMembership, MatrixMessage, MatrixReaction,
    MatrixRedaction, MessageContent, MessageKind, Network, NetworkResult, PortalRef, commands,
    delivery::Outcome, double_puppet, threads::MatrixTarget,
};

/// The kit's one route: every event the appservice is sent.
pub(crate) async fn on_event<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    ctx: EventContext,
    app: Appservice,
) -> Result<(), BridgeError> {
    bridge.attach(&app).await?;
    let _in_hand = bridge.in_hand().await;
    if bridge.hand_off(&app, &ctx).await? {
        return Ok(());
    }
    handle_incoming(&bridge, &app, ctx.incoming()).await
}

/// What the kit does with an event, then the bridge's own handlers of its type (module
/// `own`), in the process that holds the bridge's logins: the one that received it, or the one
/// it was handed to (module `handoff`). Each runs whatever the other did, as two routes would.
pub(crate) async fn handle_incoming<N: Network>(
    bridge: &BridgeHandle<N>,
    app: &Appservice,
    incoming: &Incoming,
) -> Result<(), BridgeError> {
    let kit = kit_handles(bridge, app, incoming).await;
    let own = bridge.run_own_handlers(incoming).await;
    match (kit, own) {
        (Err(error), Err(own)) => {
            tracing::error!(error = %own, "a handler of the bridge's own failed");
            Err(error)
        }
        (kit, own) => kit.and(own),
    }
}

/// The kit's own handling of an event.
async fn kit_handles<N: Network>(
    bridge: &BridgeHandle<N>,
    app: &Appservice,
    incoming: &Incoming,
) -> Result<(), BridgeError> {
    // A portal left for a policy list's rule: its typing and receipts stay here too.
    if let Incoming::Ephemeral(ephemeral) = incoming
        && ephemeral
            .room_id
            .as_deref()
            .is_some_and(|room| bridge.room_left(room))
    {
        return Ok(());
    }
    let event = match incoming {
        Incoming::Timeline(event) => event,
        Incoming::Ephemeral(typing) if typing.event_type == "m.typing" => {
            return unsupported_is_fine(bridge.on_typing(typing).await, &typing.event_type);
        }
        Incoming::Ephemeral(receipt) if receipt.event_type == "m.receipt" => {
            return unsupported_is_fine(bridge.on_receipt(receipt).await, &receipt.event_type);
        }
        _ => return Ok(()),
    };
    // The router hides our own users' events unless a bridge turned `own_events` on; the kit
    // never bridges them either way, or what it sent would come back.
    if app.is_own_user(&event.sender) {
        return Ok(());
    }
    let json: Value = serde_json::from_str(event.json.get())?;
    // Sent by a bridge as the user's own account (double puppeting): it came from the network,
    // so it is never bridged back.
    if double_puppet::is_double_puppeted(&json) {
        tracing::debug!(event_id = %event.event_id, "not bridged: double puppeted");
        return Ok(());
    }
    if bridge.refused(event, &json).await? || bridge.room_left(&event.room_id) {
        return Ok(());
    }
    let outcome = match event.event_type.as_str() {
        "m.room.member" => bridge.on_member(event, &json).await,
        "m.room.message" => {
            let store = bridge.store()?;
            let owner = store.management_owner(event.room_id.as_str()).await?;
            if owner.as_deref() == Some(event.sender.as_str()) {
                commands::handle(bridge, event, &json).await
            } else {
                bridge.on_message(event, &json).await
            }
        }
        "m.reaction" => bridge.on_reaction(event, &json).await,
        "m.room.redaction" => bridge.on_redaction(event, &json).await,
        "m.room.tombstone" => bridge.on_tombstone(event, &json).await,
        call if call.starts_with("m.call.") => bridge.on_call(event, &json).await,
        _ => Ok(()),
    };
    unsupported_is_fine(outcome, event.event_id.as_str())
}

/// An optional capability the network lacks is not a failure: the event is just not bridged.
fn unsupported_is_fine(outcome: NetworkResult<()>, what: &str) -> Result<(), BridgeError> {
    match outcome {
        Err(BridgeError::Unsupported(capability)) => {
            tracing::debug!(
                what,
                capability,
                "not bridged: the network has no such thing"
            );
            Ok(())
        }
        other => other,
    }
}

/// The content of a Matrix message, without a reply's fallback quote.
pub(crate) fn message_content(content: &RoomMessageEventContent) -> MessageContent {
    let html =
        |f: &Option<ruma::events::room::message::FormattedBody>| f.as_ref().map(|f| f.body.clone());
    let (kind, body, html, media) = match &content.msgtype {
        MessageType::Text(t) => (MessageKind::Text, t.body.clone(), html(&t.formatted), None),
        MessageType::Notice(t) => (
            MessageKind::Notice,
            t.body.clone(),
            html(&t.formatted),
            None,
        ),
        MessageType::Emote(t) => (MessageKind::Emote, t.body.clone(), html(&t.formatted), None),
        MessageType::Image(m) => (MessageKind::Text, m.body.clone(), None, mxc(&m.source)),
        MessageType::File(m) => (MessageKind::Text, m.body.clone(), None, mxc(&m.source)),
        MessageType::Audio(m) => (MessageKind::Text, m.body.clone(), None, mxc(&m.source)),
        MessageType::Video(m) => (MessageKind::Text, m.body.clone(), None, mxc(&m.source)),
        other => (MessageKind::Text, other.body().to_owned(), None, None),
    };
    let body = if matches!(content.relates_to, Some(Relation::Reply(_))) {
        strip_reply_fallback(&body)
    } else {
        body
    };
    let mimetype = match &content.msgtype {
        MessageType::Image(m) => m.info.as_ref().and_then(|i| i.mimetype.clone()),
        MessageType::File(m) => m.info.as_ref().and_then(|i| i.mimetype.clone()),
        MessageType::Audio(m) => m.info.as_ref().and_then(|i| i.mimetype.clone()),
        MessageType::Video(m) => m.info.as_ref().and_then(|i| i.mimetype.clone()),
        _ => None,
    };
    MessageContent {
        kind,
        body,
        html,
        media,
        mimetype,
    }
}

fn mxc(source: &ruma::events::room::MediaSource) -> Option<ruma::OwnedMxcUri> {
    match source {
        ruma::events::room::MediaSource::Plain(uri) => Some(uri.clone()),
        ruma::events::room::MediaSource::Encrypted(file) => Some(file.url.clone()),
    }
}

/// Drops the `> ` quote older clients put before a reply's text.
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#fallbacks-for-rich-replies>
pub(crate) fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_owned();
    }
    let rest: Vec<&str> = body.lines().skip_while(|l| l.starts_with("> ")).collect();
    let rest = rest.join("\n");
    rest.strip_prefix('\n').unwrap_or(&rest).to_owned()
}

impl<N: Network> BridgeHandle<N> {
    /// A user's display name in a room, or their user id (read as the bot).
    pub async fn display_name(&self, room_id: &RoomId, user: &UserId) -> String {
        self.member_content(room_id, user)
            .await
            .and_then(|c| c["displayname"].as_str().map(str::to_owned))
            .unwrap_or_else(|| user.to_string())
    }

    /// The content of a user's current `m.room.member` event in a room, read as the bot
    /// (`None` when they have none, or it cannot be read).
    pub async fn member_content(&self, room_id: &RoomId, user: &UserId) -> Option<Value> {
        let app = self.app().ok()?;
        app.state_content(room_id, StateEventType::RoomMember, user.as_str())
            .await
            .ok()
            .flatten()
    }

    /// A Matrix message of a room (read as the bot): its sender and content. `None` when it is
    /// not a message, or cannot be read.
    pub async fn matrix_message(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> NetworkResult<Option<(OwnedUserId, MessageContent)>> {
        let Ok(Some(event)) = self.room_event(room_id, event_id).await else {
            return Ok(None);
        };
        let (Ok(sender), Ok(content)) = (
            UserId::parse(event["sender"].as_str().unwrap_or_default()),
            serde_json::from_value::<RoomMessageEventContent>(event["content"].clone()),
        ) else {
            return Ok(None);
        };
        Ok(Some((sender, message_content(&content))))
    }

    /// An event of a room as JSON, read as the bot (with the homeserver's aggregations in
    /// `unsigned`). `None` when it is not JSON; an error when it cannot be read.
    pub(crate) async fn room_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> NetworkResult<Option<Value>> {
        let request = get_room_event::v3::Request::new(room_id.to_owned(), event_id.to_owned());
        let response = self
            .app()?
            .client()
            .send(request, AppserviceUserIdentity::default())
            .await?;
        Ok(response.event.deserialize_as::<Value>().ok())
    }

    /// The remote id a Matrix event maps to, in `chat`.
    pub(crate) async fn remote_for(
        &self,
        portal: &PortalRef<N>,
        event_id: &str,
    ) -> NetworkResult<Option<N::MessageId>> {
        let Some((chat, remote)) = self.store()?.remote_for_event(event_id).await? else {
            return Ok(None);
        };
        if chat != portal.chat.to_string() {
            return Ok(None);
        }
        Ok(remote.parse().ok())
    }

    async fn map_sent(
        &self,
        portal: &PortalRef<N>,
        remote: Option<N::MessageId>,
        event_id: &OwnedEventId,
    ) -> NetworkResult<()> {
        if let Some(remote) = remote {
            self.store()?
                .map_message(
                    &portal.chat.to_string(),
                    &remote.to_string(),
                    portal.room_id.as_str(),
                    event_id.as_str(),
                )
                .await?;
        }
        Ok(())
    }

    async fn on_message(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<()> {
        let Some(portal) = self.portal_for_room(&event.room_id).await? else {
            return Ok(());
        };
        let Some(speaker) = self.speaker_for(&portal, event).await? else {
            tracing::debug!(sender = %event.sender, "not bridged: no login that speaks, no relay");
            return Ok(());
        };
        let content: RoomMessageEventContent = serde_json::from_value(json["content"].clone())?;
        if let Some(Relation::Replacement(replacement)) = &content.relates_to {
            let Some(target) = self
                .remote_for(&portal, replacement.event_id.as_str())
                .await?
            else {
                return Ok(());
            };
            let new_content = RoomMessageEventContent::new(replacement.new_content.msgtype.clone());
            let remote = self
                .network()
                .edit_message(MatrixEdit {
                    bridge: self,
                    portal: &portal,
                    via: speaker.via(),
                    event_id: &event.event_id,
                    target,
                    content: message_content(&new_content),
                })
                .await?;
            return self.map_sent(&portal, remote, &event.event_id).await;
        }
        let MatrixTarget {
            in_reply_to,
            thread_root,
        } = self
            .matrix_target(&portal, content.relates_to.as_ref())
            .await?;
        let reply_to = match &in_reply_to {
            Some(target) => self.remote_for(&portal, target.as_str()).await?,
            None => None,
        };
        let sender: OwnedUserId = event.sender.clone();
        let sent = self
            .network()
            .send_message(MatrixMessage {
                bridge: self,
                portal: &portal,
                via: speaker.via(),
                sender: &sender,
                event_id: &event.event_id,
                content: message_content(&content),
                reply_to,
                in_reply_to,
                thread_root,
            })
            .await;
        match sent {
            Ok(remote) => {
                self.map_sent(&portal, remote, &event.event_id).await?;
                self.delivered(&portal, &event.event_id).await;
                Ok(())
            }
            Err(error) => match Outcome::of(&error) {
                Some((outcome, reason)) => {
                    self.not_delivered(&portal, &event.event_id, reason, outcome)
                        .await;
                    Ok(())
                }
                None => Err(error),
            },
        }
    }

    async fn on_reaction(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<()> {
        let Some(portal) = self.portal_for_room(&event.room_id).await? else {
            return Ok(());
        };
        let relates = &json["content"]["m.relates_to"];
        let (Some(target), Some(key)) = (relates["event_id"].as_str(), relates["key"].as_str())
        else {
            return Ok(());
        };
        let Some(target) = self.remote_for(&portal, target).await? else {
            return Ok(());
        };
        let Some(speaker) = self.speaker_for(&portal, event).await? else {
            return Ok(());
        };
        let remote = self
            .network()
            .react(MatrixReaction {
                portal: &portal,
                via: speaker.via(),
                event_id: &event.event_id,
                target,
                key: key.to_owned(),
            })
            .await?;
        self.map_sent(&portal, remote, &event.event_id).await
    }

    async fn on_redaction(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<()> {
        let Some(portal) = self.portal_for_room(&event.room_id).await? else {
            return Ok(());
        };
        // `content.redacts` from room version 11 on, the top-level `redacts` before.
        let redacts = json["content"]["redacts"]
            .as_str()
            .or_else(|| json["redacts"].as_str());
        let Some(redacts) = redacts else {
            return Ok(());
        };
        let Some(target) = self.remote_for(&portal, redacts).await? else {
            return Ok(());
        };
        let Some(speaker) = self.speaker_for(&portal, event).await? else {
            return Ok(());
        };
        self.network()
            .redact_message(MatrixRedaction {
                portal: &portal,
                via: speaker.via(),
                event_id: &event.event_id,
                target,
                reason: json["content"]["reason"].as_str(),
            })
            .await
    }

    async fn on_member(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<()> {
        let Some(state_key) = &event.state_key else {
            return Ok(());
        };
        let membership = json["content"]["membership"].as_str().unwrap_or_default();
        let app = self.app()?;
        if state_key == app.bot_user_id().as_str() {
            if membership == "invite" {
                return self.bot_invited(event, json).await;
            }
            return Ok(());
        }
        let Ok(user) = UserId::parse(state_key.as_str()) else {
            return Ok(());
        };
        // A ghost's own membership is the bridge's doing; a Matrix user kicking or banning
        // one is passed on (with the remote user it stands for), the rest is not.
        let mut remote = None;
        if app.is_own_user(&user) {
            if membership == "invite" {
                return self.ghost_invited(event, &user, json).await;
            }
            if !matches!(membership, "leave" | "ban") || event.sender == user {
                return Ok(());
            }
            let Some(remote_user) = self.network().user_for_ghost(user.localpart()) else {
                return Ok(());
            };
            remote = Some(remote_user);
        } else if matches!(membership, "leave" | "ban")
            && self.left_management_room(event, &user).await?
        {
            return Ok(());
        }
        let Some(portal) = self.portal_for_room(&event.room_id).await? else {
            return Ok(());
        };
        let change = MatrixMembership {
            portal: &portal,
            user: &user,
            membership: membership.to_owned(),
            sender: &event.sender,
            reason: json["content"]["reason"].as_str().map(str::to_owned),
            display_name: json["content"]["displayname"].as_str().map(str::to_owned),
            remote,
            previous: json["unsigned"]["prev_content"]["membership"]
                .as_str()
                .map(str::to_owned),
        };
        self.network().matrix_membership(self, change).await
    }

    /// A user who leaves their management room is done with it: the bot leaves too, and the
    /// next notice makes a new one. Returns whether it was their management room.
    async fn left_management_room(
        &self,
        event: &TimelineEvent,
        user: &UserId,
    ) -> NetworkResult<bool> {
        let store = self.store()?;
        if store.management_room(user.as_str()).await?.as_deref() != Some(event.room_id.as_str()) {
            return Ok(false);
        }
        store.forget_management_room(user.as_str()).await?;
        self.app()?.bot().leave(&event.room_id).await?;
        Ok(true)
    }

    /// The bot was invited: it joins. A direct chat becomes the inviter's management room.
    async fn bot_invited(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<()> {
        let app = self.app()?;
        if self
            .invited_to_replacement(event, app.bot_user_id(), json)
            .await?
        {
            return Ok(());
        }
        app.bot().join(&event.room_id).await?;
        if json["content"]["is_direct"].as_bool() == Some(true) {
            self.store()?
                .set_management_room(event.sender.as_str(), event.room_id.as_str())
                .await?;
            commands::welcome(self, &event.room_id).await?;
        }
        Ok(())
    }
}
