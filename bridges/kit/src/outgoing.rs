//! What the kit hands the network: Matrix events in portals, with who speaks for the sender.

use std::fmt;

use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId};

use super::{BridgeHandle, Login, Network};

/// Whose behalf a Matrix event is sent on.
#[non_exhaustive]
pub enum Via<'a, N: Network> {
    /// The sender's own login and its connection.
    Puppet {
        /// The login.
        login: &'a Login<N>,
        /// Its live connection.
        connection: &'a N::Connection,
    },
    /// The sender has no login here: the bridge speaks for them in a portal with relay mode.
    Relay {
        /// The sender's display name in the room (or their user id).
        name: String,
    },
}

/// The kind of a text message, on both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// `m.text`; IRC `PRIVMSG`.
    #[default]
    Text,
    /// `m.notice`; IRC `NOTICE`.
    Notice,
    /// `m.emote`; IRC `ACTION`.
    Emote,
}

/// A message's content, in the shape both sides can use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageContent {
    /// Text, notice or emote.
    pub kind: MessageKind,
    /// Plain text (for media, the file name or caption).
    pub body: String,
    /// HTML (`org.matrix.custom.html`), if the message has formatting.
    pub html: Option<String>,
    /// For media: the `mxc://` URI of the file (upload remote files with [`trestle::media`]
    /// first).
    pub media: Option<OwnedMxcUri>,
    /// For media: its MIME type, which picks `m.image`, `m.video`, `m.audio` or `m.file`.
    pub mimetype: Option<String>,
}

impl MessageContent {
    /// A plain text message.
    pub fn text(body: impl Into<String>) -> Self {
        MessageContent {
            body: body.into(),
            ..MessageContent::default()
        }
    }

    /// The same with a kind.
    pub fn kind(mut self, kind: MessageKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same with HTML.
    pub fn html(mut self, html: impl Into<String>) -> Self {
        self.html = Some(html.into());
        self
    }

    /// A file already uploaded to the homeserver, with `body` as its name or caption.
    pub fn media(body: impl Into<String>, url: OwnedMxcUri, mimetype: Option<String>) -> Self {
        MessageContent {
            body: body.into(),
            media: Some(url),
            mimetype,
            ..MessageContent::default()
        }
    }
}

/// A portal as the network sees it in calls: its chat and its room.
#[non_exhaustive]
pub struct PortalRef<N: Network> {
    /// The remote chat.
    pub chat: N::ChatId,
    /// The Matrix room.
    pub room_id: OwnedRoomId,
    /// Whether relay mode is on.
    pub relay: bool,
}

/// A Matrix message to send to the network.
#[non_exhaustive]
pub struct MatrixMessage<'a, N: Network> {
    /// The bridge, for what sending needs of the appservice (uploading media, reading the
    /// room).
    pub bridge: &'a BridgeHandle<N>,
    /// Where it was sent.
    pub portal: &'a PortalRef<N>,
    /// Who sent it, and through what.
    pub via: Via<'a, N>,
    /// The Matrix sender.
    pub sender: &'a OwnedUserId,
    /// The Matrix event.
    pub event_id: &'a OwnedEventId,
    /// What it says (a reply's fallback quote removed).
    pub content: MessageContent,
    /// The remote message it replies to, when that one was bridged.
    pub reply_to: Option<N::MessageId>,
    /// The Matrix event it replies to, bridged or not; [`super::BridgeHandle::matrix_message`]
    /// reads it, for a network that quotes replies. In a thread: the message it genuinely
    /// replies to there, if any; for a network without threads, the thread's root otherwise
    /// (never the reply fallback, which the spec says is no reply).
    pub in_reply_to: Option<OwnedEventId>,
    /// The thread it was sent in: the remote id of the thread's root, when the network has
    /// threads ([`Capabilities::threads`](super::Capabilities::threads)) and the root was
    /// bridged.
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#threading>
    pub thread_root: Option<N::MessageId>,
}

/// An edit of a bridged message.
#[non_exhaustive]
pub struct MatrixEdit<'a, N: Network> {
    /// The bridge, as for [`MatrixMessage::bridge`] (an edit may carry media to link).
    pub bridge: &'a BridgeHandle<N>,
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Who, through what.
    pub via: Via<'a, N>,
    /// The Matrix edit event.
    pub event_id: &'a OwnedEventId,
    /// The remote message edited.
    pub target: N::MessageId,
    /// The new content (`m.new_content`).
    pub content: MessageContent,
}

/// A redaction of a bridged message or reaction.
#[non_exhaustive]
pub struct MatrixRedaction<'a, N: Network> {
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Who, through what.
    pub via: Via<'a, N>,
    /// The Matrix redaction event.
    pub event_id: &'a OwnedEventId,
    /// The remote message redacted.
    pub target: N::MessageId,
    /// The reason the redaction gives, if any.
    pub reason: Option<&'a str>,
}

/// A reaction to a bridged message.
#[non_exhaustive]
pub struct MatrixReaction<'a, N: Network> {
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Who, through what.
    pub via: Via<'a, N>,
    /// The Matrix reaction event.
    pub event_id: &'a OwnedEventId,
    /// The remote message reacted to.
    pub target: N::MessageId,
    /// The reaction key (an emoji, usually).
    pub key: String,
}

/// A Matrix user's read receipt in a portal: they read it up to a bridged message.
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#receipts>
#[non_exhaustive]
pub struct MatrixReceipt<'a, N: Network> {
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Whose login: only users with a login's connection here have their receipts passed on
    /// (the relay reads for nobody).
    pub via: Via<'a, N>,
    /// The Matrix event the receipt is for.
    pub event_id: &'a OwnedEventId,
    /// The remote message it maps to: read up to it, and everything before it.
    pub up_to: N::MessageId,
}

/// A Matrix user typing in a portal, or stopping.
#[non_exhaustive]
pub struct MatrixTyping<'a, N: Network> {
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Who, through what.
    pub via: Via<'a, N>,
    /// Typing or not.
    pub typing: bool,
}

/// A Matrix membership change in a portal.
#[non_exhaustive]
pub struct MatrixMembership<'a, N: Network> {
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Whose membership changed.
    pub user: &'a OwnedUserId,
    /// `join`, `leave`, `ban`, `invite` or `knock`.
    pub membership: String,
    /// Who changed it (differs from `user` for kicks and bans).
    pub sender: &'a OwnedUserId,
    /// The user's display name in the room, as the event gives it.
    pub display_name: Option<String>,
    /// When `user` is a ghost: the remote user it stands for. Ghosts' memberships reach the
    /// network only when a Matrix user kicks or bans (or unbans) one.
    pub remote: Option<N::UserId>,
    /// The membership before this change, when the homeserver says (`ban` before a `leave`
    /// sent by someone else is an unban).
    pub previous: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

// Written out rather than derived: a derive would ask `N` itself to be `Clone`/`Debug`.
impl<N: Network> Clone for PortalRef<N> {
    fn clone(&self) -> Self {
        PortalRef {
            chat: self.chat.clone(),
            room_id: self.room_id.clone(),
            relay: self.relay,
        }
    }
}

impl<N: Network> fmt::Debug for PortalRef<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalRef")
            .field("chat", &self.chat)
            .field("room_id", &self.room_id)
            .field("relay", &self.relay)
            .finish()
    }
}
