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
use crate::{Result, transaction::TransactionBody};
pub(crate) use admission::Admission;
pub use failure::{SendFailure, SendFailureHook};
use inbox::InboxLane;
use lanes::Lanes;
pub use outbox::Delivery;
use outbox::OutboxLane;
pub(crate) use outbox::{Op, next_txn_id, with_send_scope};
pub(crate) use receive::Source;
pub(crate) use users::Users;
pub(crate) use writeback::WriteBack;

/// The core and the lanes of the inbox and the outbox.
pub(crate) struct Queues {
    pub(crate) core: Arc<Core>,
    inbox: Arc<Lanes<InboxLane>>,
    outbox: Arc<Lanes<OutboxLane>>,
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
        let weak = Arc::downgrade(&core);
        let inbox = Lanes::new(
            InboxLane::new(weak.clone(), &id),
            store.clone(),
            mode,
            max,
            32,
        );
        let outbox = Lanes::new(OutboxLane::new(weak, &id), store, mode, max, 32);
        Queues {
            core,
            inbox,
            outbox,
        }
    }

    /// Starts the background tasks: scans of the store for work nobody announced (left by a
    /// crash, or by another process on PostgreSQL), the write-behind, the journal's commits,
    /// pruning. They end when the core is dropped (the scans keep only the lanes).
    pub(crate) fn start(&self) {
        let mode = self.core.mode;
        self.inbox.scan_forever(mode.scan_interval());
        self.outbox.scan_forever(mode.scan_interval());
        tokio::spawn(WriteBack::flush_forever(Arc::downgrade(
            &self.core.writeback,
        )));
        let weak = Arc::downgrade(&self.core);
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
        let queue = op.queue_key(user_id);
        let json = serde_json::to_string(&op)?;
        let seq = self
            .core
            .store
            .outbox_push(
                &self.core.appservice_id,
                &queue,
                user_id.as_str(),
                device_id.map(|d| d.as_str()),
                &json,
            )
            .await?;
        let delivery = self.outbox.lane().delivery(seq);
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
            None => self.push(user_id, device_id, op).await?.await,
        }
    }

    /// Work in memory: queues with a worker, writes waiting, journal records not committed.
    pub(crate) fn busy(&self) -> usize {
        self.inbox.busy()
            + self.outbox.busy()
            + self.core.writeback.len()
            + self.core.store.journal_backlog()
    }

    /// Waits until a worker stops, or `timeout`.
    pub(crate) async fn changed(&self, timeout: Duration) {
        tokio::select! {
            _ = self.inbox.changed(timeout) => {}
            _ = self.outbox.changed(timeout) => {}
        }
    }
}
