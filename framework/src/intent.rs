//! Acting as one of the appservice's users: the bot or a ghost.
//!
//! An [`Intent`] sends client-server requests with the `as_token` and identity assertion. Ghosts
//! are registered on first use, and rooms are joined on first send; both are remembered in the
//! store so a restart does not redo them.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#identity-assertion>

mod relations;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId, OwnedMxcUri,
    OwnedTransactionId, OwnedUserId, RoomId, TransactionId, UserId,
    api::{
        AppserviceUserIdentity, OutgoingRequest,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::{
            account::register::{self, LoginType},
            membership::{ban_user, invite_user, join_room_by_id, kick_user, leave_room},
            message::send_message_event,
            profile::set_profile_field,
            redact::redact_event,
            state::send_state_event,
        },
        error::ErrorKind,
    },
    events::{
        AnyMessageLikeEventContent, AnyStateEventContent, MessageLikeEventContent,
        MessageLikeEventType, StateEventContent, StateEventType,
        room::message::RoomMessageEventContent,
    },
    profile::ProfileFieldValue,
    serde::Raw,
};

use crate::{Appservice, Error, Result, client::PathInput};

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
    /// The transaction id; a resend with the same id is not duplicated by the homeserver.
    /// A fresh one is made when unset.
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

impl Intent {
    pub(crate) fn new(app: Appservice, user_id: OwnedUserId) -> Self {
        Intent {
            app,
            user_id,
            device_id: None,
        }
    }

    /// The same user acting through one of its devices (`device_id` assertion, MSC3202/v1.17).
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

    fn identity(&self) -> AppserviceUserIdentity<'_> {
        let mut identity = AppserviceUserIdentity::new(&self.user_id);
        identity.device_id = self.device_id.as_deref();
        identity
    }

    /// Sends any ruma request as this user, registering the user first if needed.
    pub async fn send_request<R>(&self, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        Error: From<ruma::api::error::FromHttpResponseError<R::EndpointError>>,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.ensure_registered().await?;
        self.app.client().send(request, self.identity()).await
    }

    /// Registers the user on the homeserver unless that was already done. The bot exists from
    /// the homeserver's start; `M_USER_IN_USE` means someone registered it before us.
    pub async fn ensure_registered(&self) -> Result<()> {
        if self.is_bot()
            || self
                .app
                .inner
                .registered
                .lock()
                .await
                .contains(&self.user_id)
        {
            return Ok(());
        }
        let store = self.app.store();
        if !store
            .ghost(self.user_id.as_str())
            .await?
            .is_some_and(|g| g.registered)
        {
            let mut request = register::v3::Request::new();
            request.username = Some(self.user_id.localpart().to_owned());
            request.login_type = Some(LoginType::ApplicationService);
            request.inhibit_login = true;
            // Registration is done as the appservice itself, not as the ghost.
            match self
                .app
                .client()
                .send(request, AppserviceUserIdentity::default())
                .await
            {
                Ok(_) => tracing::debug!(user_id = %self.user_id, "registered ghost"),
                Err(e) if matches!(e.kind(), Some(ErrorKind::UserInUse)) => {}
                Err(e) => return Err(e),
            }
            store.set_ghost_registered(self.user_id.as_str()).await?;
        }
        self.app
            .inner
            .registered
            .lock()
            .await
            .insert(self.user_id.clone());
        Ok(())
    }

    /// Joins a room.
    pub async fn join(&self, room_id: &RoomId) -> Result<()> {
        self.send_request(join_room_by_id::v3::Request::new(room_id.to_owned()))
            .await?;
        self.app
            .store()
            .set_membership(room_id.as_str(), self.user_id.as_str(), "join")
            .await
    }

    /// Joins a room unless the store knows the user is in it. A ghost that may not join (an
    /// invite-only room) is invited by the bot first.
    pub async fn ensure_joined(&self, room_id: &RoomId) -> Result<()> {
        let store = self.app.store();
        if store
            .membership(room_id.as_str(), self.user_id.as_str())
            .await?
            .as_deref()
            == Some("join")
        {
            return Ok(());
        }
        match self.join(room_id).await {
            Err(e) if e.is_forbidden() && !self.is_bot() => {
                self.app.bot().invite(room_id, &self.user_id).await?;
                self.join(room_id).await
            }
            other => other,
        }
    }

    /// Invites a user.
    pub async fn invite(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        let recipient = invite_user::v3::InviteUserId::new(user_id.to_owned());
        self.send_request(invite_user::v3::Request::new(
            room_id.to_owned(),
            recipient.into(),
        ))
        .await?;
        Ok(())
    }

    /// Leaves a room.
    pub async fn leave(&self, room_id: &RoomId) -> Result<()> {
        self.send_request(leave_room::v3::Request::new(room_id.to_owned()))
            .await?;
        self.app
            .store()
            .set_membership(room_id.as_str(), self.user_id.as_str(), "leave")
            .await
    }

    /// Kicks a user.
    pub async fn kick(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut request = kick_user::v3::Request::new(room_id.to_owned(), user_id.to_owned());
        request.reason = reason.map(str::to_owned);
        self.send_request(request).await?;
        Ok(())
    }

    /// Bans a user.
    pub async fn ban(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut request = ban_user::v3::Request::new(room_id.to_owned(), user_id.to_owned());
        request.reason = reason.map(str::to_owned);
        self.send_request(request).await?;
        Ok(())
    }

    /// Sends a message-like event, joining the room first if needed.
    pub async fn send<C>(&self, room_id: &RoomId, content: &C) -> Result<OwnedEventId>
    where
        C: MessageLikeEventContent,
    {
        self.send_with(room_id, content, SendOptions::default())
            .await
    }

    /// Sends a message-like event with options.
    pub async fn send_with<C>(
        &self,
        room_id: &RoomId,
        content: &C,
        options: SendOptions,
    ) -> Result<OwnedEventId>
    where
        C: MessageLikeEventContent,
    {
        let raw = Raw::new(content)?.cast_unchecked::<AnyMessageLikeEventContent>();
        self.send_raw_with(room_id, content.event_type(), raw, options)
            .await
    }

    /// Sends an event of any type from raw JSON content — for custom event types.
    pub async fn send_json(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: serde_json::Value,
        options: SendOptions,
    ) -> Result<OwnedEventId> {
        let raw = Raw::new(&content)?.cast_unchecked::<AnyMessageLikeEventContent>();
        self.send_raw_with(room_id, event_type.into(), raw, options)
            .await
    }

    async fn send_raw_with(
        &self,
        room_id: &RoomId,
        event_type: MessageLikeEventType,
        body: Raw<AnyMessageLikeEventContent>,
        options: SendOptions,
    ) -> Result<OwnedEventId> {
        self.ensure_joined(room_id).await?;
        let txn_id = options.txn_id.unwrap_or_else(TransactionId::new);
        let mut request =
            send_message_event::v3::Request::new_raw(room_id.to_owned(), txn_id, event_type, body);
        request.timestamp = options.ts;
        Ok(self.send_request(request).await?.event_id)
    }

    /// Sends a plain-text `m.text` message.
    pub async fn send_text(&self, room_id: &RoomId, text: &str) -> Result<OwnedEventId> {
        self.send(room_id, &RoomMessageEventContent::text_plain(text))
            .await
    }

    /// Sends a state event.
    pub async fn send_state<C>(
        &self,
        room_id: &RoomId,
        state_key: &str,
        content: &C,
    ) -> Result<OwnedEventId>
    where
        C: StateEventContent,
    {
        let raw = Raw::new(content)?.cast_unchecked::<AnyStateEventContent>();
        self.send_state_json(room_id, content.event_type(), state_key, raw, None)
            .await
    }

    /// Sends a state event from raw content, optionally with a massaged timestamp.
    pub async fn send_state_json(
        &self,
        room_id: &RoomId,
        event_type: StateEventType,
        state_key: &str,
        content: Raw<AnyStateEventContent>,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId> {
        let mut request = send_state_event::v3::Request::new_raw(
            room_id.to_owned(),
            event_type,
            state_key.to_owned(),
            content,
        );
        request.timestamp = ts;
        Ok(self.send_request(request).await?.event_id)
    }

    /// Redacts an event.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        let mut request = redact_event::v3::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            TransactionId::new(),
        );
        request.reason = reason.map(str::to_owned);
        Ok(self.send_request(request).await?.event_id)
    }

    /// Sets the display name, unless the store says it is already that.
    pub async fn set_display_name(&self, name: &str) -> Result<()> {
        let store = self.app.store();
        let known = store
            .ghost(self.user_id.as_str())
            .await?
            .and_then(|g| g.display_name);
        if known.as_deref() == Some(name) {
            return Ok(());
        }
        let value = ProfileFieldValue::DisplayName(name.to_owned());
        self.send_request(set_profile_field::v3::Request::new(
            self.user_id.clone(),
            value,
        ))
        .await?;
        store
            .set_ghost_display_name(self.user_id.as_str(), Some(name))
            .await
    }

    /// Sets the avatar, unless the store says it is already that.
    pub async fn set_avatar_url(&self, url: &OwnedMxcUri) -> Result<()> {
        let store = self.app.store();
        let known = store
            .ghost(self.user_id.as_str())
            .await?
            .and_then(|g| g.avatar_url);
        if known.as_deref() == Some(url.as_str()) {
            return Ok(());
        }
        let value = ProfileFieldValue::AvatarUrl(url.clone());
        self.send_request(set_profile_field::v3::Request::new(
            self.user_id.clone(),
            value,
        ))
        .await?;
        store
            .set_ghost_avatar_url(self.user_id.as_str(), Some(url.as_str()))
            .await
    }
}

impl From<Intent> for OwnedUserId {
    fn from(intent: Intent) -> Self {
        intent.user_id
    }
}
