//! Acting as one of the appservice's users: the bot or a ghost.
//!
//! Every action goes through the durable outbox (see [`crate::outbox`]): it is stored first,
//! then sent in order with the other requests for its room. Awaiting an action waits until the
//! homeserver accepted it; [`Outgoing::queue`] returns as soon as it is stored. Ghosts are
//! registered on their first action and rooms joined on the first send; both are remembered in
//! the store so a restart does not redo them.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#identity-assertion>

mod ephemeral;
mod relations;

pub(crate) use relations::reply_content;

use std::{
    future::{Future, IntoFuture},
    pin::Pin,
};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId, OwnedMxcUri,
    OwnedTransactionId, OwnedUserId, RoomId, UserId,
    events::{MessageLikeEventContent, StateEventContent, room::message::RoomMessageEventContent},
};

use crate::{
    Appservice, Error, Result,
    queues::{Delivery, Op, next_txn_id},
};

/// One of the appservice's users, ready to act.
#[derive(Clone, Debug)]
pub struct Intent {
    app: Appservice,
    user_id: OwnedUserId,
    device_id: Option<OwnedDeviceId>,
}

/// Options for one send.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SendOptions {
    /// The transaction id; the homeserver does not duplicate a send repeated with the same id.
    /// Unset, it is derived from the event being handled (so handling it again after a crash
    /// repeats the same ids), or random outside a handler.
    pub txn_id: Option<OwnedTransactionId>,
    /// The event's timestamp (timestamp massaging), for bridged history.
    pub ts: Option<MilliSecondsSinceUnixEpoch>,
}

impl SendOptions {
    /// Sets the transaction id.
    pub fn txn_id(mut self, txn_id: impl Into<OwnedTransactionId>) -> Self {
        self.txn_id = Some(txn_id.into());
        self
    }

    /// Sets the timestamp.
    pub fn ts(mut self, ts: MilliSecondsSinceUnixEpoch) -> Self {
        self.ts = Some(ts);
        self
    }
}

impl Appservice {
    /// Acts as the bot.
    pub fn bot(&self) -> Intent {
        Intent::new(self.clone(), self.bot_user_id().clone())
    }

    /// Acts as any user of the appservice.
    pub fn intent(&self, user_id: &UserId) -> Intent {
        Intent::new(self.clone(), user_id.to_owned())
    }

    /// Acts as the ghost `@<localpart>:<server name>`.
    pub fn ghost(&self, localpart: &str) -> Result<Intent> {
        let user_id = UserId::parse(format!("@{localpart}:{}", self.server_name()))?;
        Ok(self.intent(&user_id))
    }
}

impl Intent {
    fn new(app: Appservice, user_id: OwnedUserId) -> Self {
        Intent {
            app,
            user_id,
            device_id: None,
        }
    }

    /// The same user acting through one of its devices (`device_id` assertion).
    pub fn with_device(mut self, device_id: OwnedDeviceId) -> Self {
        self.device_id = Some(device_id);
        self
    }

    /// The user this intent acts as.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Whether this is the appservice's bot.
    pub fn is_bot(&self) -> bool {
        self.user_id == *self.app.bot_user_id()
    }

    /// Registers the user on the homeserver now, unless that was already done.
    pub async fn ensure_registered(&self) -> Result<()> {
        let core = &self.app.queues().core;
        core.users
            .ensure_registered(&core.client, &self.user_id)
            .await
    }

    /// Stores `op` in the outbox and has it sent.
    async fn push(&self, op: Op) -> Result<Delivery> {
        let device_id = self.device_id.as_ref();
        self.app.queues().push(&self.user_id, device_id, op).await
    }

    async fn act(&self, op: Op) -> Result<()> {
        self.run(op).await?;
        Ok(())
    }

    /// Sends `op` and waits for the outcome: at once when its queue is idle and a handler's
    /// inbox item covers it, else through the outbox.
    async fn run(&self, op: Op) -> Result<Option<OwnedEventId>> {
        let device_id = self.device_id.as_ref();
        self.app.queues().run(&self.user_id, device_id, op).await
    }

    /// Joins a room.
    pub async fn join(&self, room_id: &RoomId) -> Result<()> {
        self.act(Op::Join {
            room_id: room_id.to_owned(),
        })
        .await
    }

    /// Joins a room unless the store knows the user is in it. A ghost that may not join (an
    /// invite-only room) is invited by the bot first.
    pub async fn ensure_joined(&self, room_id: &RoomId) -> Result<()> {
        if self.is_joined(room_id).await? {
            return Ok(());
        }
        self.join(room_id).await
    }

    async fn is_joined(&self, room_id: &RoomId) -> Result<bool> {
        let users = &self.app.queues().core.users;
        users.is_joined(room_id, &self.user_id).await
    }

    /// Invites a user.
    pub async fn invite(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        self.act(Op::Invite {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
        })
        .await
    }

    /// Leaves a room.
    pub async fn leave(&self, room_id: &RoomId) -> Result<()> {
        self.act(Op::Leave {
            room_id: room_id.to_owned(),
        })
        .await
    }

    /// Kicks a user.
    pub async fn kick(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        let reason = reason.map(str::to_owned);
        self.act(Op::Kick {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            reason,
        })
        .await
    }

    /// Bans a user.
    pub async fn ban(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        let reason = reason.map(str::to_owned);
        self.act(Op::Ban {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            reason,
        })
        .await
    }

    /// Sends a message-like event, joining the room first if needed.
    pub fn send<C: MessageLikeEventContent>(&self, room_id: &RoomId, content: &C) -> Outgoing {
        self.send_with(room_id, content, SendOptions::default())
    }

    /// Sends a message-like event with options.
    pub fn send_with<C: MessageLikeEventContent>(
        &self,
        room_id: &RoomId,
        content: &C,
        options: SendOptions,
    ) -> Outgoing {
        self.message(room_id, &content.event_type().to_string(), content, options)
    }

    /// Sends an event of any type from JSON content — for custom event types.
    pub fn send_json(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: serde_json::Value,
        options: SendOptions,
    ) -> Outgoing {
        self.message(room_id, event_type, &content, options)
    }

    fn message(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &impl serde::Serialize,
        options: SendOptions,
    ) -> Outgoing {
        let op = serde_json::value::to_raw_value(content).map(|content| Op::Message {
            room_id: room_id.to_owned(),
            event_type: event_type.to_owned(),
            content,
            txn_id: options.txn_id.unwrap_or_else(next_txn_id),
            ts: options.ts.map(|ts| ts.get().into()),
        });
        self.outgoing(op)
    }

    /// Sends a plain-text `m.text` message.
    pub fn send_text(&self, room_id: &RoomId, text: &str) -> Outgoing {
        self.send(room_id, &RoomMessageEventContent::text_plain(text))
    }

    /// Sends a state event.
    pub fn send_state<C: StateEventContent>(
        &self,
        room_id: &RoomId,
        state_key: &str,
        content: &C,
    ) -> Outgoing {
        let event_type = content.event_type().to_string();
        let op = serde_json::value::to_raw_value(content).map(|content| Op::State {
            room_id: room_id.to_owned(),
            event_type,
            state_key: state_key.to_owned(),
            content,
            ts: None,
        });
        self.outgoing(op)
    }

    /// Sends a state event of any type from JSON content, optionally with a massaged timestamp.
    pub fn send_state_json(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
        content: serde_json::Value,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Outgoing {
        let op = serde_json::value::to_raw_value(&content).map(|content| Op::State {
            room_id: room_id.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.to_owned(),
            content,
            ts: ts.map(|ts| ts.get().into()),
        });
        self.outgoing(op)
    }

    /// Redacts an event.
    pub fn redact(&self, room_id: &RoomId, event_id: &EventId, reason: Option<&str>) -> Outgoing {
        self.outgoing(Ok(Op::Redact {
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
            reason: reason.map(str::to_owned),
            txn_id: next_txn_id(),
        }))
    }

    fn outgoing(&self, op: serde_json::Result<Op>) -> Outgoing {
        Outgoing {
            intent: self.clone(),
            op: op.map_err(Error::from),
        }
    }

    /// Sets the display name, unless the store says it is already that.
    pub async fn set_display_name(&self, name: &str) -> Result<()> {
        let known = self
            .app
            .store()
            .ghost(self.user_id.as_str())
            .await?
            .and_then(|g| g.display_name);
        if known.as_deref() == Some(name) {
            return Ok(());
        }
        self.act(Op::DisplayName {
            name: name.to_owned(),
        })
        .await
    }

    /// Sets the avatar, unless the store says it is already that.
    pub async fn set_avatar_url(&self, url: &OwnedMxcUri) -> Result<()> {
        let known = self
            .app
            .store()
            .ghost(self.user_id.as_str())
            .await?
            .and_then(|g| g.avatar_url);
        if known.as_deref() == Some(url.as_str()) {
            return Ok(());
        }
        self.act(Op::AvatarUrl { url: url.clone() }).await
    }
}

/// An event on its way out. Await it to get the event id once the homeserver accepted it, or
/// [`queue`](Outgoing::queue) it to return as soon as it is stored.
#[must_use = "an Outgoing does nothing until awaited or queued"]
pub struct Outgoing {
    intent: Intent,
    op: Result<Op>,
}

impl Outgoing {
    /// Stores the event in the outbox (after a join, if the sender is not in the room yet) and
    /// returns at once. The returned [`Delivery`] can be awaited for the event id, or dropped.
    pub async fn queue(self) -> Result<Delivery> {
        let op = self.op?;
        if let Op::Message { room_id, .. } | Op::State { room_id, .. } | Op::Redact { room_id, .. } =
            &op
            && !self.intent.is_joined(room_id).await?
            && !self
                .intent
                .app
                .queues()
                .core
                .users
                .join_queued(room_id, &self.intent.user_id)
        {
            // Queued ahead of the event in the same room queue, so it is sent first; the
            // outcome is not awaited: the event's own delivery reports any failure.
            drop(
                self.intent
                    .push(Op::Join {
                        room_id: room_id.clone(),
                    })
                    .await?,
            );
        }
        self.intent.push(op).await
    }
}

impl IntoFuture for Outgoing {
    type Output = Result<OwnedEventId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Outgoing { intent, op } = self;
            let op = op?;
            let room_id = match &op {
                Op::Message { room_id, .. }
                | Op::State { room_id, .. }
                | Op::Redact { room_id, .. } => Some(room_id.clone()),
                _ => None,
            };
            let event_id = match room_id {
                // Awaited, so nothing else of this handler can be in line behind it: sent
                // directly when the room's queue is idle, joining first if needed.
                Some(room_id)
                    if !(intent.app.queues().core.users)
                        .join_is_queued(&room_id, &intent.user_id) =>
                {
                    if !intent.is_joined(&room_id).await? {
                        intent.run(Op::Join { room_id }).await?;
                    }
                    intent.run(op).await?
                }
                _ => Outgoing { intent, op: Ok(op) }.queue().await?.await?,
            };
            event_id.ok_or_else(|| Error::Other("the homeserver returned no event id".into()))
        })
    }
}

impl From<Intent> for OwnedUserId {
    fn from(intent: Intent) -> Self {
        intent.user_id
    }
}
