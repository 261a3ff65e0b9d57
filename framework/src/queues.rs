//! The queues: everything between a transaction the homeserver sent and the requests the
//! appservice sends back, durable in the store.
//!
//! One event passes each module once, top to bottom:
//!
//! - `receive.rs` stores a received transaction (through the journal on a SQLite file) and hands
//!   its committed items to the inbox lanes;
//! - `lanes.rs` runs one worker per busy room, fed in memory or from the store;
//! - `inbox.rs` gives each item to the appservice's handlers (through [`Upstream`], the only way
//!   up), then marks it done: where an item is marked done is `InboxLane::finish`;
//! - `outbox.rs` sends what the handlers asked for, directly or through the store, in order per
//!   room (`outbox/execute.rs` makes each request);
//! - `writeback.rs` writes the marks and records that may lag, in batches.
//!
//! They share one [`Core`] (`core.rs`): the store and its [`Mode`](crate::store::Mode), the
//! client, our users (`users.rs`), the metrics, the write-behind. Nothing here imports the
//! appservice, the router or the intents; they import this.
//!
//! Layers (each imports only those below it): `lanes`, `writeback`, `failure`, `admission` → `users` →
//! `core` → `inbox`, `outbox` → `receive` → this file.

mod admission;
mod core;
mod failure;
mod inbox;
mod lanes;
mod outbox;
mod receive;
mod users;
mod writeback;

use std::{sync::Arc, time::Duration};

use ruma::{OwnedDeviceId, OwnedEventId, OwnedUserId};

pub use self::core::DEFAULT_MAX_IN_FLIGHT;
pub(crate) use self::core::{Core, Options, Sealed, Upstream};
use crate::{Result, sync::MutexExt, transaction::TransactionBody};
pub(crate) use admission::Admission;
pub use failure::{SendFailure, SendFailureHook};
use inbox::InboxLane;
use lanes::Lanes;
pub(crate) use lanes::lease_freed;
pub use outbox::Delivery;
use outbox::OutboxLane;
pub(crate) use outbox::{Op, next_txn_id, with_send_scope};
pub(crate) use receive::Source;
pub(crate) use users::Users;
pub(crate) use writeback::WriteBack;

/// Says, every renewal interval, that this process is alive and what it holds: for
/// `trestle status` (the `processes` table) and `/metrics`. Ends when the core is dropped.
async fn heartbeat_forever(core: std::sync::Weak<Core>) {
    let started_at = crate::store::now_ms();
    loop {
        let Some(core) = core.upgrade() else { return };
        let (store, owner) = (&core.store, &core.owner);
        let role = core.options.role.to_string();
        if let Err(error) = store
            .heartbeat(
                &core.appservice_id,
                owner,
                &role,
                started_at,
                core.options.encryption,
            )
            .await
        {
            tracing::warn!(%error, "could not record this process's heartbeat");
        }
        match store.leases_held(owner).await {
            Ok(held) => core
                .metrics
                .leases(u64::try_from(held).unwrap_or(0), store.takeovers()),
            Err(error) => tracing::warn!(%error, "could not count this process's leases"),
        }
        let every = store.lease_times().renew_every();
        drop(core);
        tokio::time::sleep(every).await;
    }
}

/// The core and the lanes of the inbox and the outbox.
pub(crate) struct Queues {
    pub(crate) core: Arc<Core>,
    inbox: Arc<Lanes<InboxLane>>,
    outbox: Arc<Lanes<OutboxLane>>,
    /// Where processes share the store, the task that says this one is alive.
    heartbeat: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("appservice", &self.core.appservice_id)
            .finish_non_exhaustive()
    }
}

impl Queues {
    /// The lanes of the inbox and the outbox around `core`.
    pub(crate) fn new(core: Core) -> Self {
        let core = Arc::new(core);
        let id = core.appservice_id.clone();
        let (store, mode, max) = (core.store.clone(), core.mode, core.options.max_rooms);
        let owner = core.owner.clone();
        let weak = Arc::downgrade(&core);
        let inbox = Lanes::new(
            InboxLane::new(weak.clone(), &id),
            store.clone(),
            mode,
            owner.clone(),
            max,
            32,
        );
        // A room's requests are sent where its events are handled: the outbox asks for a room
        // whose inbox lease this process holds (`lanes/shared.rs`).
        let rooms = Arc::downgrade(&inbox);
        let handles =
            Box::new(move |queue: &str| rooms.upgrade().is_some_and(|inbox| inbox.holds(queue)));
        let outbox = Lanes::new(
            OutboxLane::new(weak, &id, handles),
            store,
            mode,
            owner,
            max,
            32,
        );
        Queues {
            core,
            inbox,
            outbox,
            heartbeat: std::sync::Mutex::default(),
        }
    }

    /// Starts the background tasks: scans of the store for work nobody announced (left by a
    /// crash, or by another process on PostgreSQL), the write-behind, the journal's commits,
    /// pruning. They end when the core is dropped (the scans keep only the lanes).
    pub(crate) fn start(&self) {
        let mode = self.core.mode;
        // A process that takes no transactions runs no handlers: the inbox is the others'.
        if self.core.options.role.handles_events() {
            self.inbox.scan_forever(mode.scan_interval());
        }
        self.outbox.scan_forever(mode.scan_interval());
        tokio::spawn(WriteBack::flush_forever(Arc::downgrade(
            &self.core.writeback,
        )));
        let weak = Arc::downgrade(&self.core);
        if mode.leases() {
            let task = tokio::spawn(heartbeat_forever(weak.clone()));
            *self.heartbeat.lock_unpoisoned() = Some(task);
        }
        if let Some(mut notices) = self.core.store.notices() {
            let weak = weak.clone();
            let outbox = Arc::downgrade(&self.outbox);
            tokio::spawn(async move {
                loop {
                    let notice = match notices.recv().await {
                        Ok(notice) => notice,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            crate::store::Notice::Missed
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let Some(core) = weak.upgrade() else { return };
                    if let Some(outbox) = outbox.upgrade() {
                        let waiters = outbox.lane().waiters();
                        outbox::wake_waiter(&core.store, &core.owner, waiters, &notice);
                    }
                    core.users.forget(&notice).await;
                }
            });
        }
        if mode.journaled() {
            tokio::spawn(receive::commit_forever(weak.clone(), self.inbox.clone()));
        }
        tokio::spawn(async move {
            loop {
                let Some(core) = weak.upgrade() else { return };
                let (items, txn_ids) = (core.options.keep_items, core.options.keep_txn_ids);
                match core.store.prune(items, txn_ids).await {
                    Ok(0) => {}
                    Ok(rows) => tracing::debug!(rows, "pruned the store"),
                    Err(error) => tracing::warn!(%error, "could not prune the store"),
                }
                drop(core);
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        });
    }

    /// Stores a transaction and has its items handled (see `receive.rs`).
    pub(crate) async fn receive(
        &self,
        txn_id: &str,
        body: TransactionBody,
        wait_for_commit: bool,
        source: Source,
    ) -> Result<bool> {
        receive::receive(
            &self.core,
            &self.inbox,
            txn_id,
            body,
            wait_for_commit,
            source,
        )
        .await
    }

    /// Stores `op` in the outbox and has it sent by its queue's worker.
    pub(crate) async fn push(
        &self,
        user_id: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        op: Op,
    ) -> Result<Delivery> {
        self.push_awaited(user_id, device_id, op, false).await
    }

    /// [`Queues::push`], for a caller that says whether it awaits the outcome: where
    /// processes share the store, the row then names this process, and another that sends it
    /// tells this one the outcome (`outbox/remote.rs`). A delivery not said to be awaited here
    /// names this process when it is awaited.
    async fn push_awaited(
        &self,
        user_id: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        op: Op,
        awaited: bool,
    ) -> Result<Delivery> {
        let queue = op.queue_key(user_id);
        let json = serde_json::to_string(&op)?;
        let named = awaited && self.core.mode.others_send();
        let seq = self
            .core
            .store
            .outbox_push(
                &self.core.appservice_id,
                &queue,
                user_id.as_str(),
                device_id.map(|d| d.as_str()),
                &json,
                named.then_some(self.core.owner.as_str()),
            )
            .await?;
        let held_here = || self.outbox.holds(&queue);
        let delivery = self.outbox.lane().delivery(seq, &queue, named, held_here);
        self.outbox.offer(&queue);
        Ok(delivery)
    }

    /// Sends `op` and waits for the outcome: at once when its queue is idle and a handler's
    /// inbox item covers it (see `outbox::send_now`), else through the outbox.
    pub(crate) async fn run(
        &self,
        user_id: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        op: Op,
    ) -> Result<Option<OwnedEventId>> {
        match outbox::send_now(&self.core, &self.outbox, &op, user_id, device_id).await {
            Some(outcome) => outcome,
            None => self.push_awaited(user_id, device_id, op, true).await?.await,
        }
    }

    /// Work in memory: queues with a worker, writes waiting, journal records not committed.
    pub(crate) fn busy(&self) -> usize {
        self.inbox.busy()
            + self.outbox.busy()
            + self.core.writeback.len()
            + self.core.store.journal_backlog()
    }

    /// Hands the rooms' queues to the other processes sharing the store, as this one stops
    /// (see `Lanes::hand_over`): the inbox first, so that what the handlers in hand send is
    /// still sent from here, then the outbox; then every lease this instance still holds is
    /// given back. Returns `false`, doing nothing, where the store is this process's alone.
    pub(crate) async fn hand_over(&self) -> bool {
        if !self.core.mode.leases() {
            return false;
        }
        // The items in hand get their grace, and their marks and releases a little more.
        let wait = Duration::from_secs(10);
        self.inbox.hand_over();
        if !self.inbox.wait_idle(wait).await {
            tracing::warn!(appservice = %self.core.appservice_id, "rooms' handlers did not stop in time");
        }
        self.outbox.hand_over();
        if !self.outbox.wait_idle(wait).await {
            tracing::warn!(appservice = %self.core.appservice_id, "rooms' sends did not stop in time");
        }
        let started = tokio::time::Instant::now();
        while self.core.writeback.len() > 0 && started.elapsed() < wait {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let core = &self.core;
        if let Some(heartbeat) = self.heartbeat.lock_unpoisoned().take() {
            heartbeat.abort();
        }
        if let Err(error) = core.store.release_all(&core.owner).await {
            tracing::warn!(%error, "could not give back the leases left; others take them when they run out");
        }
        if let Err(error) = core
            .store
            .forget_process(&core.appservice_id, &core.owner)
            .await
        {
            tracing::warn!(%error, "could not remove this process from the store's list");
        }
        true
    }

    /// Waits until a worker stops, or `timeout`.
    pub(crate) async fn changed(&self, timeout: Duration) {
        tokio::select! {
            _ = self.inbox.changed(timeout) => {}
            _ = self.outbox.changed(timeout) => {}
        }
    }
}
