//! A toy network for the bridge kit's tests: chats, users and messages live in memory, and
//! what Matrix sends to it is recorded for the test to read. It is deliberately unlike IRC:
//! messages have ids, edits and redactions exist, threads and read receipts too (threads can be
//! turned off, for a network without them), chats keep a history the test fills
//! ([`ToyWorld::say`]), logins take a password, and reactions are left out to exercise the
//! kit's "unsupported" defaults.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use trestle::ruma::{MilliSecondsSinceUnixEpoch, UInt};
use trestle_bridge::{
    BridgeError, BridgeHandle, Capabilities, ChatInfo, HistoryAnchor, HistoryRequest, InfoSection,
    Login, LoginHandle, LoginRequest, MatrixEdit, MatrixMembership, MatrixMessage, MatrixReceipt,
    MatrixRedaction, MatrixTyping, MessageContent, Network, NetworkResult, NewLogin, Protocol,
    RemoteMessage, Via,
};

/// The password every toy login needs.
pub const TOY_PASSWORD: &str = "secret";

/// Something that arrived on the toy network from Matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arrived {
    /// A message, with its toy id.
    Message {
        /// The chat.
        chat: String,
        /// `puppet:<name>` or `relay:<display name>`.
        speaker: String,
        /// The text.
        body: String,
        /// The toy message it replies to.
        reply_to: Option<String>,
        /// The root of the toy thread it was sent in.
        thread_root: Option<String>,
        /// The id the toy network gave it.
        id: String,
    },
    /// An edit of a toy message.
    Edit {
        /// The message edited.
        target: String,
        /// Its new text.
        body: String,
    },
    /// A deletion of a toy message.
    Redaction {
        /// The message deleted.
        target: String,
    },
    /// A Matrix user's membership in a portal changed.
    Membership {
        /// The chat.
        chat: String,
        /// The Matrix user.
        user: String,
        /// `join`, `leave`, ….
        membership: String,
    },
    /// Someone read a chat up to a toy message.
    Read {
        /// `puppet:<name>`.
        speaker: String,
        /// The last message read.
        up_to: String,
    },
    /// Someone started or stopped typing.
    Typing {
        /// `puppet:<name>` or `relay:<display name>`.
        speaker: String,
        /// Typing or not.
        typing: bool,
    },
}

/// A message in a toy chat's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Said {
    /// Its toy id.
    pub id: String,
    /// The toy user who said it.
    pub sender: String,
    /// The text.
    pub body: String,
    /// When, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// The toy network's in-memory world, shared with the test.
#[derive(Default)]
pub struct ToyWorld {
    arrived: Mutex<Vec<Arrived>>,
    handles: Mutex<HashMap<String, LoginHandle<ToyNetwork>>>,
    next_id: Mutex<u64>,
    /// While true, connecting a login waits: a slow network.
    held: tokio::sync::watch::Sender<bool>,
    /// While true, the network says it has no threads.
    no_threads: AtomicBool,
    /// Each chat's history, oldest first.
    history: Mutex<HashMap<String, Vec<Said>>>,
    /// While true, reading history waits: a slow network.
    history_held: tokio::sync::watch::Sender<bool>,
    /// How often history was read, for the test to wait on.
    history_reads: Mutex<u64>,
    /// While true, the network says it keeps no history (as IRC).
    without_history: Mutex<bool>,
}

impl ToyWorld {
    /// Everything that arrived so far.
    pub fn arrived(&self) -> Vec<Arrived> {
        self.arrived.lock().unwrap().clone()
    }

    /// Waits until something matching `pred` arrived, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Arrived) -> bool) -> Arrived {
        let started = Instant::now();
        loop {
            if let Some(found) = self.arrived().into_iter().find(|a| pred(a)) {
                return found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what} never arrived on the toy network; it has: {:#?}",
                self.arrived()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Holds every connection being made until `false` is set: the network is slow to let
    /// logins in.
    pub fn hold_connections(&self, held: bool) {
        self.held.send_replace(held);
    }

    /// Whether the network says it has threads (it does until told otherwise).
    pub fn set_threads(&self, threads: bool) {
        self.no_threads.store(!threads, Ordering::Relaxed);
    }

    /// The login handle the kit gave the connection of toy user `name`.
    pub fn handle(&self, name: &str) -> Option<LoginHandle<ToyNetwork>> {
        self.handles.lock().unwrap().get(name).cloned()
    }

    /// Adds a message to a chat's history, as said on the toy network by `sender` at `ts`,
    /// without telling the bridge; returns it as the bridge would be told it live.
    pub fn say(&self, chat: &str, sender: &str, body: &str, ts: u64) -> RemoteMessage<ToyNetwork> {
        let id = self.fresh_id();
        let said = Said {
            id: id.clone(),
            sender: sender.to_owned(),
            body: body.to_owned(),
            ts,
        };
        let message = said.message(chat);
        let mut history = self.history.lock().unwrap();
        history.entry(chat.to_owned()).or_default().push(said);
        message
    }

    /// Holds every read of history until `false` is set: the network is slow to answer.
    pub fn hold_history(&self, held: bool) {
        self.history_held.send_replace(held);
    }

    /// Whether the network answers reads of history (`true`, the default) or says it keeps
    /// none.
    pub fn keep_history(&self, keep: bool) {
        *self.without_history.lock().unwrap() = !keep;
    }

    /// How often the bridge read history so far.
    pub fn history_reads(&self) -> u64 {
        *self.history_reads.lock().unwrap()
    }

    /// Forgets the login handle of toy user `name`, so that the test can tell when a new
    /// connection (after a restart) has one.
    pub fn forget_handle(&self, name: &str) {
        self.handles.lock().unwrap().remove(name);
    }

    fn record(&self, arrived: Arrived) {
        self.arrived.lock().unwrap().push(arrived);
    }

    fn fresh_id(&self) -> String {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        format!("m{next}")
    }
}

impl Said {
    fn message(&self, chat: &str) -> RemoteMessage<ToyNetwork> {
        let ts = MilliSecondsSinceUnixEpoch(UInt::new_saturating(self.ts));
        RemoteMessage::new(
            chat.to_owned(),
            self.sender.clone(),
            self.id.clone(),
            MessageContent::text(&self.body),
        )
        .ts(ts)
    }
}

/// The toy network: chats `#toy_<chat>`, users `@toy_<name>`.
#[derive(Clone, Default)]
pub struct ToyNetwork {
    /// What the test reads.
    pub world: Arc<ToyWorld>,
}

/// A connection of a toy login.
pub struct ToyConnection {
    name: String,
}

fn speaker(via: &Via<'_, ToyNetwork>) -> String {
    match via {
        Via::Puppet { connection, .. } => format!("puppet:{}", connection.name),
        Via::Relay { name } => format!("relay:{name}"),
        _ => "unknown".to_owned(),
    }
}

impl Network for ToyNetwork {
    type ChatId = String;
    type UserId = String;
    type MessageId = String;
    type LoginData = String;
    type Connection = ToyConnection;

    fn protocol(&self) -> Protocol {
        Protocol::new("toy", "Toy")
    }

    fn capabilities(&self) -> Capabilities {
        let threads = !self.world.no_threads.load(Ordering::Relaxed);
        Capabilities::default().threads(threads).read_receipts(true)
    }

    fn chat_alias(&self, chat: &String) -> String {
        format!("toy_{chat}")
    }

    fn chat_for_alias(&self, localpart: &str) -> Option<String> {
        let chat = localpart.strip_prefix("toy_")?;
        chat.chars()
            .all(|c| c.is_ascii_lowercase())
            .then(|| chat.to_owned())
    }

    fn ghost_localpart(&self, user: &String) -> String {
        format!("toy_{user}")
    }

    fn user_for_ghost(&self, localpart: &str) -> Option<String> {
        localpart.strip_prefix("toy_").map(str::to_owned)
    }

    fn direct_chat(&self, user: &trestle::ruma::UserId, remote: &String) -> Option<String> {
        Some(format!("dm.{remote}.{}", user.localpart()))
    }

    async fn chat_info(&self, chat: &String) -> NetworkResult<ChatInfo> {
        Ok(ChatInfo::named(format!("Toy {chat}"))
            .topic(format!("The toy chat {chat}"))
            .network(InfoSection::new("toynet", "Toy Network")))
    }

    fn login_fields(&self) -> &'static [&'static str] {
        &["name", "password"]
    }

    async fn login(&self, request: LoginRequest) -> NetworkResult<NewLogin<Self>> {
        let name = request.fields.get("name").cloned().unwrap_or_default();
        if name.is_empty() {
            return Err(BridgeError::BadRequest("a name is needed".into()));
        }
        if request.fields.get("password").map(String::as_str) != Some(TOY_PASSWORD) {
            return Err(BridgeError::Forbidden("wrong password".into()));
        }
        Ok(NewLogin::new("toynet", name.clone(), name.clone(), name))
    }

    async fn connect(
        &self,
        login: &Login<Self>,
        handle: LoginHandle<Self>,
    ) -> NetworkResult<ToyConnection> {
        let _ = self.world.held.subscribe().wait_for(|held| !held).await;
        self.world
            .handles
            .lock()
            .unwrap()
            .insert(login.data.clone(), handle);
        Ok(ToyConnection {
            name: login.data.clone(),
        })
    }

    async fn send_message(
        &self,
        message: MatrixMessage<'_, Self>,
    ) -> NetworkResult<Option<String>> {
        if message.content.body.contains("please fail") {
            return Err(BridgeError::Remote("the toy network refused it".into()));
        }
        let id = self.world.fresh_id();
        self.world.record(Arrived::Message {
            chat: message.portal.chat.clone(),
            speaker: speaker(&message.via),
            body: message.content.body.clone(),
            reply_to: message.reply_to.clone(),
            thread_root: message.thread_root.clone(),
            id: id.clone(),
        });
        Ok(Some(id))
    }

    async fn edit_message(&self, edit: MatrixEdit<'_, Self>) -> NetworkResult<Option<String>> {
        self.world.record(Arrived::Edit {
            target: edit.target.clone(),
            body: edit.content.body.clone(),
        });
        Ok(None)
    }

    async fn typing(&self, typing: MatrixTyping<'_, Self>) -> NetworkResult<()> {
        self.world.record(Arrived::Typing {
            speaker: speaker(&typing.via),
            typing: typing.typing,
        });
        Ok(())
    }

    async fn read_receipt(&self, receipt: MatrixReceipt<'_, Self>) -> NetworkResult<()> {
        self.world.record(Arrived::Read {
            speaker: speaker(&receipt.via),
            up_to: receipt.up_to.clone(),
        });
        Ok(())
    }

    async fn matrix_membership(
        &self,
        _bridge: &BridgeHandle<Self>,
        change: MatrixMembership<'_, Self>,
    ) -> NetworkResult<()> {
        self.world.record(Arrived::Membership {
            chat: change.portal.chat.clone(),
            user: change.user.to_string(),
            membership: change.membership.clone(),
        });
        Ok(())
    }

    async fn fetch_history(
        &self,
        request: HistoryRequest<'_, Self>,
    ) -> NetworkResult<Option<Vec<RemoteMessage<Self>>>> {
        let _ = self
            .world
            .history_held
            .subscribe()
            .wait_for(|held| !held)
            .await;
        *self.world.history_reads.lock().unwrap() += 1;
        if *self.world.without_history.lock().unwrap() {
            return Ok(None);
        }
        let history = self.world.history.lock().unwrap();
        let said = history.get(request.chat).map(Vec::as_slice).unwrap_or(&[]);
        let after = match &request.anchor {
            HistoryAnchor::After(id) => match said.iter().position(|s| s.id == *id) {
                Some(at) => &said[at + 1..],
                None => said,
            },
            _ => said,
        };
        let first = after.len().saturating_sub(request.limit);
        Ok(Some(
            after[first..]
                .iter()
                .map(|s| s.message(request.chat))
                .collect(),
        ))
    }

    async fn redact_message(&self, redaction: MatrixRedaction<'_, Self>) -> NetworkResult<()> {
        self.world.record(Arrived::Redaction {
            target: redaction.target.clone(),
        });
        Ok(())
    }
}
