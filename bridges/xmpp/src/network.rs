//! The XMPP side of the bridge kit: `trestle_bridge::Network` for the hub. Matrix users speak
//! as their own JIDs on the component (their automatic logins, [`users`]); a portal's room is
//! heard by the bot's occupant.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_xmpp::{
    jid::{BareJid, FullJid, Jid},
    parsers::message::Message,
};
use trestle::ruma::UserId as MatrixUserId;
use trestle_bridge::{
    BridgeError, Capabilities, ChatInfo, HistoryRequest, InfoSection, Login, LoginHandle,
    LoginRequest, MatrixEdit, MatrixMembership, MatrixMessage, MatrixReaction, MatrixReceipt,
    MatrixRedaction, MatrixTyping, MessageContent, MessageKind, Network, NetworkResult, NewLogin,
    Protocol, RemoteMessage, Via,
};

use crate::{
    accounts::{self, ACCOUNT_LOGIN_ID},
    chatstates, events, files,
    hub::{Hub, Kit, Puppet},
    ids::{self, ChatId, UserId},
    occupants, powers,
    users::{self, LOGIN_ID},
    xmpp::stanzas,
};

/// How long making a portal waits for the bot to be in the room (to read its subject).
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// What a Matrix user's login keeps: their JID on the component (nothing else: the component
/// needs no password), or their own XMPP account's JID and password (kept in the kit's
/// logins table, in the appservice's store, as the user gave it).
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginData {
    /// The user's JID: on the component, or their own account's.
    pub jid: String,
    /// Their own account's password; none for their JID on the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for LoginData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("LoginData")
            .field("jid", &self.jid)
            .finish_non_exhaustive()
    }
}

/// The XMPP text of a Matrix message: `/me` for an emote (XEP-0245), a link for media.
async fn xmpp_text(bridge: &Kit, content: &MessageContent) -> String {
    let mut text = content.body.clone();
    if let Some(mxc) = &content.media {
        match bridge.media_link(mxc).await {
            Ok(link) if text.is_empty() => text = link,
            Ok(link) => text = format!("{text}: {link}"),
            Err(error) => tracing::warn!(%mxc, %error, "could not make a media link"),
        }
    }
    match content.kind {
        MessageKind::Emote => format!("/me {text}"),
        _ => text,
    }
}

/// The JID a Matrix message is sent from: the sender's own, or the bot's when relayed (in
/// rooms only).
fn sender_jid(hub: &Hub, chat: &ChatId, via: &Via<'_, Hub>) -> NetworkResult<FullJid> {
    match via {
        Via::Puppet { connection, .. } => Ok(connection.full.clone()),
        Via::Relay { .. } if matches!(chat, ChatId::Muc(_)) => Ok(hub.bot_jid().clone()),
        _ => Err(BridgeError::Unsupported("this way of sending")),
    }
}

impl Hub {
    /// The message that sends `body` (with the id `id`, a correction of `replaces` if set, a
    /// reply to `reply_to`, the id the chat knows it by) to a chat as the sender's JID, or
    /// relayed by the bot with their name.
    fn outgoing(
        &self,
        chat: &ChatId,
        via: &Via<'_, Hub>,
        id: &str,
        body: &str,
        replaces: Option<&str>,
        reply_to: Option<&str>,
    ) -> NetworkResult<Message> {
        let from = sender_jid(self, chat, via)?;
        let body = match via {
            Via::Relay { name } => format!("<{name}> {body}"),
            _ => body.to_owned(),
        };
        let message = match chat {
            ChatId::Muc(room) => stanzas::groupchat(&from, room, id, &body),
            ChatId::Direct { remote, .. } => stanzas::chat(&from, remote, id, &body),
        };
        let message = match replaces {
            Some(target) => stanzas::correction(message, target),
            None => message,
        };
        let message = match reply_to {
            Some(target) => stanzas::reply(message, target),
            None => message,
        };
        // Clients mark only messages that ask for it (XEP-0333).
        Ok(chatstates::markable(message))
    }
}

/// The start of the id of a reaction sent from Matrix (no message's id starts so).
const REACTION: &str = "reaction ";

impl Hub {
    /// A Matrix user's reaction to `target` added (`on`) or taken back: XMPP is sent their
    /// whole set of reactions to it (XEP-0444), to the room's id of it in a room.
    async fn send_reactions(
        &self,
        chat: &ChatId,
        puppet: &Puppet,
        id: &str,
        target: &str,
        emoji: &str,
        on: bool,
    ) -> NetworkResult<()> {
        let key = (chat.to_string(), puppet.jid.to_string(), target.to_owned());
        let emojis = self.toggle_reaction(key, emoji, on).await?;
        let (message, target) = match chat {
            ChatId::Muc(room) => (
                Message::groupchat(Jid::from(room.clone())),
                self.room_id_of(room, target).await?,
            ),
            ChatId::Direct { remote, .. } => {
                (Message::chat(Jid::from(remote.clone())), target.to_owned())
            }
        };
        self.send(stanzas::reactions(
            message,
            &puppet.full,
            id,
            &target,
            &emojis,
        ));
        Ok(())
    }

    /// The id a chat knows a message by, for a reply to it: the room's in a room.
    async fn chat_id_of(
        &self,
        chat: &ChatId,
        target: Option<&str>,
    ) -> NetworkResult<Option<String>> {
        match (target, chat) {
            (Some(target), ChatId::Muc(room)) => Ok(Some(self.room_id_of(room, target).await?)),
            (target, _) => Ok(target.map(str::to_owned)),
        }
    }
}

impl Network for Hub {
    type ChatId = ChatId;
    type UserId = UserId;
    type MessageId = String;
    type LoginData = LoginData;
    type Connection = Puppet;

    fn protocol(&self) -> Protocol {
        Protocol::new("xmpp", "XMPP")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().read_receipts(true)
    }

    fn chat_alias(&self, chat: &ChatId) -> String {
        match chat {
            ChatId::Muc(room) => ids::room_alias(room),
            // A direct chat has no alias; this one is in no namespace a user can join.
            ChatId::Direct { user, remote } => {
                format!(
                    "{}dm_{}_{}",
                    ids::PREFIX,
                    ids::escape(user),
                    ids::escape(&remote.to_string())
                )
            }
        }
    }

    fn chat_for_alias(&self, localpart: &str) -> Option<ChatId> {
        ids::room_for_alias(localpart).map(ChatId::Muc)
    }

    fn ghost_localpart(&self, user: &UserId) -> String {
        ids::ghost_localpart(user)
    }

    fn user_for_ghost(&self, localpart: &str) -> Option<UserId> {
        ids::user_for_ghost(localpart)
    }

    async fn chat_info(&self, chat: &ChatId) -> NetworkResult<ChatInfo> {
        match chat {
            ChatId::Muc(room) => {
                if self.cfg.component.is_none() {
                    return Err(BridgeError::NoPortal(
                        "the XMPP bridge is not configured".into(),
                    ));
                }
                // A portal is being made: the bot joins the room so that it hears it. Elsewhere
                // than in the process that holds the component, it does at the portal's first
                // member's join (`matrix_membership`), and the subject comes with it.
                let subject = if self.holds() {
                    self.bot_join(room);
                    self.joined(room, JOIN_WAIT).await
                } else {
                    None
                };
                let name = room
                    .node()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| room.to_string());
                let mut info = ChatInfo::named(name).network(InfoSection::new(
                    room.domain().as_str(),
                    room.domain().as_str(),
                ));
                info.topic = subject;
                Ok(info)
            }
            ChatId::Direct { remote, .. } => Ok(ChatInfo::named(remote.to_string())),
        }
    }

    fn login_fields(&self) -> &'static [&'static str] {
        &["jid", "password"]
    }

    async fn login(&self, request: LoginRequest) -> NetworkResult<NewLogin<Self>> {
        // With an account's JID and password: that account, for double puppeting.
        if let Some(account) = request.fields.get("jid") {
            let Some(password) = request.fields.get("password") else {
                return Err(BridgeError::BadRequest(
                    "usage: login <jid> <password> (your own XMPP account)".into(),
                ));
            };
            let jid = BareJid::new(account)
                .ok()
                .filter(|jid| jid.node().is_some())
                .ok_or_else(|| BridgeError::BadRequest(format!("{account:?} is not a JID")))?;
            if jid.domain().as_str() == self.domain() {
                return Err(BridgeError::BadRequest(format!(
                    "{jid} is the bridge's own JID of a Matrix user, not an XMPP account"
                )));
            }
            return Ok(NewLogin::new(
                ACCOUNT_LOGIN_ID,
                UserId::Jid(jid.clone()),
                jid.to_string(),
                LoginData {
                    jid: jid.to_string(),
                    password: Some(password.clone()),
                },
            ));
        }
        let jid = self.user_jid(request.user.as_str())?;
        Ok(NewLogin::new(
            LOGIN_ID,
            UserId::Jid(jid.clone()),
            jid.to_string(),
            LoginData {
                jid: jid.to_string(),
                password: None,
            },
        ))
    }

    async fn connect(
        &self,
        login: &Login<Self>,
        handle: LoginHandle<Self>,
    ) -> NetworkResult<Puppet> {
        let jid = BareJid::new(&login.data.jid).map_err(|e| {
            BridgeError::BadRequest(format!("stored JID {:?}: {e}", login.data.jid))
        })?;
        // Logins connect in the process that holds the bridge, before its component runs: what
        // they send (their joins) waits in the queue for it.
        if handle.holds_connections() {
            self.hold(true);
        }
        let mut puppet = Puppet::new(login.user.clone(), jid.clone())?;
        if let Some(password) = &login.data.password {
            let account = accounts::connect(self, handle, login.user.clone(), jid, password);
            puppet.account = Some(account.await?);
            return Ok(puppet);
        }
        users::connected(&handle, &puppet).await?;
        Ok(puppet)
    }

    async fn disconnect(&self, connection: &Puppet) -> NetworkResult<()> {
        // An account's connection ends when the kit drops it; the component's JID leaves its
        // rooms.
        if connection.account.is_none() {
            self.leave_all(connection);
        }
        Ok(())
    }

    /// The component's connection: one, in the process that holds the bridge
    /// (docs/scaling.md).
    async fn serve(&self, bridge: Kit, app: trestle::Appservice) -> NetworkResult<()> {
        events::serve(bridge, app).await
    }

    fn login_covers(&self, login: &Login<Self>, _chat: &ChatId) -> bool {
        // What a user says in Matrix goes out from their JID on the component, which is in
        // their rooms; their own account's connection is there for its carbons.
        login.id == LOGIN_ID
    }

    async fn send_message(
        &self,
        message: MatrixMessage<'_, Self>,
    ) -> NetworkResult<Option<String>> {
        let id = message.event_id.to_string();
        let chat = &message.portal.chat;
        let reply_to = self.chat_id_of(chat, message.reply_to.as_deref()).await?;
        let reply_to = reply_to.as_deref();
        // A file goes on the server's upload service when it has one, as its URL.
        if let Some(mxc) = &message.content.media {
            let from = Jid::from(sender_jid(self, chat, &message.via)?);
            match self
                .share_file(message.bridge, &from, mxc, &message.content)
                .await
            {
                Ok(Some(url)) => {
                    let sent = self.outgoing(chat, &message.via, &id, &url, None, reply_to)?;
                    self.send(files::with_oob(sent, &url));
                    return Ok(Some(id));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%mxc, %error, "a file could not be uploaded to XMPP; sent as a link");
                }
            }
        }
        let text = xmpp_text(message.bridge, &message.content).await;
        self.send(self.outgoing(chat, &message.via, &id, &text, None, reply_to)?);
        Ok(Some(id))
    }

    async fn edit_message(&self, edit: MatrixEdit<'_, Self>) -> NetworkResult<Option<String>> {
        let text = xmpp_text(edit.bridge, &edit.content).await;
        let id = edit.event_id.to_string();
        let chat = &edit.portal.chat;
        self.send(self.outgoing(chat, &edit.via, &id, &text, Some(&edit.target), None)?);
        Ok(Some(id))
    }

    async fn redact_message(&self, redaction: MatrixRedaction<'_, Self>) -> NetworkResult<()> {
        let Via::Puppet { connection, .. } = &redaction.via else {
            return Err(BridgeError::Unsupported("this way of sending"));
        };
        let id = redaction.event_id.to_string();
        if let Some(taken_back) = redaction.target.strip_prefix(REACTION) {
            let mut parts = taken_back.splitn(3, ' ');
            let (Some(_jid), Some(target), Some(emoji)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(BridgeError::BadRequest(format!("reaction {taken_back:?}")));
            };
            let chat = &redaction.portal.chat;
            return self
                .send_reactions(chat, connection, &id, target, emoji, false)
                .await;
        }
        let (message, target) = match &redaction.portal.chat {
            // A room names messages by its own id. Only a message sent from Matrix is one a
            // user can retract; anyone else's is asked of the room as moderation (XEP-0425).
            ChatId::Muc(room) if stanzas::is_matrix_id(&redaction.target) => (
                Message::groupchat(Jid::from(room.clone())),
                self.room_id_of(room, &redaction.target).await?,
            ),
            ChatId::Muc(room) => {
                let target = self.room_id_of(room, &redaction.target).await?;
                let reason = redaction.reason;
                return self.moderate(&connection.full, room, &target, reason).await;
            }
            ChatId::Direct { remote, .. } => (
                Message::chat(Jid::from(remote.clone())),
                redaction.target.clone(),
            ),
        };
        self.send(stanzas::retraction(message, &connection.full, &id, &target));
        Ok(())
    }

    async fn react(&self, reaction: MatrixReaction<'_, Self>) -> NetworkResult<Option<String>> {
        let Via::Puppet { connection, .. } = &reaction.via else {
            return Err(BridgeError::Unsupported("this way of sending"));
        };
        let id = reaction.event_id.to_string();
        self.send_reactions(
            &reaction.portal.chat,
            connection,
            &id,
            &reaction.target,
            &reaction.key,
            true,
        )
        .await?;
        // Its redaction takes it back: the id says which message and which emoji.
        Ok(Some(format!(
            "{REACTION}{} {} {}",
            connection.jid, reaction.target, reaction.key
        )))
    }

    async fn typing(&self, typing: MatrixTyping<'_, Self>) -> NetworkResult<()> {
        self.send_typing(&typing);
        Ok(())
    }

    async fn read_receipt(&self, receipt: MatrixReceipt<'_, Self>) -> NetworkResult<()> {
        self.send_displayed(&receipt).await
    }

    fn login_hears(&self, login: &Login<Self>, chat: &ChatId) -> bool {
        // Rooms are heard by the bot, and caught up when the bridge or its stream comes back;
        // a login hears its own direct chats.
        login.id == LOGIN_ID
            && matches!(chat, ChatId::Direct { user, .. } if *user == login.user.as_str())
    }

    async fn fetch_history(
        &self,
        request: HistoryRequest<'_, Self>,
    ) -> NetworkResult<Option<Vec<RemoteMessage<Self>>>> {
        self.history(request).await
    }

    fn direct_chat(&self, user: &MatrixUserId, remote: &UserId) -> Option<ChatId> {
        // An occupant of a semi-anonymous room cannot be written to outside it.
        match remote {
            UserId::Jid(jid) => Some(ChatId::Direct {
                user: user.to_string(),
                remote: jid.clone(),
            }),
            UserId::Occupant(_) => None,
        }
    }

    async fn matrix_membership(
        &self,
        bridge: &Kit,
        change: MatrixMembership<'_, Self>,
    ) -> NetworkResult<()> {
        // A ghost kicked or banned: the room is asked to do the same.
        if change.remote.is_some() {
            return occupants::matrix_removal(bridge, &change).await;
        }
        let joining = change.membership == "join";
        let leaving = matches!(change.membership.as_str(), "leave" | "ban");
        if joining {
            users::ensure_login(bridge, change.user).await;
        }
        let ChatId::Muc(room) = &change.portal.chat else {
            return Ok(());
        };
        let Some(puppet) = bridge.connection(change.user, LOGIN_ID) else {
            return Ok(());
        };
        if joining {
            // A portal made by another process (which does not hold the component) has its
            // room joined by the bot here, at its first member's join.
            if !self.bot_joined(room) {
                self.bot_join(room);
            }
            // A join is also how a new display name shows: the nick follows it.
            let nick = match change.display_name.as_deref().map(str::trim) {
                Some(name) if !name.is_empty() => name.to_owned(),
                _ => users::nick(bridge, &change.portal.room_id, change.user).await,
            };
            self.user_join(room, &puppet, &nick);
            // The people the bot found in the room before the portal was made.
            for (nick, jid) in self.occupants(room) {
                if let Ok(occupant) = room.with_resource_str(&nick) {
                    events::ghost_joins(bridge, &change.portal.chat, &occupant, jid).await?;
                }
            }
            powers::catch_up(bridge, room, &change.portal.room_id).await?;
        } else if leaving {
            occupants::matrix_removal(bridge, &change).await?;
            self.user_leave(room, &puppet);
        }
        Ok(())
    }
}
