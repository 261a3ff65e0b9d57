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
//!
//! Where processes share the store (`lanes/shared.rs`), a room stays with the process that
//! holds its lease while it has work: an idle worker keeps its lease a moment for the next
//! item, a process that stores work for a room another holds tells that holder which queue to
//! read again (`Notice::Pending`) instead of waiting for the room, and a lease given back by
//! an idle worker is not announced (which had every other process rescan every queue and take
//! the rooms it found pending from the processes working them). A room's outbox follows its
//! inbox: the process that handles a room's events and stores a send for it while another
//! holds the room's outbox asks for it, and the holder gives it over after the item in hand.

use crate::sync::MutexExt;
use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{Result, Store, store::Mode};

mod claim;
mod offered;
mod shared;

use offered::{Offered, working};
pub(crate) use shared::lease_freed;
use shared::{Wake, next_wake, remember};

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
    /// `take` names the worker's take of the queue's lease ([`Lanes::took`]).
    fn process(&self, item: Self::Item, take: u64) -> impl Future<Output = ()> + Send;
    /// Records that the items `seqs` (a batch, in order) were processed: one write for the
    /// batch instead of one per item.
    fn finish(&self, seqs: Vec<i64>) -> impl Future<Output = ()> + Send;
    /// Queues with pending items, oldest first.
    fn pending_queues(&self, limit: i64) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// `items` offered here (and counted as this process's work) went to the process that
    /// holds their queue: they will not be processed here.
    fn let_go(&self, items: usize) {
        let _ = items;
    }
    /// Whether this process handles the events of `queue`'s room (holds its inbox lease),
    /// where processes share the store: another process holding this lane's lease of the
    /// queue is then asked to give it over (`Notice::Wanted`), not only told of work, so that
    /// a room's requests are sent where its events are handled (see `lanes/shared.rs`).
    fn handles(&self, queue: &str) -> bool {
        let _ = queue;
        false
    }
    /// The worker of `queue` is about to give its lease back, or lost it: what this process
    /// was to learn in memory of the queue's items now comes from the next holder.
    fn leaving(&self, queue: &str) -> impl Future<Output = ()> + Send {
        let _ = queue;
        std::future::ready(())
    }
}

pub(crate) struct Lanes<L: Lane> {
    lane: L,
    store: Store,
    mode: Mode,
    owner: String,
    max_workers: usize,
    batch: i64,
    /// Queues with a worker (or a claim), and what was offered since the worker last looked.
    active: Mutex<HashMap<String, Offered<L::Item>>>,
    /// Whether items handed over in memory can be trusted to be all a queue's new work. Not
    /// until the first scan has offered what an earlier run left in the store, and never
    /// where other processes share the store.
    handoff: AtomicBool,
    /// Set when work was turned away at the worker limit: the next worker to stop rescans.
    overflow: AtomicBool,
    rescan: Notify,
    changed: Notify,
    /// Set when this process hands its queues to the others sharing the store
    /// ([`Lanes::hand_over`]): no new worker starts, and each stops after the item in hand.
    handing_over: tokio::sync::watch::Sender<bool>,
    /// Queues whose lease another process held when a worker here last asked, and when: new
    /// work for them is announced to that holder at once, without asking again for a while
    /// ([`Lanes::remembered`]).
    elsewhere: Mutex<HashMap<String, Instant>>,
    /// Queues whose lease a worker here gave back, idle, and when: a notice of work for one
    /// of them (`Notice::Pending`) was meant for this process if it came within
    /// [`Lanes::remembered`]; others, for queues this process neither works nor gave back
    /// lately, are some other process's.
    released: Mutex<HashMap<String, Instant>>,
    /// Queues whose holders are to be told of work stored here, gathered for one notice;
    /// `true` for those asked to give the queue over ([`Lane::handles`]).
    to_tell: Mutex<Vec<(String, bool)>>,
    /// Queues this process asked another to give over, and when: the holder's word that it
    /// did (`Notice::Yielded`) has a worker here take them.
    asked: Mutex<HashMap<String, Instant>>,
    /// Takes of a queue's lease so far, where processes share the store ([`Lanes::took`]).
    takes: AtomicU64,
}

/// Items held in memory per queue before the worker reads the store instead: a flood grows
/// the database, not the process.
const MAX_HANDED: usize = 256;

/// Where a worker's next batch comes from.
enum Source<T> {
    Store,
    Memory(Vec<T>),
    Done,
}

impl<L: Lane> Lanes<L> {
    pub(crate) fn new(
        lane: L,
        store: Store,
        mode: Mode,
        owner: String,
        max_workers: usize,
        batch: i64,
    ) -> Arc<Self> {
        Arc::new(Lanes {
            lane,
            store,
            mode,
            owner,
            max_workers,
            batch,
            active: Mutex::new(HashMap::new()),
            handoff: AtomicBool::new(false),
            overflow: AtomicBool::new(false),
            rescan: Notify::new(),
            changed: Notify::new(),
            handing_over: tokio::sync::watch::Sender::new(false),
            elsewhere: Mutex::new(HashMap::new()),
            released: Mutex::new(HashMap::new()),
            to_tell: Mutex::default(),
            asked: Mutex::default(),
            takes: AtomicU64::new(0),
        })
    }

    pub(crate) fn lane(&self) -> &L {
        &self.lane
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Offered<L::Item>>> {
        self.active.lock_unpoisoned()
    }

    /// Says that `queue` has new work (already committed to the store). Returns `false` when
    /// it was turned away at the worker limit, for a later scan to find.
    pub(crate) fn offer(self: &Arc<Self>, queue: &str) -> bool {
        self.offer_inner(queue, None, true)
    }

    /// Says that `queue` may have work this process did not store: a scan found it pending,
    /// or its holder was told to look (`Notice::Pending`). Not announced to others again.
    fn found(self: &Arc<Self>, queue: &str) -> bool {
        self.offer_inner(queue, None, false)
    }

    /// Says that `queue` has new work, committed to the store and handed over here in order,
    /// so that its worker need not read it back. Callers hand over a queue's items in the
    /// order they were committed.
    pub(crate) fn offer_items(self: &Arc<Self>, queue: &str, items: Vec<L::Item>) {
        self.offer_inner(queue, Some(items), true);
    }

    fn offer_inner(
        self: &Arc<Self>,
        queue: &str,
        items: Option<Vec<L::Item>>,
        announce: bool,
    ) -> bool {
        if self.is_handing_over() {
            // It is in the store, where the process that takes the queue over finds it.
            return false;
        }
        let trusted = self.handoff.load(Ordering::SeqCst);
        let count = items.as_ref().map_or(0, Vec::len);
        let mut active = self.active();
        if let Some(offered) = active.get_mut(queue) {
            offered.announce |= announce;
            offered.admitted += count;
            if let Some(wake) = offered.lingering.take() {
                wake.notify_one();
            }
            match items {
                Some(items)
                    if trusted
                        && !offered.in_store
                        && offered.items.len() + items.len() <= MAX_HANDED =>
                {
                    offered.items.extend(items)
                }
                _ => {
                    offered.in_store = true;
                    offered.items.clear();
                }
            }
            return true;
        }
        if announce && self.mode.leases() && self.held_elsewhere(queue) {
            drop(active);
            self.lane.let_go(count);
            self.tell(queue);
            return true;
        }
        if working(&active) >= self.max_workers {
            // The scan that follows a worker's exit will come back for it. Until it has, this
            // queue's work is in the store only, and handing over more would jump the line.
            self.handoff.store(false, Ordering::SeqCst);
            self.overflow.store(true, Ordering::SeqCst);
            return false;
        }
        let offered = match items {
            Some(items) if trusted && items.len() <= MAX_HANDED => Offered {
                items,
                announce,
                admitted: count,
                ..Offered::nothing()
            },
            _ => Offered {
                in_store: true,
                announce,
                admitted: count,
                ..Offered::nothing()
            },
        };
        active.insert(queue.to_owned(), offered);
        drop(active);
        self.spawn_worker(queue.to_owned());
        true
    }

    fn spawn_worker(self: &Arc<Self>, queue: String) {
        let this = self.clone();
        tokio::spawn(async move { this.work(queue).await });
    }

    /// Whether a worker here holds `queue`'s lease (where processes share the store).
    pub(crate) fn holds(&self, queue: &str) -> bool {
        self.active().get(queue).is_some_and(|o| o.held)
    }

    /// Waits until no queue has a worker, or `timeout`; whether none has.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.busy() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.changed(Duration::from_millis(50)).await;
        }
        true
    }

    /// Number of queues with a worker at work (not one that lingers, idle).
    pub(crate) fn busy(&self) -> usize {
        working(&self.active())
    }

    /// Waits until something changes (a worker stops), or `timeout`.
    pub(crate) async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// Takes what the worker of `queue` does next; on `Done` the worker is gone.
    fn next_source(&self, queue: &str, after: i64) -> Source<L::Item> {
        let mut active = self.active();
        let Some(offered) = active.get_mut(queue) else {
            return Source::Done;
        };
        if offered.in_store {
            offered.in_store = false;
            // Anything handed over meanwhile is in the store too, and read from there.
            offered.items.clear();
            return Source::Store;
        }
        if offered.items.is_empty() {
            // The entry stays until the lease is given back (see `work`).
            return Source::Done;
        }
        let mut items = std::mem::take(&mut offered.items);
        // A read of the store may already have brought some of them.
        items.retain(|item| L::seq(item) > after);
        Source::Memory(items)
    }

    /// Ends a worker that stops before its queue is empty: its marks written, its lease given
    /// back for another process to take.
    async fn leave(&self, scope: &str, queue: &str, processed: Vec<i64>) {
        self.lane.finish(processed).await;
        self.letting_go(queue).await;
        if let Err(error) = self.store.release(scope, queue, &self.owner).await {
            tracing::warn!(%error, queue, "could not release the queue's lease");
        }
        self.stop_worker(queue);
    }

    async fn work(self: Arc<Self>, queue: String) {
        let scope = self.lane.scope().to_owned();
        let ttl = self.store.lease_ttl();
        let mut take = match self.store.lease(&scope, &queue, &self.owner, ttl).await {
            Ok(true) => self.took(&queue),
            Ok(false) => {
                // Another process works this queue: it is told of work stored here.
                self.give_up(&queue).await;
                return;
            }
            Err(error) => {
                tracing::error!(%error, queue, "could not take the queue's lease");
                self.stop_worker(&queue);
                return;
            }
        };
        let mut leased_at = Instant::now();
        let mut after = 0;
        loop {
            if self.is_wanted(&queue) {
                self.give_over(&scope, &queue, Vec::new()).await;
                return;
            }
            let (batch, full) = match self.next_source(&queue, after) {
                Source::Done => {
                    if self.mode.leases() && self.linger(&queue, leased_at).await {
                        // Read from the queue's start, as a worker newly started would: what
                        // another process committed meanwhile may be numbered before what
                        // this one already did (sequence numbers are taken before commit).
                        // Everything done here is marked done by now.
                        after = 0;
                        continue;
                    }
                    // The lease goes first, while this worker still holds the queue's entry:
                    // a worker started for new work in between would find the lease its own
                    // (same process) and then lose it to this release, leaving another
                    // process free to work the same items. Announced only in a handover,
                    // where the others are to take what is left at once.
                    self.letting_go(&queue).await;
                    let released = if self.is_handing_over() {
                        self.store.release(&scope, &queue, &self.owner).await
                    } else {
                        if self.mode.leases() {
                            remember(&self.released, &queue, self.remembered());
                        }
                        self.store.release_idle(&scope, &queue, &self.owner).await
                    };
                    if let Err(error) = released {
                        tracing::warn!(%error, queue, "could not release the queue's lease");
                    }
                    if self.stop_if_idle(&queue) {
                        self.stopped();
                        return;
                    }
                    // Work came meanwhile: take the lease again, or leave it to its new owner.
                    if !matches!(
                        self.store.lease(&scope, &queue, &self.owner, ttl).await,
                        Ok(true)
                    ) {
                        self.give_up(&queue).await;
                        return;
                    }
                    take = self.took(&queue);
                    leased_at = Instant::now();
                    continue;
                }
                Source::Memory(items) => (items, false),
                Source::Store => match self.lane.fetch(&queue, after, self.batch).await {
                    Ok(batch) => {
                        let full = batch.len() as i64 >= self.batch;
                        (batch, full)
                    }
                    Err(error) => {
                        tracing::error!(%error, queue, "could not read the queue; retrying");
                        self.mark_in_store(&queue);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let mut processed = Vec::with_capacity(batch.len());
            for item in batch {
                if self.is_handing_over() {
                    self.leave(&scope, &queue, processed).await;
                    return;
                }
                if self.is_wanted(&queue) {
                    self.give_over(&scope, &queue, processed).await;
                    return;
                }
                if leased_at.elapsed() > self.store.lease_times().renew_every() {
                    if let Ok(true) = self.store.lease(&scope, &queue, &self.owner, ttl).await {
                        leased_at = Instant::now();
                    } else {
                        tracing::warn!(
                            queue,
                            "lost the queue's lease; leaving it to its new owner"
                        );
                        self.lost(&queue, processed).await;
                        return;
                    }
                }
                after = after.max(L::seq(&item));
                // Boxed: a handler's future is kilobytes, and would otherwise make every
                // worker's future as big, copied whole each time a worker is spawned.
                let work = Box::pin(self.lane.process(item, take));
                if !self.mode.leases() {
                    work.await;
                } else {
                    // A process handing its queues over lets the item in hand finish, for a
                    // while; dropped after that, it is the next owner's to do again.
                    let work = async {
                        tokio::select! {
                            biased;
                            () = work => true,
                            () = self.abandoned() => false,
                        }
                    };
                    match self
                        .store
                        .keep_lease_while(&scope, &queue, &self.owner, &mut leased_at, work)
                        .await
                    {
                        Some(true) => {}
                        Some(false) => {
                            tracing::warn!(
                                queue,
                                "stopping: dropped an unfinished item for the process that takes the queue over"
                            );
                            self.leave(&scope, &queue, processed).await;
                            return;
                        }
                        None => {
                            tracing::warn!(
                                queue,
                                "lost the queue's lease during a handler; its work was dropped for the new owner"
                            );
                            self.lost(&queue, processed).await;
                            return;
                        }
                    }
                }
                processed.push(after);
            }
            self.lane.finish(processed).await;
            // A batch short of the limit held everything committed before it was read: what
            // came since was offered, and `next_source` sees it. A full one may have left more.
            if full {
                self.mark_in_store(&queue);
            }
        }
    }

    fn mark_in_store(&self, queue: &str) {
        if let Some(offered) = self.active().get_mut(queue) {
            offered.in_store = true;
        }
    }

    /// Removes the queue's entry unless work was offered since the worker last looked.
    fn stop_if_idle(&self, queue: &str) -> bool {
        let mut active = self.active();
        let idle = !active.get(queue).is_some_and(|o| o.anything());
        if idle {
            active.remove(queue);
        }
        idle
    }

    /// What a worker does on its way out, its lease given back: rescan if work was turned away
    /// meanwhile.
    fn stopped(&self) {
        if self.overflow.swap(false, Ordering::SeqCst) {
            self.rescan.notify_one();
        }
        self.changed.notify_waiters();
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
        let mut notices = if self.mode.leases() {
            self.store.notices()
        } else {
            None
        };
        tokio::spawn(async move {
            loop {
                let room = this.max_workers.saturating_sub(this.busy());
                if room > 0 {
                    let limit = this.max_workers as i64;
                    match this.lane.pending_queues(limit).await {
                        Ok(queues) => {
                            let listed_all = (queues.len() as i64) < limit;
                            let mut offered_all = true;
                            for queue in queues {
                                offered_all &= this.found(&queue);
                            }
                            // Every queue with work in the store has a worker reading it: from
                            // here on, new work can be handed over in memory, where the mode
                            // allows it.
                            if listed_all && offered_all && this.mode.hand_off() {
                                this.handoff.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(error) => tracing::error!(%error, "could not scan for pending work"),
                    }
                }
                // A notice naming one queue wakes that queue's worker, and no scan.
                let deadline = tokio::time::Instant::now() + interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::timeout_at(deadline, this.rescan.notified()) => break,
                        wake = next_wake(&mut notices, this.lane.scope()) => match wake {
                            Wake::Rescan => {
                                // A lease given back, or word lost: who holds what is to be
                                // asked again.
                                this.elsewhere.lock_unpoisoned().clear();
                                break;
                            }
                            Wake::Queues(queues) => this.told(queues),
                            Wake::Wanted(queues) => this.asked_for(queues).await,
                            Wake::Yielded(queues) => this.given(queues),
                        },
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod processes;
#[cfg(test)]
mod tests;
