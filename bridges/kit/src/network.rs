//! The trait a bridge implements for its remote network, and the values that cross it.
//!
//! Everything the kit needs from a network goes through [`Network`]: its ids are associated
//! types (no string-typed ids, no runtime downcasts), its required methods are the few every
//! network has (naming, logging in, connecting, sending a message), and its optional
//! capabilities (edits, redactions, reactions, typing, membership, read receipts) have default
//! methods that answer [`BridgeError::Unsupported`] (history: `None`), so a bridge writes only
//! what its network offers. What the kit must know before it calls at all is said once, in
//! [`Capabilities`].

use std::{collections::BTreeMap, fmt, future::Future, hash::Hash, str::FromStr};

use ruma::{OwnedMxcUri, OwnedUserId, UserId};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    BridgeError, BridgeHandle, HistoryRequest, LoginHandle, MatrixCall, MatrixEdit,
    MatrixMembership, MatrixMessage, MatrixReaction, MatrixReceipt, MatrixRedaction, MatrixTyping,
    RemoteMessage,
};

/// An identifier on the remote network (a chat, a user, a message). Stored as its
/// [`Display`](fmt::Display) form and read back with [`FromStr`]; any type with those
/// round-tripping (a `String`, a newtype, a `(network, channel)` pair with its own format) is
/// one.
pub trait RemoteId:
    Clone + Eq + Hash + fmt::Debug + fmt::Display + FromStr + Send + Sync + 'static
{
}

impl<T> RemoteId for T where
    T: Clone + Eq + Hash + fmt::Debug + fmt::Display + FromStr + Send + Sync + 'static
{
}

/// The result of a network operation.
pub type NetworkResult<T> = Result<T, BridgeError>;

/// A remote network, as a bridge sees it. Implement it once per bridge; the kit
/// ([`super::Bridge`]) calls it for everything that goes from Matrix to the network, and the
/// network pushes what happens remotely into the kit through a [`BridgeHandle`].
///
/// Methods returning futures must return `Send` futures: write them as `async fn` in the
/// impl, or as `fn … -> impl Future<Output = …> + Send`.
pub trait Network: Send + Sync + Sized + 'static {
    /// A chat (channel, group, conversation): one portal room each.
    type ChatId: RemoteId;
    /// A remote user: one ghost each.
    type UserId: RemoteId;
    /// A remote message, unique within its chat.
    type MessageId: RemoteId;
    /// What a login keeps between restarts (credentials, a session token, the chosen nick),
    /// stored as JSON with the login and given back to [`Network::connect`].
    type LoginData: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// A live connection of one login; the kit keeps it while the login is connected and hands
    /// it back for every send on that login's behalf.
    type Connection: Send + Sync + 'static;

    /// What the bridge is, for `m.bridge` state and the management room.
    fn protocol(&self) -> Protocol;

    /// The optional capabilities the kit must know of before it hands the network an event.
    /// None unless written.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The localpart of the alias of `chat`'s portal, without the `#` and server name (e.g.
    /// `irc_libera_rust` for `#irc_libera_rust:example.org`). It must fall in the
    /// registration's alias namespace for on-demand portals to work.
    fn chat_alias(&self, chat: &Self::ChatId) -> String;

    /// The chat an alias localpart names, if any: the inverse of [`Network::chat_alias`].
    /// Asked when someone joins an alias nobody has made yet.
    fn chat_for_alias(&self, localpart: &str) -> Option<Self::ChatId>;

    /// The localpart of `user`'s ghost (e.g. `irc_libera_alice`), in the user namespace.
    fn ghost_localpart(&self, user: &Self::UserId) -> String;

    /// The remote user a ghost localpart stands for, if any: the inverse of
    /// [`Network::ghost_localpart`].
    fn user_for_ghost(&self, localpart: &str) -> Option<Self::UserId>;

    /// What to show for a chat: its name, topic and which network it is on. Asked when its
    /// portal is made.
    fn chat_info(
        &self,
        chat: &Self::ChatId,
    ) -> impl Future<Output = NetworkResult<ChatInfo>> + Send;

    /// The field names `login` takes, in order: `login a b` in the management room gives
    /// `{fields[0]: a, fields[1]: b}`; the provisioning API takes them by name.
    fn login_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks a login request and says who it logs in as, without connecting yet; the kit
    /// stores the result and then calls [`Network::connect`].
    fn login(
        &self,
        request: LoginRequest,
    ) -> impl Future<Output = NetworkResult<NewLogin<Self>>> + Send;

    /// Connects one stored login. The network keeps `handle` to report what happens remotely
    /// (messages, membership, the connection dropping or coming back with
    /// [`LoginHandle::set_state`]). Called after a login and again for every stored login
    /// when the bridge starts. Until it returns, the user's events in portals wait for the
    /// connection (up to [`BridgeConfig::connection_wait`](super::BridgeConfig::connection_wait)),
    /// so it should return as soon as the connection can take messages, queueing them if it
    /// is not registered yet.
    fn connect(
        &self,
        login: &Login<Self>,
        handle: LoginHandle<Self>,
    ) -> impl Future<Output = NetworkResult<Self::Connection>> + Send;

    /// Ends a connection on logout or when the bridge stops. Does nothing unless written.
    fn disconnect(
        &self,
        connection: &Self::Connection,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = connection;
        async { Ok(()) }
    }

    /// Optional: the network's own connections, which no login owns (a bot's, one per
    /// network; a component's), run until the appservice stops. The kit's service runs it
    /// beside the logins' connections, so that where processes share a PostgreSQL store they
    /// all live in the one process that holds the bridge's service and sends what Matrix users
    /// say (docs/scaling.md); a process taking over starts it anew. Nothing unless written.
    fn serve(
        &self,
        bridge: BridgeHandle<Self>,
        app: trestle::Appservice,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = (bridge, app);
        async { Ok(()) }
    }

    /// Whether `login` can speak in `chat` (a login of one IRC network cannot speak on
    /// another). The first connected login of the sender for which this holds sends their
    /// messages (waited for while it connects); a sender with no such login is spoken for by
    /// the portal's relay (if on), one whose login needs a new `login` by nobody (they are
    /// told). Every login can, unless written.
    fn login_covers(&self, login: &Login<Self>, chat: &Self::ChatId) -> bool {
        let _ = (login, chat);
        true
    }

    /// Optional: whether `chat`'s messages reach the bridge through `login`'s connection, so
    /// that while it was lost some may have been missed: its chats are caught up when it comes
    /// back (module `history`). As [`Network::login_covers`] unless written; a network whose
    /// bridge hears chats through a connection of its own (a bot's) says which chats a login
    /// hears only itself (its direct chats), and catches up the others with
    /// [`BridgeHandle::catch_up`].
    fn login_hears(&self, login: &Login<Self>, chat: &Self::ChatId) -> bool {
        self.login_covers(login, chat)
    }

    /// Optional: messages of a chat, oldest first, where [`HistoryRequest::anchor`] says,
    /// at most [`HistoryRequest::limit`] (the newest of them when there are more), for
    /// filling a new portal and catching up what the bridge missed. `None` (the default): the
    /// network keeps no history, so after an outage its portals are told that messages may be
    /// missing. Messages the kit has bridged already are skipped, so a network may answer
    /// more than was missed.
    fn fetch_history(
        &self,
        request: HistoryRequest<'_, Self>,
    ) -> impl Future<Output = NetworkResult<Option<Vec<RemoteMessage<Self>>>>> + Send {
        let _ = request;
        async { Ok(None) }
    }

    /// Sends a Matrix message to the network; returns the remote id of what was sent, which
    /// the kit maps to the Matrix event (for replies, edits, redactions, and to drop the echo
    /// if the network sends the message back).
    fn send_message(
        &self,
        message: MatrixMessage<'_, Self>,
    ) -> impl Future<Output = NetworkResult<Option<Self::MessageId>>> + Send;

    /// Optional: applies an edit of a bridged message. Unsupported unless written.
    fn edit_message(
        &self,
        edit: MatrixEdit<'_, Self>,
    ) -> impl Future<Output = NetworkResult<Option<Self::MessageId>>> + Send {
        let _ = edit;
        async { Err(BridgeError::Unsupported("edits")) }
    }

    /// Optional: deletes a bridged message. Unsupported unless written.
    fn redact_message(
        &self,
        redaction: MatrixRedaction<'_, Self>,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = redaction;
        async { Err(BridgeError::Unsupported("redactions")) }
    }

    /// Optional: adds a reaction to a bridged message; returns the reaction's remote id if it
    /// has one. Unsupported unless written.
    fn react(
        &self,
        reaction: MatrixReaction<'_, Self>,
    ) -> impl Future<Output = NetworkResult<Option<Self::MessageId>>> + Send {
        let _ = reaction;
        async { Err(BridgeError::Unsupported("reactions")) }
    }

    /// Optional: tells the network a Matrix user started or stopped typing. Unsupported
    /// unless written.
    fn typing(
        &self,
        typing: MatrixTyping<'_, Self>,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = typing;
        async { Err(BridgeError::Unsupported("typing")) }
    }

    /// Optional: a Matrix user with a login read a portal up to a bridged message (their public
    /// `m.read` receipt). Called only when [`Capabilities::read_receipts`] is on; unsupported
    /// unless written.
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#receipts>
    fn read_receipt(
        &self,
        receipt: MatrixReceipt<'_, Self>,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = receipt;
        async { Err(BridgeError::Unsupported("read receipts")) }
    }

    /// Optional: a Matrix call event (`m.call.invite`, `m.call.answer`, `m.call.candidates`,
    /// `m.call.hangup`, …) in a portal, for a network that carries calls. Unsupported unless
    /// written: then call events are never bridged, and the caller is told once per call (at
    /// its `m.call.invite`) that calls do not cross.
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#voice-over-ip>
    fn matrix_call(
        &self,
        call: MatrixCall<'_, Self>,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = call;
        async { Err(BridgeError::Unsupported("calls")) }
    }

    /// Optional: the direct chat of a Matrix user with a remote user, for a Matrix user who
    /// starts one by inviting the remote user's ghost to a room with `is_direct`. `None` (the
    /// default) declines the invite.
    fn direct_chat(&self, user: &UserId, remote: &Self::UserId) -> Option<Self::ChatId> {
        let _ = (user, remote);
        None
    }

    /// Optional: a Matrix user joined or left a portal, or kicked, banned or unbanned someone
    /// there (a ghost too: then [`MatrixMembership::remote`] is the remote user). A network
    /// that gives each Matrix user their own connection can log them in here through `bridge`
    /// ([`BridgeHandle::login`] with [`LoginRequest::automatic`]). Unsupported (and ignored)
    /// unless written.
    fn matrix_membership(
        &self,
        bridge: &BridgeHandle<Self>,
        change: MatrixMembership<'_, Self>,
    ) -> impl Future<Output = NetworkResult<()>> + Send {
        let _ = (bridge, change);
        async { Err(BridgeError::Unsupported("membership")) }
    }
}

/// The optional capabilities of a network that change what the kit does before it calls the
/// network: how it shapes an event, or whether it looks at one at all. The others are
/// [`Network`]'s default methods, which answer [`BridgeError::Unsupported`] until written.
///
/// ```
/// # use trestle_bridge::Capabilities;
/// let capabilities = Capabilities::default().threads(true).read_receipts(true);
/// assert!(capabilities.threads && capabilities.read_receipts);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The network has threads. Then a Matrix message in an `m.thread` reaches
    /// [`Network::send_message`] with [`MatrixMessage::thread_root`] set (and
    /// [`MatrixMessage::reply_to`] only for a genuine reply inside the thread); without, it
    /// arrives as a reply to the thread's root. Messages the network puts in a thread
    /// ([`RemoteMessage::in_thread`](super::RemoteMessage::in_thread)) become Matrix threads
    /// either way.
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#threading>
    pub threads: bool,
    /// The network takes read receipts ([`Network::read_receipt`]). Without, the kit does not
    /// look at Matrix receipts at all; the network's own ([`BridgeHandle::remote_read`]) are
    /// shown either way.
    pub read_receipts: bool,
}

impl Capabilities {
    /// The same with threads on or off.
    pub fn threads(mut self, on: bool) -> Self {
        self.threads = on;
        self
    }

    /// The same with read receipts on or off.
    pub fn read_receipts(mut self, on: bool) -> Self {
        self.read_receipts = on;
        self
    }
}

/// What the bridge is: MSC2346's `protocol`, plus an optional `network` for bridges to
/// several networks of one protocol.
/// Spec: <https://github.com/matrix-org/matrix-spec-proposals/pull/2346>
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Protocol {
    /// A short id, e.g. `irc`.
    pub id: String,
    /// The name people see, e.g. `IRC`.
    pub displayname: String,
    /// An icon.
    pub avatar_url: Option<OwnedMxcUri>,
    /// The protocol's home page.
    pub external_url: Option<String>,
}

impl Protocol {
    /// A protocol from its id and display name.
    pub fn new(id: impl Into<String>, displayname: impl Into<String>) -> Self {
        Protocol {
            id: id.into(),
            displayname: displayname.into(),
            ..Protocol::default()
        }
    }
}

/// A section of MSC2346 bridge info (`network` or `channel`): an id and what people see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InfoSection {
    /// The id on the remote side.
    pub id: String,
    /// The name people see.
    pub displayname: Option<String>,
    /// An icon.
    pub avatar_url: Option<OwnedMxcUri>,
    /// A link to it.
    pub external_url: Option<String>,
}

impl InfoSection {
    /// A section from its id and display name.
    pub fn new(id: impl Into<String>, displayname: impl Into<String>) -> Self {
        InfoSection {
            id: id.into(),
            displayname: Some(displayname.into()),
            ..InfoSection::default()
        }
    }
}

/// What to show for a chat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatInfo {
    /// The room name.
    pub name: Option<String>,
    /// The room topic.
    pub topic: Option<String>,
    /// The network the chat is on (`network` in `m.bridge`), for multi-network bridges.
    pub network: Option<InfoSection>,
    /// How the chat shows in `m.bridge`'s `channel`; its id and name are used unless set.
    pub channel: Option<InfoSection>,
}

impl ChatInfo {
    /// A chat called `name`.
    pub fn named(name: impl Into<String>) -> Self {
        ChatInfo {
            name: Some(name.into()),
            ..ChatInfo::default()
        }
    }

    /// The same with a topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The same on a network.
    pub fn network(mut self, network: InfoSection) -> Self {
        self.network = Some(network);
        self
    }
}

/// What a ghost shows: kept in step on each remote event that carries it; the homeserver is
/// asked only when something changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserInfo {
    /// The display name.
    pub display_name: Option<String>,
    /// The avatar, already uploaded.
    pub avatar_url: Option<OwnedMxcUri>,
}

impl UserInfo {
    /// A user called `name`.
    pub fn named(name: impl Into<String>) -> Self {
        UserInfo {
            display_name: Some(name.into()),
            avatar_url: None,
        }
    }
}

/// A login request, from the management room's `login` or the provisioning API.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoginRequest {
    /// The Matrix user logging in.
    pub user: OwnedUserId,
    /// The fields given, by name (see [`Network::login_fields`]).
    pub fields: BTreeMap<String, String>,
    /// Started by the network itself rather than asked for by the user (for example when they
    /// join a portal and the network gives everyone their own connection): the routine
    /// "connected." notice is not sent, so no management room is made just for it. Problems
    /// later (the connection lost, bad credentials) are still told.
    pub automatic: bool,
}

impl LoginRequest {
    /// A request to log `user` in, with no fields yet. A network that logs users in by itself
    /// builds one, marks it [`LoginRequest::automatic`] and hands it to
    /// [`BridgeHandle::login`](super::BridgeHandle::login).
    pub fn new(user: OwnedUserId) -> Self {
        LoginRequest {
            user,
            fields: BTreeMap::new(),
            automatic: false,
        }
    }

    /// The same with a field (see [`Network::login_fields`]).
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// The same, started by the network rather than by the user.
    pub fn automatic(mut self) -> Self {
        self.automatic = true;
        self
    }
}

/// What [`Network::login`] answers: who the login is on the network and what to keep.
#[non_exhaustive]
pub struct NewLogin<N: Network> {
    /// Names the login among the user's logins (e.g. the IRC network's name); a second login
    /// with the same id replaces the first.
    pub id: String,
    /// The user on the remote network.
    pub remote_user: N::UserId,
    /// How to show the login (a nick, a phone number).
    pub remote_name: String,
    /// What to keep for connecting again.
    pub data: N::LoginData,
}

impl<N: Network> NewLogin<N> {
    /// A login from its parts.
    pub fn new(
        id: impl Into<String>,
        remote_user: N::UserId,
        remote_name: impl Into<String>,
        data: N::LoginData,
    ) -> Self {
        NewLogin {
            id: id.into(),
            remote_user,
            remote_name: remote_name.into(),
            data,
        }
    }
}

/// A stored login of a Matrix user (a "puppet": the user's own account on the network).
#[non_exhaustive]
pub struct Login<N: Network> {
    /// The Matrix user.
    pub user: OwnedUserId,
    /// The login's id among the user's logins.
    pub id: String,
    /// The user on the remote network.
    pub remote_user: N::UserId,
    /// How to show the login.
    pub remote_name: String,
    /// What the network keeps.
    pub data: N::LoginData,
    /// The last reported state of its connection.
    pub state: ConnectionState,
}

/// The state of a login's connection, reported to its user as notices in the management room
/// when it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting, or waiting to reconnect.
    Connecting,
    /// Connected and working.
    Connected,
    /// Disconnected for a reason that may pass (the network is down); the network retries.
    TransientDisconnect(String),
    /// Disconnected until the user does something (bad credentials, banned).
    BadCredentials(String),
    /// Logged out.
    LoggedOut,
}

impl ConnectionState {
    /// A stable name for the state: `CONNECTING`, `CONNECTED`, `TRANSIENT_DISCONNECT`,
    /// `BAD_CREDENTIALS`, `LOGGED_OUT` (mautrix's bridge state names).
    pub fn name(&self) -> &'static str {
        match self {
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::TransientDisconnect(_) => "TRANSIENT_DISCONNECT",
            ConnectionState::BadCredentials(_) => "BAD_CREDENTIALS",
            ConnectionState::LoggedOut => "LOGGED_OUT",
        }
    }

    /// The reason given, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ConnectionState::TransientDisconnect(r) | ConnectionState::BadCredentials(r) => Some(r),
            _ => None,
        }
    }
}

// Written out rather than derived: a derive would ask `N` itself to be `Clone`/`Debug`.
impl<N: Network> Clone for NewLogin<N> {
    fn clone(&self) -> Self {
        NewLogin {
            id: self.id.clone(),
            remote_user: self.remote_user.clone(),
            remote_name: self.remote_name.clone(),
            data: self.data.clone(),
        }
    }
}

impl<N: Network> Clone for Login<N> {
    fn clone(&self) -> Self {
        Login {
            user: self.user.clone(),
            id: self.id.clone(),
            remote_user: self.remote_user.clone(),
            remote_name: self.remote_name.clone(),
            data: self.data.clone(),
            state: self.state.clone(),
        }
    }
}

impl<N: Network> fmt::Debug for Login<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The data may hold credentials: never printed.
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("id", &self.id)
            .field("remote_user", &self.remote_user)
            .field("remote_name", &self.remote_name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
