//! The durable outbox: every request to the homeserver waits in the store, in order per room,
//! until the homeserver accepted it or refused it for good.
//!
//! Connection errors and 5xx answers are retried with exponential back-off and jitter; a
//! `429 M_LIMIT_EXCEEDED` is retried after exactly the `retry_after_ms` the homeserver asked
//! for; any other 4xx cannot succeed by repeating it and is reported instead. Requests queued
//! while the homeserver is down are sent, in order, once it is back — also after a restart of
//! Trestle, since they are read back from the store.

use crate::sync::MutexExt;
use std::{
    collections::HashMap,
    fmt::Write as _,
    future::{Future, IntoFuture},
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use ruma::{
    OwnedDeviceId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedTransactionId, OwnedUserId,
    TransactionId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

mod execute;
mod remote;

use super::{
    core::Core,
    failure::SendFailure,
    lanes::{Lane, Lanes},
};
use crate::{Error, Result, store::OutboxItem};
use execute::execute;
pub(crate) use remote::wake_waiter;
use remote::{Remote, name_waiter, outcome_elsewhere, record_outcome};

/// One request to the homeserver, as stored in the outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
// Externally tagged: `RawValue` content cannot pass through the buffering an internally
// tagged enum does.
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    Message {
        room_id: OwnedRoomId,
        event_type: String,
        content: Box<RawValue>,
        txn_id: OwnedTransactionId,
        ts: Option<u64>,
    },
    State {
        room_id: OwnedRoomId,
        event_type: String,
        state_key: String,
        content: Box<RawValue>,
        ts: Option<u64>,
    },
    Redact {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
        reason: Option<String>,
        txn_id: OwnedTransactionId,
    },
    Join {
        room_id: OwnedRoomId,
    },
    Leave {
        room_id: OwnedRoomId,
    },
    Invite {
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
    },
    Kick {
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        reason: Option<String>,
    },
    Ban {
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        reason: Option<String>,
    },
    DisplayName {
        name: String,
    },
    AvatarUrl {
        url: OwnedMxcUri,
    },
}

impl Op {
    /// The queue the request waits in: its room, or its user for profile changes.
    pub(crate) fn queue_key(&self, user_id: &OwnedUserId) -> String {
        match self {
            Op::Message { room_id, .. }
            | Op::State { room_id, .. }
            | Op::Redact { room_id, .. }
            | Op::Join { room_id }
            | Op::Leave { room_id }
            | Op::Invite { room_id, .. }
            | Op::Kick { room_id, .. }
            | Op::Ban { room_id, .. } => room_id.as_str().to_owned(),
            Op::DisplayName { .. } | Op::AvatarUrl { .. } => format!("user:{user_id}"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Message { .. } => "message",
            Op::State { .. } => "state",
            Op::Redact { .. } => "redaction",
            Op::Join { .. } => "join",
            Op::Leave { .. } => "leave",
            Op::Invite { .. } => "invite",
            Op::Kick { .. } => "kick",
            Op::Ban { .. } => "ban",
            Op::DisplayName { .. } => "display name",
            Op::AvatarUrl { .. } => "avatar",
        }
    }
}

/// A request in the outbox. Await it to learn the event id once the homeserver accepted the
/// request; drop it to fire and forget — it will be sent all the same.
#[must_use = "a Delivery does nothing until awaited; drop it explicitly to fire and forget"]
pub struct Delivery {
    seq: i64,
    rx: oneshot::Receiver<Result<Option<OwnedEventId>>>,
    /// Where another process may send the request: how its outcome reaches this one.
    remote: Option<Remote>,
}

impl Delivery {
    /// A delivery whose outcome is already known.
    pub(crate) fn ready(seq: i64, outcome: Result<Option<OwnedEventId>>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(outcome);
        Delivery {
            seq,
            rx,
            remote: None,
        }
    }

    /// The request's place in the outbox.
    pub fn seq(&self) -> i64 {
        self.seq
    }
}

impl IntoFuture for Delivery {
    type Output = Result<Option<OwnedEventId>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let stopped = |_| {
                Err(Error::Other(
                    "the outbox stopped before the request was sent".into(),
                ))
            };
            let Some(remote) = self.remote else {
                return self.rx.await.unwrap_or_else(stopped);
            };
            // Sent here, the outcome comes from this process's worker; sent by another
            // process, from its notice (`remote.rs`), through the same channel.
            tokio::select! {
                outcome = self.rx => outcome.unwrap_or_else(stopped),
                outcome = outcome_elsewhere(remote, self.seq) => outcome,
            }
        })
    }
}

/// Who awaits which outcome, and recent outcomes nobody awaited (yet).
#[derive(Default)]
pub(crate) struct Waiting {
    waiters: HashMap<i64, oneshot::Sender<Result<Option<OwnedEventId>>>>,
    orphans: HashMap<i64, std::result::Result<Option<OwnedEventId>, String>>,
    orphan_order: std::collections::VecDeque<i64>,
    /// Awaited requests, and their queues, whose rows name no waiter because this process's
    /// worker holds their queue and tells the outcome in memory: named when it lets the queue
    /// go ([`Lane::leaving`]).
    unnamed: HashMap<i64, String>,
}

type Waiters = Mutex<Waiting>;

/// Whether this process handles the events of a room (see [`Lane::handles`]).
pub(crate) type Handles = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The outbox lane: sends stored requests.
pub(crate) struct OutboxLane {
    core: Weak<Core>,
    scope: String,
    appservice_id: String,
    waiters: Arc<Waiters>,
    /// Whether this process holds a room's inbox lease: its outbox lease is then asked for.
    handles: Handles,
}

impl OutboxLane {
    pub(crate) fn new(core: Weak<Core>, appservice_id: &str, handles: Handles) -> Self {
        OutboxLane {
            core,
            scope: format!("out:{appservice_id}"),
            appservice_id: appservice_id.to_owned(),
            waiters: Arc::default(),
            handles,
        }
    }

    /// Registers interest in the outcome of `seq`, of `queue`; `named` when its outbox row
    /// names this process as its waiter already (see `remote.rs`).
    ///
    /// A row that does not is named when the delivery is awaited, one more statement, unless
    /// `held_here` says this process's worker holds the queue's lease: it sends the request
    /// and tells the outcome in memory, or names this process before it lets the queue go
    /// (`leaving`). Noted as unnamed before `held_here` is asked, and the worker's lease marked
    /// not held before it reads the notes, so that one of the two always names the row.
    pub(crate) fn delivery(
        &self,
        seq: i64,
        queue: &str,
        named: bool,
        held_here: impl FnOnce() -> bool,
    ) -> Delivery {
        let mut waiting = self.waiters.lock_unpoisoned();
        // The queue's worker may have sent it already, between the insert and this call.
        if let Some(outcome) = waiting.orphans.remove(&seq) {
            return Delivery::ready(seq, outcome.map_err(Error::Other));
        }
        let (tx, rx) = oneshot::channel();
        waiting.waiters.insert(seq, tx);
        let Some(core) = self.core.upgrade().filter(|core| core.mode.others_send()) else {
            return Delivery {
                seq,
                rx,
                remote: None,
            };
        };
        let mut register = None;
        if !named {
            waiting.unnamed.insert(seq, queue.to_owned());
            drop(waiting);
            if !held_here() {
                self.waiters.lock_unpoisoned().unnamed.remove(&seq);
                register = Some(core.owner.clone());
            }
        }
        let remote = Remote {
            store: core.store.clone(),
            register,
        };
        Delivery {
            seq,
            rx,
            remote: Some(remote),
        }
    }

    /// The outcomes this process's deliveries await.
    pub(crate) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Hands the outcome to whoever awaits it. With nobody waiting it is kept a while, for a
    /// caller that is just about to ask; a failure is also returned for the failure hook.
    fn resolve(&self, seq: i64, outcome: Result<Option<OwnedEventId>>) -> Option<Error> {
        let mut waiting = self.waiters.lock_unpoisoned();
        waiting.unnamed.remove(&seq);
        if let Some(tx) = waiting.waiters.remove(&seq) {
            let _ = tx.send(outcome);
            return None;
        }
        let (kept, failure) = match outcome {
            Ok(event_id) => (Ok(event_id), None),
            Err(e) => (Err(e.to_string()), Some(e)),
        };
        waiting.orphans.insert(seq, kept);
        waiting.orphan_order.push_back(seq);
        // Fire-and-forget sends are never asked about: keep only the recent ones.
        while waiting.orphan_order.len() > 4096 {
            if let Some(old) = waiting.orphan_order.pop_front() {
                waiting.orphans.remove(&old);
            }
        }
        failure
    }
}

/// Sends `op` from the task that awaits its outcome, retrying as the outbox would, when its
/// queue is idle. Returns `None` when the queue is busy, and the request must go through the
/// store to keep its place in line.
///
/// Where processes share the store, the queue must also be this process's: its outbox worker
/// holds the lease, idle ([`Lanes::hold`]). One attempt is made there; a failure worth
/// retrying goes through the outbox after all, after the wait it asked for, with the same
/// transaction id. This saves the row and its outcome, two of the store's commits.
///
/// This is safe without an outbox row because the caller is a handler: its inbox item stays
/// unfinished until the handler returns, so after a crash the item is handled again and the
/// request made again, with the same transaction id, which the homeserver deduplicates. A
/// handler that loses its room's lease is dropped, its send with it.
pub(crate) async fn send_now(
    core: &Core,
    outbox: &Arc<Lanes<OutboxLane>>,
    op: &Op,
    user_id: &OwnedUserId,
    device_id: Option<&OwnedDeviceId>,
) -> Option<Result<Option<OwnedEventId>>> {
    if !in_send_scope() {
        return None;
    }
    let queue = op.queue_key(user_id);
    if core.mode.leases() {
        let hold = outbox.hold(&queue)?;
        let outcome = execute(core, op, user_id, device_id).await;
        drop(hold);
        return match outcome {
            Ok(event_id) => Some(Ok(event_id)),
            Err(error) => match failed_attempt(core, op, &queue, error, 0) {
                // The wait asked for (`retry_after_ms`, or the back-off) is kept here, where
                // it holds nothing up but this handler, and the outbox sends it then.
                Ok(delay) => {
                    tokio::time::sleep(delay).await;
                    None
                }
                Err(error) => Some(Err(error)),
            },
        };
    }
    if !core.mode.hand_off() {
        return None;
    }
    let _claim = outbox.claim(&queue)?;
    let mut attempt = 0;
    Some(loop {
        match execute(core, op, user_id, device_id).await {
            Ok(event_id) => break Ok(event_id),
            Err(error) => match failed_attempt(core, op, &queue, error, attempt) {
                Ok(delay) => {
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => break Err(error),
            },
        }
    })
}

/// Counts and logs a failed attempt; gives the wait before the next one, or the error when
/// there is none.
fn failed_attempt(
    core: &Core,
    op: &Op,
    queue: &str,
    error: Error,
    attempt: u32,
) -> std::result::Result<Duration, Error> {
    if let Some(kind) = error.kind() {
        core.metrics.homeserver_error(kind.errcode().as_str());
    } else if let Error::Http(_) = &error {
        core.metrics.homeserver_error("connection");
    }
    match retry_policy(&error, attempt) {
        Retry::After(delay) => {
            tracing::warn!(
                what = op.name(), queue, %error, ?delay, attempt,
                "homeserver request failed; retrying"
            );
            Ok(delay)
        }
        Retry::GiveUp => {
            tracing::error!(what = op.name(), queue, %error, "homeserver refused a request for good");
            Err(error)
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq)]
pub(crate) enum Retry {
    After(Duration),
    GiveUp,
}

/// The retry policy. `attempt` counts from 0.
pub(crate) fn retry_policy(error: &Error, attempt: u32) -> Retry {
    if let Some(delay) = crate::client::retry_delay(error) {
        return Retry::After(delay);
    }
    match error {
        Error::Matrix(e) if e.status_code.is_server_error() => Retry::After(backoff(attempt)),
        Error::Matrix(_) => Retry::GiveUp,
        Error::Http(_) | Error::Store(_) | Error::Io(_) => Retry::After(backoff(attempt)),
        _ => Retry::GiveUp,
    }
}

/// Exponential back-off from 250 ms to 30 s, with jitter so that many queues retrying at once
/// do not knock on the homeserver in step.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(10)).min(30_000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

impl Lane for OutboxLane {
    type Item = OutboxItem;

    fn scope(&self) -> &str {
        &self.scope
    }

    async fn fetch(&self, queue: &str, after: i64, limit: i64) -> Result<Vec<OutboxItem>> {
        let Some(core) = self.core.upgrade() else {
            return Ok(Vec::new());
        };
        core.store
            .outbox_next(&self.appservice_id, queue, after, limit)
            .await
    }

    fn seq(item: &OutboxItem) -> i64 {
        item.seq
    }

    async fn pending_queues(&self, limit: i64) -> Result<Vec<String>> {
        let Some(core) = self.core.upgrade() else {
            return Ok(Vec::new());
        };
        core.store
            .outbox_pending_queues(&self.appservice_id, limit)
            .await
    }

    fn handles(&self, queue: &str) -> bool {
        (self.handles)(queue)
    }

    async fn leaving(&self, queue: &str) {
        let seqs: Vec<i64> = {
            let mut waiting = self.waiters.lock_unpoisoned();
            let mut seqs = Vec::new();
            waiting.unnamed.retain(|seq, of| {
                let here = of == queue;
                if here {
                    seqs.push(*seq);
                }
                !here
            });
            seqs
        };
        if seqs.is_empty() {
            return;
        }
        if let Some(core) = self.core.upgrade() {
            name_waiter(&core.store, &core.owner, &self.waiters, seqs).await;
        }
    }

    async fn finish(&self, _: Vec<i64>) {
        // Each request's outcome is recorded as it comes: there is no batch to close.
    }

    async fn process(&self, item: OutboxItem, _: u64) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let parsed = serde_json::from_str::<Op>(&item.op)
            .map_err(Error::from)
            .and_then(|op| Ok((op, OwnedUserId::try_from(item.user_id.as_str())?)));
        let (op, user_id) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::error!(seq = item.seq, %error, "dropping a damaged outbox row");
                let message = error.to_string();
                let _ = record_outcome(&core.store, &core.owner, item.seq, Err(&message)).await;
                return;
            }
        };
        let device_id = item.device_id.map(OwnedDeviceId::from);
        let mut attempt = item.attempts.max(0) as u32;
        loop {
            match execute(&core, &op, &user_id, device_id.as_ref()).await {
                Ok(event_id) => {
                    let id = event_id.as_ref().map(|e| e.as_str());
                    if let Err(error) =
                        record_outcome(&core.store, &core.owner, item.seq, Ok(id)).await
                    {
                        tracing::error!(seq = item.seq, %error, "sent, but could not record it");
                    }
                    self.resolve(item.seq, Ok(event_id));
                    return;
                }
                Err(error) => match failed_attempt(&core, &op, &item.queue_key, error, attempt) {
                    Ok(delay) => {
                        let _ = core.store.outbox_attempted(item.seq).await;
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    Err(error) => {
                        let message = error.to_string();
                        let _ =
                            record_outcome(&core.store, &core.owner, item.seq, Err(&message)).await;
                        if let Some(error) = self.resolve(item.seq, Err(error))
                            && let Some(hook) = &core.on_send_failure
                        {
                            hook(SendFailure {
                                user_id: item.user_id.clone(),
                                queue: item.queue_key.clone(),
                                what: op.name(),
                                error,
                            });
                        }
                        return;
                    }
                },
            }
        }
    }
}

tokio::task_local! {
    /// The inbox item being handled, so that what its handlers send gets transaction ids that
    /// are the same when the item is handled again after a crash — and the homeserver drops the
    /// repeats.
    static SEND_SCOPE: SendScope;
}

pub(crate) struct SendScope {
    key: Arc<str>,
    counter: std::sync::atomic::AtomicU32,
}

/// Runs `fut` with sends keyed by `key`.
pub(crate) async fn with_send_scope<F: Future>(key: Arc<str>, fut: F) -> F::Output {
    SEND_SCOPE
        .scope(
            SendScope {
                key,
                counter: Default::default(),
            },
            fut,
        )
        .await
}

/// Whether the caller is handling an inbox item.
fn in_send_scope() -> bool {
    SEND_SCOPE.try_with(|_| ()).is_ok()
}

/// The transaction id for the next send: derived from the inbox item being handled, or random
/// outside a handler.
pub(crate) fn next_txn_id() -> OwnedTransactionId {
    const PREFIX: &str = "trestle.";
    SEND_SCOPE
        .try_with(|scope| {
            let n = scope
                .counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Written out rather than `format!`ed: once per send.
            let mut id = String::with_capacity(PREFIX.len() + scope.key.len() + 11);
            id.push_str(PREFIX);
            id.push_str(&scope.key);
            // Writing to a String cannot fail.
            let _ = write!(id, ".{n}");
            OwnedTransactionId::from(id)
        })
        .unwrap_or_else(|_| TransactionId::new())
}

#[cfg(test)]
mod tests;
