//! What happens on the network, turned into ghost actions in the right portal.

use std::time::Duration;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedMxcUri, OwnedTransactionId,
    events::{
        MessageLikeEventType,
        reaction::ReactionEventContent,
        relation::Annotation,
        room::{
            ImageInfo,
            message::{
                AudioMessageEventContent, EmoteMessageEventContent, FileInfo,
                FileMessageEventContent, ImageMessageEventContent, MessageType,
                NoticeMessageEventContent, ReplacementMetadata, RoomMessageEventContent,
                TextMessageEventContent, VideoMessageEventContent,
            },
        },
    },
};
use trestle::{Intent, intent::SendOptions};

use super::{
    BridgeHandle, ChatInfo, MessageContent, MessageKind, Network, NetworkResult, PortalRef,
    UserInfo, double_puppet::OwnEvent,
};

/// A message seen on the network, for [`BridgeHandle::remote_message`].
#[non_exhaustive]
pub struct RemoteMessage<N: Network> {
    /// The chat it was sent in.
    pub chat: N::ChatId,
    /// Who sent it.
    pub sender: N::UserId,
    /// Its id, unique in the chat: a message seen twice (by two logins, or echoed back after
    /// being sent from Matrix) is bridged once.
    pub id: N::MessageId,
    /// What it says.
    pub content: MessageContent,
    /// The message it replies to.
    pub reply_to: Option<N::MessageId>,
    /// The thread it is in: the id of the thread's root message.
    pub thread_root: Option<N::MessageId>,
    /// When it was sent, for the Matrix event's timestamp.
    pub ts: Option<MilliSecondsSinceUnixEpoch>,
    /// The sender's profile, synced to their ghost when it changed.
    pub sender_info: Option<UserInfo>,
}

impl<N: Network> RemoteMessage<N> {
    /// A message from its required parts.
    pub fn new(
        chat: N::ChatId,
        sender: N::UserId,
        id: N::MessageId,
        content: MessageContent,
    ) -> Self {
        RemoteMessage {
            chat,
            sender,
            id,
            content,
            reply_to: None,
            thread_root: None,
            ts: None,
            sender_info: None,
        }
    }

    /// The same, replying to `target`.
    pub fn reply_to(mut self, target: N::MessageId) -> Self {
        self.reply_to = Some(target);
        self
    }

    /// The same, in the thread whose root is `root` (replying, with [`Self::reply_to`], to a
    /// message in that thread, or to none).
    pub fn in_thread(mut self, root: N::MessageId) -> Self {
        self.thread_root = Some(root);
        self
    }

    /// The same, sent at `ts`.
    pub fn ts(mut self, ts: MilliSecondsSinceUnixEpoch) -> Self {
        self.ts = Some(ts);
        self
    }

    /// The same, with the sender's profile.
    pub fn sender_info(mut self, info: UserInfo) -> Self {
        self.sender_info = Some(info);
        self
    }
}

/// An edit seen on the network, for [`BridgeHandle::remote_edit`].
#[non_exhaustive]
pub struct RemoteEdit<N: Network> {
    /// The chat.
    pub chat: N::ChatId,
    /// Who edited.
    pub sender: N::UserId,
    /// The message edited.
    pub target: N::MessageId,
    /// The edit's own id, if the network gives edits one.
    pub id: Option<N::MessageId>,
    /// The new content.
    pub content: MessageContent,
}

impl<N: Network> RemoteEdit<N> {
    /// An edit from its parts.
    pub fn new(
        chat: N::ChatId,
        sender: N::UserId,
        target: N::MessageId,
        content: MessageContent,
    ) -> Self {
        RemoteEdit {
            chat,
            sender,
            target,
            id: None,
            content,
        }
    }
}

/// A reaction seen on the network, for [`BridgeHandle::remote_reaction`].
#[non_exhaustive]
pub struct RemoteReaction<N: Network> {
    /// The chat.
    pub chat: N::ChatId,
    /// Who reacted.
    pub sender: N::UserId,
    /// The message reacted to.
    pub target: N::MessageId,
    /// The reaction's own id, if it has one (to redact it later).
    pub id: Option<N::MessageId>,
    /// The key (an emoji, usually).
    pub key: String,
}

impl<N: Network> RemoteReaction<N> {
    /// A reaction from its parts.
    pub fn new(
        chat: N::ChatId,
        sender: N::UserId,
        target: N::MessageId,
        key: impl Into<String>,
    ) -> Self {
        RemoteReaction {
            chat,
            sender,
            target,
            id: None,
            key: key.into(),
        }
    }
}

/// A membership change seen on the network, for [`BridgeHandle::remote_membership`].
#[non_exhaustive]
pub enum RemoteMembership<N: Network> {
    /// The user joined the chat.
    Join,
    /// The user left, with a reason.
    Leave(Option<String>),
    /// The user was removed by `by` (or by the network itself).
    Kick {
        /// Who removed them.
        by: Option<N::UserId>,
        /// Why.
        reason: Option<String>,
    },
}

/// Builds the Matrix content of a message.
pub(crate) fn matrix_content(content: &MessageContent) -> RoomMessageEventContent {
    let body = content.body.clone();
    if let Some(url) = &content.media {
        return RoomMessageEventContent::new(media_type(
            body,
            url.clone(),
            content.mimetype.as_deref(),
        ));
    }
    let msgtype = match (content.kind, &content.html) {
        (MessageKind::Notice, Some(html)) => {
            MessageType::Notice(NoticeMessageEventContent::html(body, html.clone()))
        }
        (MessageKind::Notice, None) => MessageType::Notice(NoticeMessageEventContent::plain(body)),
        (MessageKind::Emote, Some(html)) => {
            MessageType::Emote(EmoteMessageEventContent::html(body, html.clone()))
        }
        (MessageKind::Emote, None) => MessageType::Emote(EmoteMessageEventContent::plain(body)),
        (_, Some(html)) => MessageType::Text(TextMessageEventContent::html(body, html.clone())),
        (_, None) => MessageType::Text(TextMessageEventContent::plain(body)),
    };
    RoomMessageEventContent::new(msgtype)
}

/// The message type of a file, by its MIME type.
fn media_type(body: String, url: OwnedMxcUri, mimetype: Option<&str>) -> MessageType {
    let info = mimetype.map(|m| {
        let mut info = FileInfo::new();
        info.mimetype = Some(m.to_owned());
        info
    });
    match mimetype.and_then(|m| m.split('/').next()) {
        Some("image") => {
            let mut image = ImageMessageEventContent::plain(body, url);
            image.info = info.map(|i| {
                let mut image_info = ImageInfo::new();
                image_info.mimetype = i.mimetype;
                Box::new(image_info)
            });
            MessageType::Image(image)
        }
        Some("video") => MessageType::Video(VideoMessageEventContent::plain(body, url)),
        Some("audio") => MessageType::Audio(AudioMessageEventContent::plain(body, url)),
        _ => MessageType::File(FileMessageEventContent::plain(body, url).info(info.map(Box::new))),
    }
}

/// A transaction id that is the same each time one remote message is bridged into one room,
/// so a retry after a crash does not send it twice (the homeserver answers a repeated
/// transaction id with the first event).
fn txn_id(room: &ruma::RoomId, chat: &str, id: &str) -> OwnedTransactionId {
    OwnedTransactionId::from(format!("bridge.{room}.{chat}.{id}"))
}

impl<N: Network> BridgeHandle<N> {
    /// Sets a ghost's display name and avatar where they changed.
    async fn sync_profile(&self, ghost: &Intent, info: &UserInfo) -> NetworkResult<()> {
        if let Some(name) = &info.display_name {
            ghost.set_display_name(name).await?;
        }
        if let Some(url) = &info.avatar_url {
            ghost.set_avatar_url(url).await?;
        }
        Ok(())
    }

    /// Updates a remote user's ghost profile (display name, avatar), where it changed.
    pub async fn remote_profile(&self, user: &N::UserId, info: &UserInfo) -> NetworkResult<()> {
        let ghost = self.ghost(user)?;
        self.sync_profile(&ghost, info).await
    }

    /// The Matrix event a remote message was bridged to (or from), if any.
    pub async fn event_for(
        &self,
        chat: &N::ChatId,
        message: &N::MessageId,
    ) -> NetworkResult<Option<OwnedEventId>> {
        let found = self
            .store()?
            .event_for_remote(&chat.to_string(), &message.to_string())
            .await?;
        Ok(found.map(EventId::parse).transpose()?)
    }

    /// Bridges a remote message: its sender's ghost says it in the chat's portal (made first if
    /// there is none), replying where it replies and in its thread (`m.thread`) if it is in
    /// one, and the ids are mapped. A message already mapped (seen through another login, an
    /// echo of one sent from Matrix, or posted meanwhile by a history fill or catch-up) is
    /// skipped: then `None`. While the chat's history is being filled in or caught up (module
    /// `history`), it waits, so it comes after what was missed.
    pub async fn remote_message(
        &self,
        message: RemoteMessage<N>,
    ) -> NetworkResult<Option<OwnedEventId>> {
        // Checked before the portal too, so that an echo makes no portal.
        if self.event_for(&message.chat, &message.id).await?.is_some() {
            return Ok(None);
        }
        let portal = self.ensure_portal(&message.chat).await?;
        let _gate = self.close_gate(&message.chat).await;
        self.post_remote(&portal, message).await
    }

    /// Posts a remote message in its portal unless it was bridged already; the chat's gate is
    /// held by the caller.
    pub(crate) async fn post_remote(
        &self,
        portal: &PortalRef<N>,
        message: RemoteMessage<N>,
    ) -> NetworkResult<Option<OwnedEventId>> {
        let store = self.store()?;
        let chat_key = message.chat.to_string();
        let id_key = message.id.to_string();
        if store.event_for_remote(&chat_key, &id_key).await?.is_some() {
            return Ok(None);
        }
        let mut content = matrix_content(&message.content);
        content.relates_to = self
            .remote_relation(
                portal,
                message.thread_root.as_ref(),
                message.reply_to.as_ref(),
            )
            .await?;
        let txn_id = txn_id(&portal.room_id, &chat_key, &id_key);
        let own = OwnEvent::new(&portal.room_id, MessageLikeEventType::RoomMessage, &content)
            .txn_id(txn_id.clone())
            .ts(message.ts);
        let event_id = match self.send_as_own(&message.sender, own).await? {
            Some(event_id) => event_id,
            None => {
                let ghost = self.ghost(&message.sender)?;
                if let Some(info) = &message.sender_info {
                    self.sync_profile(&ghost, info).await?;
                }
                let mut options = SendOptions::default().txn_id(txn_id);
                if let Some(ts) = message.ts {
                    options = options.ts(ts);
                }
                ghost.send_with(&portal.room_id, &content, options).await?
            }
        };
        store
            .map_message(
                &chat_key,
                &id_key,
                portal.room_id.as_str(),
                event_id.as_str(),
            )
            .await?;
        store.history_bridged(&chat_key, &id_key).await?;
        Ok(Some(event_id))
    }

    /// The portal of `chat` and the event `message` was bridged to, when both exist and the
    /// event is in the portal's current room: what the network's edits, redactions, reactions
    /// and receipts act on (one in a room an upgrade left behind belongs there, locked).
    pub(crate) async fn live_target(
        &self,
        chat: &N::ChatId,
        message: &N::MessageId,
    ) -> NetworkResult<Option<(PortalRef<N>, OwnedEventId)>> {
        let Some(portal) = self.portal(chat).await? else {
            return Ok(None);
        };
        let Some(event_id) = self.event_for(chat, message).await? else {
            return Ok(None);
        };
        if self.left_behind(&portal, &event_id).await? {
            return Ok(None);
        }
        Ok(Some((portal, event_id)))
    }

    /// Bridges a remote edit as an `m.replace` of the mapped message. Skipped (`None`) when the
    /// edited message was never bridged, or is in a room an upgrade left behind.
    pub async fn remote_edit(&self, edit: RemoteEdit<N>) -> NetworkResult<Option<OwnedEventId>> {
        let Some((portal, original)) = self.live_target(&edit.chat, &edit.target).await? else {
            return Ok(None);
        };
        let content = matrix_content(&edit.content)
            .make_replacement(ReplacementMetadata::new(original.clone(), None));
        let own = OwnEvent::new(&portal.room_id, MessageLikeEventType::RoomMessage, &content);
        let event_id = match self.send_as_own(&edit.sender, own).await? {
            Some(event_id) => event_id,
            None => {
                self.ghost(&edit.sender)?
                    .edit(&portal.room_id, &original, matrix_content(&edit.content))
                    .await?
            }
        };
        if let Some(id) = &edit.id {
            self.store()?
                .map_message(
                    &edit.chat.to_string(),
                    &id.to_string(),
                    portal.room_id.as_str(),
                    event_id.as_str(),
                )
                .await?;
        }
        Ok(Some(event_id))
    }

    /// Bridges a remote deletion as a redaction of the mapped event, by the sender's ghost.
    /// Returns whether there was something to redact (not in a room an upgrade left behind).
    pub async fn remote_redaction(
        &self,
        chat: &N::ChatId,
        sender: &N::UserId,
        target: &N::MessageId,
    ) -> NetworkResult<bool> {
        let Some((portal, event_id)) = self.live_target(chat, target).await? else {
            return Ok(false);
        };
        if !self
            .redact_as_own(sender, &portal, &target.to_string(), &event_id)
            .await?
        {
            self.ghost(sender)?
                .redact(&portal.room_id, &event_id, None)
                .await?;
        }
        Ok(true)
    }

    /// Bridges a remote reaction as an `m.reaction` to the mapped event. Skipped (`None`) when
    /// the message was never bridged, or is in a room an upgrade left behind.
    pub async fn remote_reaction(
        &self,
        reaction: RemoteReaction<N>,
    ) -> NetworkResult<Option<OwnedEventId>> {
        let Some((portal, target)) = self.live_target(&reaction.chat, &reaction.target).await?
        else {
            return Ok(None);
        };
        let content =
            ReactionEventContent::new(Annotation::new(target.clone(), reaction.key.clone()));
        let own = OwnEvent::new(&portal.room_id, MessageLikeEventType::Reaction, &content);
        let event_id = match self.send_as_own(&reaction.sender, own).await? {
            Some(event_id) => event_id,
            None => {
                self.ghost(&reaction.sender)?
                    .react(&portal.room_id, &target, &reaction.key)
                    .await?
            }
        };
        if let Some(id) = &reaction.id {
            self.store()?
                .map_message(
                    &reaction.chat.to_string(),
                    &id.to_string(),
                    portal.room_id.as_str(),
                    event_id.as_str(),
                )
                .await?;
        }
        Ok(Some(event_id))
    }

    /// Shows a remote user typing (or not) in the chat's portal, if it has one.
    pub async fn remote_typing(
        &self,
        chat: &N::ChatId,
        user: &N::UserId,
        typing: bool,
    ) -> NetworkResult<()> {
        if let Some(portal) = self.portal(chat).await? {
            self.ghost(user)?
                .typing(&portal.room_id, typing, Some(Duration::from_secs(30)))
                .await?;
        }
        Ok(())
    }

    /// Bridges a remote membership change to the ghost's membership in the chat's portal, if
    /// it has one. Changes of a Matrix user's own login (their puppet) are not bridged: the
    /// Matrix user is in the room already.
    pub async fn remote_membership(
        &self,
        chat: &N::ChatId,
        user: &N::UserId,
        change: RemoteMembership<N>,
    ) -> NetworkResult<()> {
        let Some(portal) = self.portal(chat).await? else {
            return Ok(());
        };
        if self
            .store()?
            .is_login_remote_user(&user.to_string())
            .await?
        {
            return Ok(());
        }
        let ghost = self.ghost(user)?;
        match change {
            RemoteMembership::Join => ghost.ensure_joined(&portal.room_id).await?,
            RemoteMembership::Leave(_) => ghost.leave(&portal.room_id).await?,
            RemoteMembership::Kick { by, reason } => {
                let kicker = match by {
                    Some(by) => self.ghost(&by)?,
                    None => self.app()?.bot(),
                };
                kicker
                    .kick(&portal.room_id, ghost.user_id(), reason.as_deref())
                    .await?
            }
        }
        Ok(())
    }

    /// Bridges a chat's new name or topic to its portal (as the bot), if it has one.
    pub async fn remote_chat_info(&self, chat: &N::ChatId, info: &ChatInfo) -> NetworkResult<()> {
        let Some(portal) = self.portal(chat).await? else {
            return Ok(());
        };
        let bot = self.app()?.bot();
        if let Some(name) = &info.name {
            bot.send_state_json(
                &portal.room_id,
                "m.room.name",
                "",
                serde_json::json!({ "name": name }),
                None,
            )
            .await?;
        }
        if let Some(topic) = &info.topic {
            bot.send_state_json(
                &portal.room_id,
                "m.room.topic",
                "",
                serde_json::json!({ "topic": topic }),
                None,
            )
            .await?;
        }
        Ok(())
    }
}
