//! What the queues share: the store and its mode, the homeserver client, our users, the
//! metrics, the write-behind, and the narrow way up to the appservice's handlers.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::{admission::Admission, failure::SendFailureHook, users::Users, writeback::WriteBack};
use crate::{
    Result, Store, client::HomeserverClient, metrics::Metrics, store::Mode, transaction::Incoming,
};

/// An event to send in place of another: its type and its content.
pub(crate) type Sealed = (String, Box<RawValue>);

/// What the queues call in the layer above them, which the appservice gives them: the queues
/// never see the router, the handlers or the encryption, only this.
pub(crate) trait Upstream: Send + Sync + 'static {
    /// Handles one inbox item (built-in behaviour, then the handlers); `item_key` names it
    /// across re-handling, `take` the take of its room's lease it is handled under.
    fn handle(&self, item: Incoming, item_key: String, take: u64) -> BoxFuture<'static, ()>;

    /// The event to send instead of `content` of `event_type` in `room_id` (its encrypted
    /// form), or `None` to send it as it is. An error fails the send.
    fn seal<'a>(
        &'a self,
        sender: &'a UserId,
        room_id: &'a RoomId,
        event_type: &'a str,
        content: &'a RawValue,
    ) -> BoxFuture<'a, Result<Option<Sealed>>>;

    /// Whether the appservice still stands: items handled while it did not are not marked
    /// done.
    fn alive(&self) -> bool;

    /// Has the homeserver retry what it holds back: received transactions are taken again.
    fn ping(&self);
}

/// Received events that may wait for their handlers before a transaction waits too
/// (`admission.rs`). Measured at 50 events a transaction on one core (docs/benchmarks.md,
/// "Bounded work in flight"): 100 kept the burst's p50 at 6 ms, 250 at 11–14 ms, 1,000 at
/// 44–52 ms, none at 47–74 ms, throughput the same or better. Not below the rooms worked at
/// once (256): fewer would keep slow handlers of many rooms from running side by side.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// How long items stay, and how many rooms are worked at once.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) max_rooms: usize,
    pub(crate) keep_items: Duration,
    pub(crate) keep_txn_ids: Duration,
    pub(crate) max_in_flight: usize,
    /// What this process does among those sharing the store.
    pub(crate) role: crate::Role,
    /// Whether end-to-end encryption is installed: its state is this process's own.
    pub(crate) encryption: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_rooms: 256,
            keep_items: Duration::from_secs(24 * 3600),
            keep_txn_ids: Duration::from_secs(7 * 24 * 3600),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            role: crate::Role::All,
            encryption: false,
        }
    }
}

/// The one value the inbox, the outbox and their tasks share.
pub(crate) struct Core {
    /// The registration's id: what names this appservice's rows in the store.
    pub(crate) appservice_id: String,
    /// Names this appservice's instance (one process's) as the owner of leases in a shared
    /// store: random, so two instances never take each other's for their own.
    pub(crate) owner: String,
    pub(crate) client: HomeserverClient,
    pub(crate) store: Store,
    /// Chosen once, when the appservice is built.
    pub(crate) mode: Mode,
    pub(crate) users: Users,
    pub(crate) metrics: Metrics,
    /// Marks and records written behind, in batches.
    pub(crate) writeback: Arc<WriteBack>,
    pub(crate) on_send_failure: Option<SendFailureHook>,
    /// Events handed to the workers and not yet finished, and the transactions that wait.
    pub(crate) admission: Admission,
    pub(crate) options: Options,
    pub(crate) upstream: Box<dyn Upstream>,
    /// Held from a transaction's commit until its items are handed to the inbox lanes.
    pub(crate) receiving: tokio::sync::Mutex<()>,
}
