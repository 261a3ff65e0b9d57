//! Lanes: one worker per busy queue, reading its work from the store.
//!
//! The inbox and the outbox both keep work in the database in order per queue (a room), and
//! both need the same machinery: at most one worker per queue so order holds, workers for
//! different queues in parallel, no worker for an idle queue, and nothing held in memory but
//! a small batch per worker — so a flood grows the database, not the process.
//!
//! A worker stops when its queue is empty. New work is announced with [`Lanes::offer`]; a
//! `dirty` flag closes the race between a worker seeing an empty queue and new work being
//! committed just after. A periodic scan of the store picks up what nobody announced: work
//! left by a crash, work over the worker limit, and (on PostgreSQL) queues another process let
//! go of.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{Result, Store};

/// How long a queue lease lasts without renewal (PostgreSQL only).
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Where a lane's work comes from and how one item is done.
pub(crate) trait Lane: Send + Sync + 'static {
    /// One unit of work.
    type Item: Send + 'static;

    /// Names the lease scope, so inbox and outbox leases of a room differ.
    fn scope(&self) -> &str;
    /// Pending items of `queue` after `after`, in order.
    fn fetch(
        &self,
        queue: &str,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self::Item>>> + Send;
    /// The item's sequence number.
    fn seq(item: &Self::Item) -> i64;
    /// Does the item and records that it is done. Never fails: failures are the lane's to log.
    fn process(&self, item: Self::Item) -> impl Future<Output = ()> + Send;
    /// Records that the items `seqs` (a batch, in order) were processed: one write for the
    /// batch instead of one per item.
    fn finish(&self, seqs: Vec<i64>) -> impl Future<Output = ()> + Send;
    /// Queues with pending items, oldest first.
    fn pending_queues(&self, limit: i64) -> impl Future<Output = Result<Vec<String>>> + Send;
}

pub(crate) struct Lanes<L: Lane> {
    lane: L,
    store: Store,
    owner: String,
    max_workers: usize,
    batch: i64,
    /// Queues with a worker, and whether work arrived since the worker last looked.
    active: Mutex<HashMap<String, bool>>,
    /// Set when work was turned away at the worker limit: the next worker to stop rescans.
    overflow: std::sync::atomic::AtomicBool,
    rescan: Notify,
    changed: Notify,
}

impl<L: Lane> Lanes<L> {
    pub(crate) fn new(lane: L, store: Store, max_workers: usize, batch: i64) -> Arc<Self> {
        Arc::new(Lanes {
            lane,
            store,
            owner: format!("{:016x}", rand::random::<u64>()),
            max_workers,
            batch,
            active: Mutex::new(HashMap::new()),
            overflow: std::sync::atomic::AtomicBool::new(false),
            rescan: Notify::new(),
            changed: Notify::new(),
        })
    }

    pub(crate) fn lane(&self) -> &L {
        &self.lane
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says that `queue` has new work (already committed to the store).
    pub(crate) fn offer(self: &Arc<Self>, queue: &str) {
        let mut active = self.active();
        if let Some(dirty) = active.get_mut(queue) {
            *dirty = true;
            return;
        }
        if active.len() >= self.max_workers {
            // The scan that follows a worker's exit will come back for it.
            self.overflow
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        active.insert(queue.to_owned(), false);
        drop(active);
        let this = self.clone();
        let queue = queue.to_owned();
        tokio::spawn(async move { this.work(queue).await });
    }

    /// Number of queues with a worker.
    pub(crate) fn busy(&self) -> usize {
        self.active().len()
    }

    /// Waits until something changes (a worker stops), or `timeout`.
    pub(crate) async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    async fn work(self: Arc<Self>, queue: String) {
        let scope = self.lane.scope().to_owned();
        match self
            .store
            .lease(&scope, &queue, &self.owner, LEASE_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Another process works this queue; the periodic scan will look again.
                self.stop_worker(&queue);
                return;
            }
            Err(error) => {
                tracing::error!(%error, queue, "could not take the queue's lease");
                self.stop_worker(&queue);
                return;
            }
        }
        let mut leased_at = Instant::now();
        let mut after = 0;
        loop {
            if let Some(dirty) = self.active().get_mut(&queue) {
                *dirty = false;
            }
            let batch = match self.lane.fetch(&queue, after, self.batch).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, queue, "could not read the queue; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                let more_came = {
                    let mut active = self.active();
                    let dirty = active.get(&queue).copied().unwrap_or(false);
                    if !dirty {
                        active.remove(&queue);
                    }
                    dirty
                };
                if more_came {
                    continue;
                }
                if let Err(error) = self.store.release(&scope, &queue, &self.owner).await {
                    tracing::warn!(%error, queue, "could not release the queue's lease");
                }
                if self
                    .overflow
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    self.rescan.notify_one();
                }
                self.changed.notify_waiters();
                return;
            }
            let mut processed = Vec::with_capacity(batch.len());
            for item in batch {
                if leased_at.elapsed() > LEASE_TTL / 3 {
                    if let Ok(true) = self
                        .store
                        .lease(&scope, &queue, &self.owner, LEASE_TTL)
                        .await
                    {
                        leased_at = Instant::now();
                    } else {
                        tracing::warn!(
                            queue,
                            "lost the queue's lease; leaving it to its new owner"
                        );
                        self.lane.finish(processed).await;
                        self.stop_worker(&queue);
                        return;
                    }
                }
                after = L::seq(&item);
                self.lane.process(item).await;
                processed.push(after);
            }
            self.lane.finish(processed).await;
        }
    }

    fn stop_worker(&self, queue: &str) {
        self.active().remove(queue);
        self.changed.notify_waiters();
    }

    /// Starts workers for every queue with pending work, now and then every `interval` and
    /// whenever a worker stops, until the returned task is aborted.
    pub(crate) fn scan_forever(
        self: &Arc<Self>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let room = this.max_workers.saturating_sub(this.busy());
                if room > 0 {
                    match this.lane.pending_queues(this.max_workers as i64).await {
                        Ok(queues) => {
                            for queue in queues {
                                this.offer(&queue);
                            }
                        }
                        Err(error) => tracing::error!(%error, "could not scan for pending work"),
                    }
                }
                let _ = tokio::time::timeout(interval, this.rescan.notified()).await;
            }
        })
    }
}
