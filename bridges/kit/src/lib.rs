//! The bridge kit: what every bridge to another network needs, so a bridge writes only its
//! network's side.
//!
//! A bridge implements [`Network`] for its remote network and hands it to [`Bridge::new`];
//! [`Bridge::router`] gives the [`Router`] that does the rest:
//!
//! - **Portals**: a remote chat and its Matrix room. A portal is made on demand when someone
//!   joins its alias ([`Network::chat_alias`]; the homeserver asks us through the
//!   [alias query](https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1roomsroomalias)),
//!   or an existing room is linked to a chat (`link`). Every portal carries `m.bridge` and
//!   `uk.half-shot.bridge` state ([MSC2346](https://github.com/matrix-org/matrix-spec-proposals/pull/2346)).
//! - **Ghosts**: each remote user acts in Matrix as a ghost of the appservice
//!   ([`Network::ghost_localpart`]); its display name and avatar follow the remote profile,
//!   set only when they change.
//! - **Puppets**: a Matrix user's own login on the network ([`Login`]), whose messages go out
//!   through its connection; its [`ConnectionState`] is reported to the user as notices. The
//!   user asks for one (`login`), or the network makes one itself, for example when they join a
//!   portal ([`LoginRequest::automatic`], from [`Network::matrix_membership`]). A user with a
//!   login is never relayed: while its connection is not there yet (being restored at start,
//!   being made by `login`), their events in portals wait for it, in order, up to
//!   [`BridgeConfig::connection_wait`]; when it does not come in time, or needs a new login,
//!   they are told in the room that their message was not delivered, and why.
//! - **Relay mode**: in a portal with relay on, a Matrix user without a login is spoken for by
//!   the bridge, with their name ([`Via::Relay`]).
//! - **The message map**: remote message id ↔ Matrix event id per portal, so replies, edits,
//!   redactions and reactions find their targets both ways, and echoes are dropped.
//! - **Loop prevention**: events of the appservice's own users (the bot, the ghosts) never
//!   reach the kit's handlers, so nothing the bridge sent comes back to the network.
//! - **Policy lists**: with [`BridgeConfig::policy_lists`], Matrix users banned by those lists
//!   ([`trestle_policy`]) are not bridged: their portal events stop here (they are told why
//!   once), their portal joins are kicked, their logins do not connect (one connected before the
//!   rule is closed at their next portal event). Rooms those lists ban (`m.policy.rule.room`,
//!   by id or alias) get no portal and cannot be linked; a portal a rule comes to ban is left
//!   (the bot says why and leaves, nothing crosses) until the rule goes.
//! - **Room upgrades**: a portal, a direct chat's portal or a management room follows its
//!   `m.room.tombstone` to the room that replaces it (room version 12 too): the bot and the
//!   ghosts join it and the bridge goes on there. The message map stays: replies find
//!   messages from before the upgrade both ways; the network's edits, reactions and
//!   redactions of those are not bridged, since they belong in the old room, which the
//!   upgrade locked.
//! - **Calls**: `m.call.*` events go to a network that carries calls
//!   ([`Network::matrix_call`]); elsewhere they are never bridged, and the caller is told once
//!   per call that calls do not cross.
//! - **Threads**: a remote message in a thread ([`RemoteMessage::in_thread`]) is an
//!   `m.thread` event on its root's event, with the reply fallback to the thread's latest
//!   event, or as a genuine reply inside the thread; a Matrix message in a thread reaches a
//!   network with threads ([`Capabilities::threads`]) with the root's remote id
//!   ([`MatrixMessage::thread_root`]), and one without as a reply to the thread's root.
//! - **Read receipts**: a Matrix user's `m.read` on a bridged message reaches a network that
//!   takes them ([`Capabilities::read_receipts`], [`Network::read_receipt`]) from the user's
//!   login; a remote user's reading is their ghost's `m.read` on the mapped event
//!   ([`BridgeHandle::remote_read`]). Receipts of the bot and the ghosts never go back.
//! - **Delivery status**: a Matrix message the network took is marked read by the bot and gets
//!   a `com.beeper.message_send_status` event (`SUCCESS`); one it did not take gets a notice
//!   replying to it with the reason, and a status `FAIL_PERMANENT` ([`BridgeError::Remote`]) or
//!   `FAIL_RETRIABLE` ([`BridgeError::Retriable`]). On by default
//!   ([`BridgeConfig::delivery_status`]).
//! - **Bridge state**: every login's [`ConnectionState`], debounced (a connection lost for less
//!   than [`BridgeConfig::bridge_state_debounce_ms`] is no outage), served by the provisioning
//!   API, posted to [`BridgeConfig::bridge_state_url`], counted in `/metrics` and told in the
//!   management room ([`BridgeState`]).
//! - **Double puppeting** (module [`double_puppet`]): with a second registration whose token
//!   may act as the homeserver's users ([`BridgeConfig::double_puppet`]), a user who turns it
//!   on (`double-puppet on`) sees their own messages, edits, reactions and deletions from the
//!   network appear as their own Matrix account rather than a ghost, marked
//!   `fi.mau.double_puppet_source` so they never go back to the network. Off by default;
//!   refused where the token cannot act for the user; when it stops working, the ghost speaks
//!   again and the user is told.
//! - **History**: a portal the kit makes is filled with the chat's last messages
//!   ([`BridgeConfig::history_fill`]), and what was said while the bridge or a login's
//!   connection was away is caught up when it is back
//!   ([`BridgeConfig::history_catch_up`]), before the live messages after it: in order, by
//!   their senders' ghosts, with their original timestamps, nothing twice (the message map
//!   decides). From a network that has history ([`Network::fetch_history`]); where it cannot
//!   say what was missed, the portal gets one notice that messages may be missing.
//! - **Management room**: a room with the bot per user, with `help`, `login`, `logout`,
//!   `link`, `unlink`, `list`, `status`, `relay`, `double-puppet`; and a **provisioning API**
//!   over HTTP with a shared secret for the same operations (and the bridge states).
//! - **Several processes**: where processes share a PostgreSQL store (`docs/scaling.md`), the
//!   logins' connections and the network's own ([`Network::serve`]) live in the one process
//!   that holds the kit's service lease; the others hand it the events of portals and
//!   management rooms through the store's handoff queue, in order, and another process takes
//!   the connections over when it stops or dies (module `handoff`). A login made through the
//!   provisioning API of another process is handed to the holder too, which connects it; the
//!   answer waits for its state ([`BridgeHandle::holds_connections`]). A bridge's own handlers
//!   for event types the kit does not bridge ([`Bridge::on_type`]) are handed over too, and run
//!   in the holder in their room's order.
//! - **Media links**: [`BridgeHandle::media_link`] turns an `mxc://` URI into a signed,
//!   expiring link the bridge serves itself, for networks that show media as links (module
//!   [`media`]).
//!
//! What happens on the network comes in through a [`BridgeHandle`] (for example
//! [`BridgeHandle::remote_message`]), which the network keeps: the kit turns it into ghost
//! actions in the right portal.
//!
//! The model is mautrix-go's bridgev2, without its runtime downcasts: ids and login data are
//! the network's associated types, and optional capabilities are trait methods with defaults,
//! plus the few the kit must know of before it calls, declared once in [`Capabilities`].

mod calls;
mod commands;
mod delivery;
mod direct;
pub mod double_puppet;
mod error;
mod handle;
mod handoff;
mod history;
mod login;
mod matrix;
pub mod media;
mod network;
mod outgoing;
mod own;
mod policy;
mod portal;
mod provision;
mod receipts;
mod remote;
mod speaker;
mod state;
mod store;
mod threads;
mod typing;
mod upgrade;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock, atomic::AtomicBool},
};

use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use trestle::{Router, WeakAppservice, sync::MutexExt};

pub use calls::MatrixCall;
pub use delivery::MESSAGE_STATUS_TYPE;
pub use error::BridgeError;
pub use handle::{BridgeHandle, LoginHandle};
pub use history::{HistoryAnchor, HistoryRequest};
pub use media::MediaLinkConfig;
pub use network::{
    Capabilities, ChatInfo, ConnectionState, InfoSection, Login, LoginRequest, Network,
    NetworkResult, NewLogin, Protocol, RemoteId, UserInfo,
};
pub use outgoing::{
    MatrixEdit, MatrixMembership, MatrixMessage, MatrixReaction, MatrixReceipt, MatrixRedaction,
    MatrixTyping, MessageContent, MessageKind, PortalRef, Via,
};
pub use portal::BRIDGE_STATE_TYPES;
pub use remote::{RemoteEdit, RemoteMembership, RemoteMessage, RemoteReaction};
pub use state::BridgeState;

/// The kit's settings, for a bridge to embed in its own settings as a field (serde's
/// `flatten` does not mix with `deny_unknown_fields`) or build with its methods, and pass to
/// [`Bridge::new`].
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// Whether new portals start with relay mode on: Matrix users without a login are spoken
    /// for by the bridge, with their name.
    pub relay: bool,
    /// The shared secret of the provisioning API (`Authorization: Bearer <secret>`); the API
    /// answers `404` to everything while unset.
    pub provisioning_secret: Option<String>,
    /// Users who may `link` and `unlink` any room and set relay mode (full user ids). Others
    /// need power level 50 in the room.
    pub admins: Vec<String>,
    /// Policy lists to follow (room ids or aliases; see [`trestle_policy::PolicyLists`]): a
    /// Matrix user banned by them (a user rule, or a server rule on their server) is not
    /// bridged — their events in portals do not reach the network, their joins are kicked,
    /// their logins do not connect. A room they ban (by id or alias) is not bridged: no
    /// portal is made or linked for it, and a portal is left while a rule bans it. Empty:
    /// nobody is checked.
    pub policy_lists: Vec<String>,
    /// Seconds an event of a user with a login waits for that login's connection when it is
    /// not there yet (restored at start, made by `login`), holding up the events after it in
    /// the room so that order is kept. Past it, they are told the event was not delivered; the
    /// relay never speaks for a user with a login. Counted once per outage: once a wait has
    /// run out, their next events fail at once until the connection is back.
    pub connection_wait: u64,
    /// Links to Matrix media for the remote side ([`BridgeHandle::media_link`], module
    /// [`media`]).
    pub media_links: MediaLinkConfig,
    /// Whether a Matrix message that reached the network is marked read by the bot and
    /// answered with a `com.beeper.message_send_status` event (`SUCCESS`, or why it failed).
    /// The notice telling a sender their message was not delivered is sent either way.
    pub delivery_status: bool,
    /// Where every change of a login's bridge state is posted as JSON (with the appservice's
    /// `as_token` as Bearer token); none while unset. See [`BridgeState`].
    pub bridge_state_url: Option<String>,
    /// Milliseconds a login's connection may be lost before that counts as a change of its
    /// bridge state (served, pushed, counted, told): a blip shorter than this is no outage.
    pub bridge_state_debounce_ms: u64,
    /// Double puppeting by the appservice method ([`double_puppet`]): per homeserver name, the
    /// secret `as_token:<token>` of a second registration whose `users` namespace covers that
    /// server's users. A user who turns it on (`double-puppet on`) then sees what they send
    /// from the network appear as their own account. Empty (the default): off for everyone.
    pub double_puppet: BTreeMap<String, String>,
    /// How many of a chat's last messages a portal the kit makes is filled with (from
    /// [`Network::fetch_history`]); 0: none.
    pub history_fill: usize,
    /// The most messages posted when a chat is caught up after the bridge or a connection
    /// was away (the newest of them when more were missed); 0: no catch-up, the portal is
    /// told that messages may be missing instead.
    pub history_catch_up: usize,
}

/// Written out without its secrets (the provisioning secret, the double-puppeting tokens, the
/// media links' key): settings end up in logs and panic messages.
impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "<unset>" };
        let servers: Vec<&String> = self.double_puppet.keys().collect();
        f.debug_struct("BridgeConfig")
            .field("relay", &self.relay)
            .field(
                "provisioning_secret",
                &hidden(self.provisioning_secret.is_some()),
            )
            .field("admins", &self.admins)
            .field("policy_lists", &self.policy_lists)
            .field("connection_wait", &self.connection_wait)
            .field("media_links", &self.media_links)
            .field("delivery_status", &self.delivery_status)
            .field("bridge_state_url", &self.bridge_state_url)
            .field("bridge_state_debounce_ms", &self.bridge_state_debounce_ms)
            .field("double_puppet (servers)", &servers)
            .field("history_fill", &self.history_fill)
            .field("history_catch_up", &self.history_catch_up)
            .finish()
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            relay: false,
            provisioning_secret: None,
            admins: Vec::new(),
            policy_lists: Vec::new(),
            connection_wait: 30,
            media_links: MediaLinkConfig::default(),
            delivery_status: true,
            bridge_state_url: None,
            bridge_state_debounce_ms: 10_000,
            double_puppet: BTreeMap::new(),
            history_fill: 50,
            history_catch_up: 500,
        }
    }
}

impl BridgeConfig {
    /// Relay mode on in new portals.
    pub fn relay(mut self, relay: bool) -> Self {
        self.relay = relay;
        self
    }

    /// The provisioning API's shared secret.
    pub fn provisioning_secret(mut self, secret: impl Into<String>) -> Self {
        self.provisioning_secret = Some(secret.into());
        self
    }

    /// Adds an admin.
    pub fn admin(mut self, user_id: impl Into<String>) -> Self {
        self.admins.push(user_id.into());
        self
    }

    /// Follows a policy list (a room id or alias).
    pub fn policy_list(mut self, room: impl Into<String>) -> Self {
        self.policy_lists.push(room.into());
        self
    }

    /// How long, in seconds, events of a user with a login wait for its connection.
    pub fn connection_wait(mut self, seconds: u64) -> Self {
        self.connection_wait = seconds;
        self
    }

    /// The settings of media links.
    pub fn media_links(mut self, media_links: MediaLinkConfig) -> Self {
        self.media_links = media_links;
        self
    }

    /// Delivery receipts and status events on or off.
    pub fn delivery_status(mut self, on: bool) -> Self {
        self.delivery_status = on;
        self
    }

    /// Where changes of bridge state are posted.
    pub fn bridge_state_url(mut self, url: impl Into<String>) -> Self {
        self.bridge_state_url = Some(url.into());
        self
    }

    /// How long, in milliseconds, a lost connection waits before it counts.
    pub fn bridge_state_debounce_ms(mut self, ms: u64) -> Self {
        self.bridge_state_debounce_ms = ms;
        self
    }

    /// The double puppeting secret (`as_token:<token>`) for the users of `server`.
    pub fn double_puppet(mut self, server: impl Into<String>, secret: impl Into<String>) -> Self {
        self.double_puppet.insert(server.into(), secret.into());
        self
    }

    /// How many past messages fill a new portal (0: none).
    pub fn history_fill(mut self, messages: usize) -> Self {
        self.history_fill = messages;
        self
    }

    /// The most messages a catch-up posts (0: none, a gap notice instead).
    pub fn history_catch_up(mut self, messages: usize) -> Self {
        self.history_catch_up = messages;
        self
    }
}

/// A bridge: a [`Network`] plus the kit. Build it, take its [`Router`] for the plugin, and
/// keep its [`BridgeHandle`] if the bridge's own code needs one.
///
/// ```no_run
/// # fn demo<N: trestle_bridge::Network>(network: N) -> trestle::Router {
/// use trestle_bridge::{Bridge, BridgeConfig};
/// Bridge::new(network, BridgeConfig::default().relay(true)).router()
/// # }
/// ```
pub struct Bridge<N: Network> {
    handle: BridgeHandle<N>,
}

impl<N: Network> Bridge<N> {
    /// A bridge to `network`.
    pub fn new(network: N, config: BridgeConfig) -> Self {
        let shared = Shared {
            network,
            policy: policy::Gate::new(&config.policy_lists),
            config,
            app: OnceLock::new(),
            migrated: tokio::sync::OnceCell::new(),
            connections: Mutex::new(Vec::new()),
            holding: AtomicBool::new(false),
            serve_stop: tokio::sync::watch::Sender::new(false),
            in_hand: Arc::new(tokio::sync::RwLock::new(())),
            portal_lock: tokio::sync::Mutex::new(()),
            typing: Mutex::new(HashMap::new()),
            quiet: Mutex::new(HashSet::new()),
            waits: speaker::Waits::default(),
            media: media::Links::default(),
            calls: calls::Told::default(),
            states: state::Board::default(),
            double_puppets: double_puppet::Clients::default(),
            gates: history::Gates::default(),
            own_handlers: Mutex::new(Vec::new()),
            handed: Mutex::new(handoff::View::default()),
        };
        Bridge {
            handle: BridgeHandle {
                shared: Arc::new(shared),
            },
        }
    }

    /// The handle the network and the bridge's own code act through.
    pub fn handle(&self) -> BridgeHandle<N> {
        self.handle.clone()
    }

    /// Runs `handler` for the Matrix events of `event_type` (a timeline event's or an
    /// ephemeral one's, such as `m.presence`) that the appservice is sent, besides the kit's
    /// own handling and after it: for what the kit does not bridge itself (a room's topic, say).
    /// Unlike a route added to [`Bridge::router`], it runs where the kit's handling does: where
    /// processes share a PostgreSQL store, in the process that holds the bridge's connections,
    /// to which the event is handed with the others of its room and in their order
    /// (docs/scaling.md), so what it sends to the network is sent whichever process received
    /// the event. Events of the appservice's own users never reach it. An
    /// [`BridgeError::Unsupported`] it returns is no failure.
    pub fn on_type<F, Fut>(self, event_type: impl Into<String>, handler: F) -> Self
    where
        F: Fn(BridgeHandle<N>, trestle::router::RawEvent) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = NetworkResult<()>> + Send + 'static,
    {
        self.handle
            .shared
            .own_handlers
            .lock_unpoisoned()
            .push(own::OwnHandler::new(event_type.into(), handler));
        self
    }

    /// The router of the bridge: Matrix events of portals and management rooms, the alias and
    /// user queries, the provisioning API (`/provision/v1/…`) and a service that connects the
    /// stored logins and runs the network's own connections ([`Network::serve`]) on start and
    /// disconnects them on stop. Where processes share a PostgreSQL store that service runs in
    /// one process at a time ([`Router::singleton`]), and the others hand it the events that
    /// reach the network (docs/scaling.md). Add the bridge's own routes and
    /// hooks (`thirdparty`, …) to it. The kit never bridges events of the appservice's own
    /// users, whatever `own_events` says; handlers of the bridge's own would see them with it
    /// on.
    pub fn router(&self) -> Router {
        let (alias, user, web, service) = (
            self.handle.clone(),
            self.handle.clone(),
            self.handle.clone(),
            self.handle.clone(),
        );
        let mut router = Router::<BridgeHandle<N>>::new().own_events(false);
        if let Some(gate) = &self.handle.shared.policy {
            let rooms = self.handle.clone();
            router = gate
                .lists
                .route(router)
                .service("policy-rooms", move |app| {
                    let bridge = rooms.clone();
                    async move { Ok(bridge.follow_room_rules(app).await?) }
                });
        }
        router
            .on(matrix::on_event::<N>)
            .on_alias_query(move |app, room_alias| {
                let bridge = alias.clone();
                async move { Ok(bridge.answer_alias_query(&app, &room_alias).await?) }
            })
            .on_user_query(move |app, user_id| {
                let bridge = user.clone();
                async move { Ok(bridge.answer_user_query(&app, &user_id).await?) }
            })
            .web(move |app| {
                provision::routes(web.clone(), app.clone()).merge(media::routes(web.clone(), app))
            })
            .singleton("bridge", move |app| {
                let bridge = service.clone();
                async move { Ok(bridge.run(app).await?) }
            })
            .with_state(self.handle.clone())
    }
}

/// What every handle of one bridge shares.
pub(crate) struct Shared<N: Network> {
    pub(crate) network: N,
    pub(crate) config: BridgeConfig,
    /// The policy lists of `config`, when there are any.
    pub(crate) policy: Option<policy::Gate>,
    /// The appservice, known once it first calls us; weak, because its router holds us.
    pub(crate) app: OnceLock<WeakAppservice>,
    pub(crate) migrated: tokio::sync::OnceCell<()>,
    /// Live connections by (Matrix user, login id).
    pub(crate) connections: Mutex<Vec<LiveConnection<N>>>,
    /// Whether this process runs the kit's service, so holds the logins' connections: where
    /// processes share the store, the others hand their events to it (module `handoff`).
    pub(crate) holding: AtomicBool,
    /// Set when the network's own connections are to close ([`BridgeHandle::serve_stopping`]).
    pub(crate) serve_stop: tokio::sync::watch::Sender<bool>,
    /// Read while an event is handled through the connections (module `handoff`).
    pub(crate) in_hand: Arc<tokio::sync::RwLock<()>>,
    /// Held while a portal is made, so two joins of one alias make one room.
    pub(crate) portal_lock: tokio::sync::Mutex<()>,
    /// Who was typing in each portal at the last `m.typing`.
    pub(crate) typing: Mutex<HashMap<OwnedRoomId, HashSet<OwnedUserId>>>,
    /// Automatic logins (user, login id) not connected yet: their first "connected." is not
    /// told, whichever of the kit and the network records it first.
    pub(crate) quiet: Mutex<HashSet<(OwnedUserId, String)>>,
    /// What events waiting for a login's connection watch.
    pub(crate) waits: speaker::Waits,
    /// The key of media links, once known.
    pub(crate) media: media::Links,
    /// Calls whose caller was told that calls do not cross.
    pub(crate) calls: calls::Told,
    /// Every login's bridge state, debounced.
    pub(crate) states: state::Board,
    /// The clients that act as users who turned double puppeting on, and where they joined.
    pub(crate) double_puppets: double_puppet::Clients,
    /// Each chat's gate: live messages wait while its history is filled in or caught up.
    pub(crate) gates: history::Gates,
    /// The bridge's own handlers ([`Bridge::on_type`]).
    pub(crate) own_handlers: Mutex<Vec<own::OwnHandler<N>>>,
    /// What the holder knows of its handoff queue (module `handoff`).
    pub(crate) handed: Mutex<handoff::View>,
}

/// One live connection of a login.
pub(crate) struct LiveConnection<N: Network> {
    pub(crate) user: OwnedUserId,
    pub(crate) login_id: String,
    pub(crate) connection: Arc<N::Connection>,
}

#[cfg(test)]
mod tests;
