//! The bridge's shared state: settings, the queue to the component's connection, and what it
//! knows of each room (who of ours is in it under which nick, who else is, its subject).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, OwnedMutexGuard, mpsc, oneshot};
use tokio_xmpp::{
    Stanza,
    jid::{BareJid, FullJid},
    parsers::mam::{Fin, Result_},
};
use trestle::{ruma::OwnedUserId, sync::MutexExt};
use trestle_bridge::{BridgeError, BridgeHandle, NetworkResult};

use crate::{ids, settings::Checked, store::XmppStore, xmpp::stanzas};

mod puppet;
pub mod requests;

pub use puppet::{Account, Leftovers, OwnMessage, Puppet};
pub use requests::Requests;

/// The kit's handle on this bridge.
pub type Kit = BridgeHandle<Hub>;

/// How many rooms' messages' ids [`Hub::remember_stanza_id`] keeps before it starts over.
const REMEMBERED: usize = 10_000;

/// One page of an archive query's answers, gathered as they come (module `archive`).
pub struct Page {
    /// The archived messages so far.
    pub results: Vec<Result_>,
    /// Told the query's end, or why it failed.
    pub done: Option<oneshot::Sender<Result<Fin, String>>>,
}

/// The archive queries waiting for their answers, by the id of their request (also their
/// `queryid`).
#[derive(Default)]
pub struct Queries(pub Mutex<HashMap<String, Page>>);

/// Whose reactions to which message: chat, sender and message (each as the kit names them).
type ReactionKey = (String, String, String);

/// What the bridge knows of one room.
#[derive(Debug, Default)]
struct Room {
    /// The Matrix users in it: their full JID and the nick they joined with.
    ours: HashMap<FullJid, String>,
    /// The other occupants by nick, with their real JID when the room shows it.
    occupants: HashMap<String, Option<BareJid>>,
    /// The room's subject, once the room sent it (the last step of joining).
    subject: Option<String>,
    /// Whether the bot's join is complete (the subject came).
    joined: bool,
    /// Whether the bot is an owner of the room (it made it), as its own presence there says:
    /// then it may give Matrix users standing (module `powers`).
    bot_owns: bool,
}

/// The shared state.
pub struct Hub {
    /// The checked settings.
    pub cfg: Checked,
    out: mpsc::UnboundedSender<Stanza>,
    /// Locked by the component's connection while it runs, and given back when it ends, so
    /// that this process finds it again if it holds the bridge again later.
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Stanza>>>,
    /// Whether this process holds the component ([`Hub::hold`]): elsewhere nothing is queued,
    /// since nothing would send it.
    holds: AtomicBool,
    own_out: mpsc::UnboundedSender<OwnMessage>,
    own_queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<OwnMessage>>>,
    server_name: OnceLock<String>,
    rooms: Mutex<HashMap<BareJid, Room>>,
    changed: Notify,
    /// The archive queries waiting for their answers.
    pub(crate) queries: Queries,
    /// The bridge's requests waiting for their answers ([`requests`]).
    pub(crate) requests: Requests,
    /// The room's id (`stanza-id`) of recent messages, by room and the sender's id: a
    /// correction names the sender's.
    stanza_ids: Mutex<HashMap<(BareJid, String), String>>,
    /// Each sender's reactions to each message, as last seen or sent: XMPP sends the whole
    /// set each time (XEP-0444), Matrix one reaction at a time.
    reactions: Mutex<HashMap<ReactionKey, BTreeSet<String>>>,
    /// Who is shown typing, as `chat sender` (module `chatstates`).
    typing: Mutex<HashSet<String>>,
    /// The power level the bridge gave each ghost in each room (module `powers`).
    powers: Mutex<HashMap<(BareJid, OwnedUserId), i64>>,
    /// The standing (as a power level) the bridge gave each Matrix user in each room (module
    /// `powers`).
    granted: Mutex<HashMap<(BareJid, OwnedUserId), i64>>,
    /// Each user's last presence passed on, by Matrix user id (module `presence`).
    presences: Mutex<HashMap<String, String>>,
    /// The avatar (XEP-0153 hash) last asked for of each remote user (module `avatars`).
    avatars: Mutex<HashMap<String, String>>,
    /// The bridge's tables, once the appservice started: what the two maps of messages above
    /// must keep across restarts.
    store: OnceLock<XmppStore>,
    /// Set once this process is ready to bridge (module `events`): done once, whichever of
    /// the plain service and the component's run starts first.
    pub(crate) ready: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub for `cfg`; nothing is sent until the component connects.
    pub fn new(cfg: Checked) -> Self {
        let (out, queue) = mpsc::unbounded_channel();
        let (own_out, own_queue) = mpsc::unbounded_channel();
        Hub {
            cfg,
            out,
            queue: Arc::new(tokio::sync::Mutex::new(queue)),
            holds: AtomicBool::new(false),
            own_out,
            own_queue: Arc::new(tokio::sync::Mutex::new(own_queue)),
            server_name: OnceLock::new(),
            rooms: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            queries: Queries::default(),
            requests: Requests::default(),
            stanza_ids: Mutex::new(HashMap::new()),
            reactions: Mutex::new(HashMap::new()),
            typing: Mutex::new(HashSet::new()),
            avatars: Mutex::new(HashMap::new()),
            powers: Mutex::new(HashMap::new()),
            granted: Mutex::new(HashMap::new()),
            presences: Mutex::new(HashMap::new()),
            store: OnceLock::new(),
            ready: tokio::sync::OnceCell::new(),
        }
    }

    /// Who is shown typing, as `chat sender`, locked (module `chatstates`).
    pub(crate) fn typing_lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.typing.lock_unpoisoned()
    }

    /// The power level the bridge gave each ghost in each room, locked (module `powers`).
    pub(crate) fn powers_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(BareJid, OwnedUserId), i64>> {
        self.powers.lock_unpoisoned()
    }

    /// The standing the bridge gave each Matrix user in each room, locked (module `powers`).
    pub(crate) fn granted_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(BareJid, OwnedUserId), i64>> {
        self.granted.lock_unpoisoned()
    }

    /// Each user's last presence passed on, locked (module `presence`).
    pub(crate) fn presences_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.presences.lock_unpoisoned()
    }

    /// The rooms a Matrix user's JID is in, with their nick in each.
    pub fn rooms_of(&self, jid: &FullJid) -> Vec<(BareJid, String)> {
        let rooms = self.rooms.lock_unpoisoned();
        let theirs = rooms.iter().filter_map(|(room, state)| {
            state.ours.get(jid).map(|nick| (room.clone(), nick.clone()))
        });
        theirs.collect()
    }

    /// Records whether the bot owns `room`, as its own presence there said.
    pub fn set_bot_owns(&self, room: &BareJid, owns: bool) {
        let mut rooms = self.rooms.lock_unpoisoned();
        rooms.entry(room.clone()).or_default().bot_owns = owns;
    }

    /// Whether the bot owns `room`.
    pub fn bot_owns(&self, room: &BareJid) -> bool {
        let rooms = self.rooms.lock_unpoisoned();
        rooms.get(room).is_some_and(|state| state.bot_owns)
    }

    /// The Matrix users in `room`: their full JIDs and nicks.
    pub fn ours_in(&self, room: &BareJid) -> Vec<(FullJid, String)> {
        let rooms = self.rooms.lock_unpoisoned();
        let ours = rooms.get(room).map(|state| state.ours.clone());
        ours.unwrap_or_default().into_iter().collect()
    }

    /// The avatar last asked for of each remote user, locked (module `avatars`).
    pub(crate) fn avatars_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.avatars.lock_unpoisoned()
    }

    /// The queue of stanzas for the component's connection, held by whoever runs it (waited
    /// for while another run still holds it) and given back when the guard is dropped.
    pub async fn take_queue(&self) -> OwnedMutexGuard<mpsc::UnboundedReceiver<Stanza>> {
        self.queue.clone().lock_owned().await
    }

    /// Records whether this process holds the component: where processes share the store
    /// (docs/scaling.md), only the holder of the kit's service sends to XMPP, and the others
    /// hand it their events, so stanzas queued elsewhere would never go, or go late (when the
    /// process holds the bridge again). One process alone on its store holds it throughout.
    pub fn hold(&self, holds: bool) {
        self.holds.store(holds, Ordering::SeqCst);
    }

    /// Whether this process holds the component.
    pub fn holds(&self) -> bool {
        self.holds.load(Ordering::SeqCst)
    }

    /// Where the connections of users' own accounts hand the messages they sent elsewhere.
    pub fn own_messages(&self) -> mpsc::UnboundedSender<OwnMessage> {
        self.own_out.clone()
    }

    /// The messages users sent from their own XMPP clients, held by whoever bridges them
    /// (`None` while held already) and given back when the guard is dropped.
    pub fn take_own_messages(
        &self,
    ) -> Option<OwnedMutexGuard<mpsc::UnboundedReceiver<OwnMessage>>> {
        self.own_queue.clone().try_lock_owned().ok()
    }

    /// Queues a stanza for the server; it waits there while the component is not connected.
    /// Dropped in a process that does not hold the component ([`Hub::hold`]).
    pub fn send(&self, stanza: impl Into<Stanza>) {
        if !self.holds() {
            tracing::debug!("not sent to XMPP: another process holds the component");
            return;
        }
        // Only closed when the bridge stops, when nothing is sent any more.
        let _ = self.out.send(stanza.into());
    }

    /// Records the homeserver's name, which the JIDs of its users leave out.
    pub fn set_server_name(&self, name: &str) {
        let _ = self.server_name.set(name.to_owned());
    }

    /// The homeserver's name, once the bridge started.
    pub fn server_name(&self) -> NetworkResult<&str> {
        self.server_name
            .get()
            .map(String::as_str)
            .ok_or_else(|| BridgeError::Retriable("the XMPP bridge is starting".into()))
    }

    /// The component's domain.
    pub fn domain(&self) -> &str {
        &self.cfg.settings.domain
    }

    /// The JID of a Matrix user on the component.
    pub fn user_jid(&self, user: &str) -> NetworkResult<BareJid> {
        ids::user_jid(user, self.server_name()?, self.domain())
            .ok_or_else(|| BridgeError::BadRequest(format!("{user} has no JID on XMPP")))
    }

    /// The bridge's own JID, which hears the rooms of portals: the component's domain.
    pub fn bot_jid(&self) -> &FullJid {
        &self.cfg.bot
    }

    /// The bot joins `room` (again), to hear it for its portal.
    pub fn bot_join(&self, room: &BareJid) {
        self.rooms
            .lock_unpoisoned()
            .entry(room.clone())
            .or_default();
        if let Some(presence) = stanzas::join(self.bot_jid(), room, &self.cfg.settings.bot_nick) {
            self.send(presence);
        }
    }

    /// Whether the bot's join of `room` is complete (its subject came).
    pub fn bot_joined(&self, room: &BareJid) -> bool {
        let rooms = self.rooms.lock_unpoisoned();
        rooms.get(room).is_some_and(|state| state.joined)
    }

    /// Forgets who of ours is in which room, at the end of this process's turn with the
    /// component: its JIDs left the rooms with its stream, and join again at its next turn.
    pub fn forget_rooms(&self) {
        self.rooms.lock_unpoisoned().clear();
    }

    /// Waits (up to `wait`) until the bot is in `room`, and answers its subject.
    pub async fn joined(&self, room: &BareJid, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(state) = self.rooms.lock_unpoisoned().get(room)
                && state.joined
            {
                return state.subject.clone().filter(|s| !s.is_empty());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The room told its subject: the bot's join is complete (the subject is the last thing
    /// a room sends on joining). Answers whether it is news: a change in a room the bot was in
    /// already, not the subject its join ended with.
    pub fn set_subject(&self, room: &BareJid, subject: &str) -> bool {
        let mut rooms = self.rooms.lock_unpoisoned();
        let state = rooms.entry(room.clone()).or_default();
        let news = state.joined && state.subject.as_deref() != Some(subject);
        state.subject = Some(subject.to_owned());
        state.joined = true;
        drop(rooms);
        self.changed.notify_waiters();
        news
    }

    /// A Matrix user joins `room` as `nick` (again, with a new nick, when it changed).
    pub fn user_join(&self, room: &BareJid, puppet: &Puppet, nick: &str) {
        let mut rooms = self.rooms.lock_unpoisoned();
        let state = rooms.entry(room.clone()).or_default();
        let old = state.ours.insert(puppet.full.clone(), nick.to_owned());
        drop(rooms);
        if old.as_deref() == Some(nick) {
            return;
        }
        if let Some(old) = old
            && let Some(presence) = stanzas::leave(&puppet.full, room, &old)
        {
            self.send(presence);
        }
        if let Some(presence) = stanzas::join(&puppet.full, room, nick) {
            self.send(presence);
        }
    }

    /// A Matrix user leaves `room`.
    pub fn user_leave(&self, room: &BareJid, puppet: &Puppet) {
        let nick = self
            .rooms
            .lock_unpoisoned()
            .get_mut(room)
            .and_then(|state| state.ours.remove(&puppet.full));
        if let Some(presence) = nick.and_then(|nick| stanzas::leave(&puppet.full, room, &nick)) {
            self.send(presence);
        }
    }

    /// A Matrix user's JID goes away (logged out, the bridge stopping): they leave every
    /// room.
    pub fn leave_all(&self, puppet: &Puppet) {
        let left: Vec<(BareJid, String)> = self
            .rooms
            .lock_unpoisoned()
            .iter_mut()
            .filter_map(|(room, state)| Some((room.clone(), state.ours.remove(&puppet.full)?)))
            .collect();
        for (room, nick) in left {
            if let Some(presence) = stanzas::leave(&puppet.full, &room, &nick) {
                self.send(presence);
            }
        }
    }

    /// Whether `nick` in `room` is the bridge's: the bot, or a Matrix user.
    pub fn is_ours(&self, room: &BareJid, nick: &str) -> bool {
        nick == self.cfg.settings.bot_nick
            || self
                .rooms
                .lock_unpoisoned()
                .get(room)
                .is_some_and(|state| state.ours.values().any(|n| n == nick))
    }

    /// The Matrix user whose occupant in `room` is `nick`, if one is.
    pub fn nick_owner(&self, room: &BareJid, nick: &str) -> Option<FullJid> {
        let rooms = self.rooms.lock_unpoisoned();
        let ours = &rooms.get(room)?.ours;
        ours.iter()
            .find(|(_, n)| *n == nick)
            .map(|(jid, _)| jid.clone())
    }

    /// Forgets a Matrix user's occupant the room removed (they are not in it any more).
    pub fn forget_ours(&self, room: &BareJid, jid: &FullJid) {
        if let Some(state) = self.rooms.lock_unpoisoned().get_mut(room) {
            state.ours.remove(jid);
        }
    }

    /// The nick a Matrix user has in `room`, if they are in it.
    pub fn nick_of(&self, room: &BareJid, jid: &FullJid) -> Option<String> {
        self.rooms
            .lock_unpoisoned()
            .get(room)
            .and_then(|state| state.ours.get(jid).cloned())
    }

    /// Records an occupant of `room` (with their real JID when the room shows it); answers
    /// whether they are new.
    pub fn occupant_joined(&self, room: &BareJid, nick: &str, jid: Option<BareJid>) -> bool {
        let mut rooms = self.rooms.lock_unpoisoned();
        let state = rooms.entry(room.clone()).or_default();
        state.occupants.insert(nick.to_owned(), jid).is_none()
    }

    /// Forgets an occupant who left; answers their real JID if the room showed it.
    pub fn occupant_left(&self, room: &BareJid, nick: &str) -> Option<BareJid> {
        self.rooms
            .lock_unpoisoned()
            .get_mut(room)
            .and_then(|state| state.occupants.remove(nick))
            .flatten()
    }

    /// The occupants of `room` that are not the bridge's, with their real JIDs when shown.
    pub fn occupants(&self, room: &BareJid) -> Vec<(String, Option<BareJid>)> {
        self.rooms
            .lock_unpoisoned()
            .get(room)
            .map(|state| {
                let all = state.occupants.iter();
                all.map(|(nick, jid)| (nick.clone(), jid.clone())).collect()
            })
            .unwrap_or_default()
    }

    /// The real JID of an occupant, when the room showed it.
    pub fn real_jid(&self, room: &BareJid, nick: &str) -> Option<BareJid> {
        self.rooms
            .lock_unpoisoned()
            .get(room)
            .and_then(|state| state.occupants.get(nick).cloned().flatten())
    }

    /// After a reconnection: the presences with which the bot and every Matrix user join their
    /// rooms again (the server forgot them when the stream dropped), to be sent before anything
    /// queued meanwhile.
    pub fn rejoins(&self) -> Vec<Stanza> {
        let mut rooms = self.rooms.lock_unpoisoned();
        let mut joins = Vec::new();
        for (room, state) in rooms.iter_mut() {
            state.joined = false;
            state.occupants.clear();
            let bot = (self.bot_jid(), &self.cfg.settings.bot_nick);
            for (from, nick) in std::iter::once(bot).chain(state.ours.iter()) {
                if let Some(presence) = stanzas::join(from, room, nick) {
                    joins.push(presence.into());
                }
            }
        }
        joins
    }

    /// The bridge's tables, from now on (set once, when the appservice starts).
    pub fn set_store(&self, store: XmppStore) {
        let _ = self.store.set(store);
    }

    /// Records that the message `origin` (the sender's id) is `stanza_id` in `room`.
    pub fn remember_stanza_id(&self, room: &BareJid, origin: &str, stanza_id: &str) {
        let mut ids = self.stanza_ids.lock_unpoisoned();
        // Corrections name recent messages: a bounded memory is enough.
        if ids.len() >= REMEMBERED {
            ids.clear();
        }
        ids.insert((room.clone(), origin.to_owned()), stanza_id.to_owned());
    }

    /// As [`Hub::remember_stanza_id`], and kept in the store when the message was sent from
    /// Matrix: a redaction, reply or reaction may name it long after, past a restart.
    pub async fn keep_stanza_id(
        &self,
        room: &BareJid,
        origin: &str,
        stanza_id: &str,
    ) -> NetworkResult<()> {
        self.remember_stanza_id(room, origin, stanza_id);
        match self.store.get() {
            Some(store) if stanzas::is_matrix_id(origin) => {
                store.save_stanza_id(room.as_str(), origin, stanza_id).await
            }
            _ => Ok(()),
        }
    }

    /// The room's id of the message its sender calls `origin`, if it was seen recently; else
    /// `origin`.
    pub fn stanza_id_of(&self, room: &BareJid, origin: &str) -> String {
        self.stanza_ids
            .lock_unpoisoned()
            .get(&(room.clone(), origin.to_owned()))
            .cloned()
            .unwrap_or_else(|| origin.to_owned())
    }

    /// The room's id of the message its sender calls `origin`: as [`Hub::stanza_id_of`], and
    /// for a message sent from Matrix also as the store kept it.
    pub async fn room_id_of(&self, room: &BareJid, origin: &str) -> NetworkResult<String> {
        if let Some(id) = self
            .stanza_ids
            .lock_unpoisoned()
            .get(&(room.clone(), origin.to_owned()))
        {
            return Ok(id.clone());
        }
        let kept = match self.store.get() {
            Some(store) if stanzas::is_matrix_id(origin) => {
                store.stanza_id(room.as_str(), origin).await?
            }
            _ => None,
        };
        Ok(kept.unwrap_or_else(|| origin.to_owned()))
    }

    /// The id the kit knows a room's message by: its sender's, when the bridge sent it from
    /// Matrix (the event's id), else the room's.
    pub async fn mapped_id(&self, room: &BareJid, stanza_id: &str) -> NetworkResult<String> {
        let remembered = {
            let ids = self.stanza_ids.lock_unpoisoned();
            let ours = ids.iter().find(|((r, origin), sid)| {
                r == room && *sid == stanza_id && stanzas::is_matrix_id(origin)
            });
            ours.map(|((_, origin), _)| origin.clone())
        };
        if let Some(origin) = remembered {
            return Ok(origin);
        }
        let kept = match self.store.get() {
            Some(store) => store.origin_id(room.as_str(), stanza_id).await?,
            None => None,
        };
        Ok(kept
            .filter(|origin| stanzas::is_matrix_id(origin))
            .unwrap_or_else(|| stanza_id.to_owned()))
    }

    /// A sender's reactions to a message, as last seen or sent: remembered, or kept in the
    /// store.
    async fn reactions_now(&self, key: &ReactionKey) -> NetworkResult<BTreeSet<String>> {
        if let Some(set) = self.reactions.lock_unpoisoned().get(key) {
            return Ok(set.clone());
        }
        match self.store.get() {
            Some(store) => store.reactions(&key.0, &key.1, &key.2).await,
            None => Ok(BTreeSet::new()),
        }
    }

    /// Records a sender's reactions to a message, in memory and in the store.
    async fn set_reactions(&self, key: ReactionKey, now: &BTreeSet<String>) -> NetworkResult<()> {
        if let Some(store) = self.store.get() {
            store.set_reactions(&key.0, &key.1, &key.2, now).await?;
        }
        let mut all = self.reactions.lock_unpoisoned();
        // What the store keeps need not stay in memory for long.
        if all.len() >= REMEMBERED {
            all.clear();
        }
        if now.is_empty() {
            all.remove(&key);
        } else {
            all.insert(key, now.clone());
        }
        Ok(())
    }

    /// A sender's reactions to a message are now `now` (an XMPP reactions message): answers
    /// those added and those removed since the last.
    pub async fn replace_reactions(
        &self,
        key: ReactionKey,
        now: BTreeSet<String>,
    ) -> NetworkResult<(Vec<String>, Vec<String>)> {
        let before = self.reactions_now(&key).await?;
        let added = now.difference(&before).cloned().collect();
        let removed = before.difference(&now).cloned().collect();
        self.set_reactions(key, &now).await?;
        Ok((added, removed))
    }

    /// A Matrix user adds (`on`) or takes back a reaction to a message: answers their whole
    /// set now, which is what XMPP is sent.
    pub async fn toggle_reaction(
        &self,
        key: ReactionKey,
        emoji: &str,
        on: bool,
    ) -> NetworkResult<BTreeSet<String>> {
        let mut set = self.reactions_now(&key).await?;
        if on {
            set.insert(emoji.to_owned());
        } else {
            set.remove(emoji);
        }
        self.set_reactions(key, &set).await?;
        Ok(set)
    }
}
