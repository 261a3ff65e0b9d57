//! What the lanes do where processes share the store (PostgreSQL): a room kept by the
//! process that holds it while it has work, and word between the processes about whose room
//! is whose. See the parent module's documentation.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::{Lane, Lanes};
use crate::{store::Notice, sync::MutexExt};

/// How long an idle worker keeps its queue's lease, where processes share the store, for the
/// next item: a room that gets an event every few hundred milliseconds stays with one process
/// instead of costing a lease taken and given back per event (and another process the chance
/// to take it). Short, so that a process idle for a moment holds nothing a status or a
/// handover must wait for; at most a third of the renewal interval (see `Lanes::linger`).
const LINGER: Duration = Duration::from_millis(250);

impl<L: Lane> Lanes<L> {
    /// Hands this process's queues to the other processes sharing the store, as it stops: no
    /// worker starts any more, each worker stops after the item in hand (given
    /// [`HANDOVER_GRACE`] to finish, then dropped), its marks written, and gives its lease
    /// back, which tells the others (see [`Store::release`]). Where the store is this
    /// process's alone, nothing changes: the work left is finished here.
    pub(crate) fn hand_over(&self) {
        if self.mode.leases() {
            self.handing_over.send_replace(true);
        }
    }

    pub(super) fn is_handing_over(&self) -> bool {
        *self.handing_over.borrow()
    }

    /// Completes [`HANDOVER_GRACE`] after the hand-over begins: the item in hand is dropped then.
    pub(super) async fn abandoned(&self) {
        let mut handing_over = self.handing_over.subscribe();
        if handing_over.wait_for(|h| *h).await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(HANDOVER_GRACE).await;
    }

    /// Ends a worker that found the queue's lease another process's: that holder is told to
    /// read the queue again if this process stored work in it. Told once the entry is gone,
    /// so that work offered after the notice starts a worker of its own, which tries again.
    pub(super) async fn give_up(self: &Arc<Self>, queue: &str) {
        let (announce, admitted) = self
            .active()
            .remove(queue)
            .map_or((false, 0), |o| (o.announce, o.admitted));
        self.changed.notify_waiters();
        self.lane.let_go(admitted);
        if self.mode.leases() {
            remember(&self.elsewhere, queue, self.remembered());
        }
        if announce {
            self.tell(queue);
        }
    }

    /// The worker of `queue` took its lease: what was offered is this process's to do. Returns
    /// the take's number, new at each take where processes share the store, so that a handler
    /// learns that its room may have been another process's since its previous item here
    /// ([`EventContext::lease_take`](crate::router::EventContext::lease_take)). Where the
    /// store is this process's alone, it holds every queue from its start: always 0.
    pub(super) fn took(&self, queue: &str) -> u64 {
        if !self.mode.leases() {
            return 0;
        }
        self.elsewhere.lock_unpoisoned().remove(queue);
        if let Some(offered) = self.active().get_mut(queue) {
            offered.admitted = 0;
            offered.held = true;
        }
        self.takes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The worker of `queue` is about to give its lease back (or lost it): no longer held, so
    /// that what asks after this ([`Lanes::holds`]) finds it so, then the lane is told
    /// ([`Lane::leaving`]).
    pub(super) async fn letting_go(&self, queue: &str) {
        if !self.mode.leases() {
            return;
        }
        if let Some(offered) = self.active().get_mut(queue) {
            offered.held = false;
        }
        self.lane.leaving(queue).await;
    }

    /// Ends a worker that lost its queue's lease (another process may hold it): its marks
    /// written.
    pub(super) async fn lost(&self, queue: &str, processed: Vec<i64>) {
        self.lane.finish(processed).await;
        self.letting_go(queue).await;
        self.stop_worker(queue);
    }

    /// How long this process remembers that another held a queue's lease, and that it gave
    /// one back: new work stored here for a queue held elsewhere is only announced to its
    /// holder, not asked for, meanwhile (the holder keeps the room while it has work, and one
    /// that let it go lately takes it again when told: the two spans are the same, and the
    /// holder's starts later). A holder that died is taken over by the periodic scans once
    /// its lease runs out, as before.
    pub(super) fn remembered(&self) -> Duration {
        self.store.lease_times().renew_every()
    }

    /// Tells the holder of `queue` (another process) to read it, in one notice with the
    /// other queues this process stores work in meanwhile (a transaction's rooms), sent once
    /// the work is committed (offers come after the commit).
    ///
    /// Where this process handles the room's events ([`Lane::handles`]: a handler here sent
    /// to the room), the holder is asked to give the queue over instead (`Notice::Wanted`):
    /// it finishes the item in hand and gives its lease back, saying so (`Notice::Yielded`),
    /// and a worker here takes it. Otherwise the room's outbox stayed in the process its
    /// events came from before, kept there by each send it was told of, and every awaited
    /// send of this process's handlers waited for another process to send it (the
    /// scale-out benchmark in docs/scaling.md). Only the process that holds the room's inbox
    /// asks, so two processes never ask each other in turn; what others store for the room
    /// (a bridge's connections, say) is only announced, and sent by whoever holds it.
    pub(super) fn tell(self: &Arc<Self>, queue: &str) {
        let wanted = self.lane.handles(queue);
        let first = {
            let mut to_tell = self.to_tell.lock_unpoisoned();
            if to_tell.iter().any(|(q, _)| q == queue) {
                return;
            }
            to_tell.push((queue.to_owned(), wanted));
            to_tell.len() == 1
        };
        if wanted {
            remember(&self.asked, queue, self.remembered());
        }
        if first {
            let this = self.clone();
            tokio::spawn(async move {
                // What the same transaction offers next joins this notice.
                tokio::task::yield_now().await;
                let told = std::mem::take(&mut *this.to_tell.lock_unpoisoned());
                let (wanted, pending): (Vec<_>, Vec<_>) =
                    told.into_iter().partition(|(_, wanted)| *wanted);
                let names = |told: Vec<(String, bool)>| told.into_iter().map(|(q, _)| q).collect();
                let scope = this.lane.scope();
                let notices = Notice::pending(scope, names(pending))
                    .into_iter()
                    .chain(Notice::wanted(scope, names(wanted)));
                for notice in notices {
                    this.store.announce(&notice).await;
                }
            });
        }
    }

    /// The process that handles the rooms `queues` asked for them: each held here is given
    /// over after the item in hand; each given back here lately, idle, is said to be free at
    /// once. Others are not this process's.
    pub(super) async fn asked_for(&self, queues: Vec<String>) {
        let mut free = Vec::new();
        for queue in queues {
            if let Some(offered) = self.active().get_mut(&queue) {
                offered.wanted = true;
                // A lingering worker wakes to give it over.
                if let Some(wake) = offered.lingering.take() {
                    wake.notify_one();
                }
                continue;
            }
            if lately(&self.released, &queue, self.remembered()) {
                free.push(queue);
            }
        }
        if !free.is_empty() {
            let notice = Notice::Yielded {
                scope: self.lane.scope().to_owned(),
                queues: free,
            };
            self.store.announce(&notice).await;
        }
    }

    /// The holder of `queues` gave them over: those this process asked for lately it takes
    /// (a worker reads each from its start). For the others it only forgets who held them.
    pub(super) fn given(self: &Arc<Self>, queues: Vec<String>) {
        for queue in queues {
            self.elsewhere.lock_unpoisoned().remove(&queue);
            let asked = self.asked.lock_unpoisoned().remove(&queue);
            if asked.is_some_and(|since| since.elapsed() < self.remembered()) {
                self.found(&queue);
            }
        }
    }

    /// Whether the process that handles `queue`'s room asked for it.
    pub(super) fn is_wanted(&self, queue: &str) -> bool {
        self.mode.leases() && self.active().get(queue).is_some_and(|o| o.wanted)
    }

    /// Ends a worker whose queue the process handling the room asked for: its marks written,
    /// its lease given back and the asker told, with one notice (`Notice::Yielded`, not a
    /// `LeaseFreed` that would have every process rescan). What is left in the queue the
    /// asker's worker reads from the queue's start, in order; the lease is given back only
    /// after the outcome of the item in hand is recorded, so nothing is sent twice. Work
    /// this process stores for the queue afterwards is announced to its new holder, not
    /// asked for (it does not handle the room, or it would not have been asked).
    pub(super) async fn give_over(&self, scope: &str, queue: &str, processed: Vec<i64>) {
        self.lane.finish(processed).await;
        self.letting_go(queue).await;
        let released = self.store.release_idle(scope, queue, &self.owner).await;
        remember(&self.elsewhere, queue, self.remembered());
        self.stop_worker(queue);
        match released {
            Ok(()) => {
                let notice = Notice::Yielded {
                    scope: scope.to_owned(),
                    queues: vec![queue.to_owned()],
                };
                self.store.announce(&notice).await;
            }
            Err(error) => {
                tracing::warn!(%error, queue, "could not give the queue's lease over; it runs out");
            }
        }
    }

    /// Whether another process held `queue`'s lease when a worker here last asked, lately.
    pub(super) fn held_elsewhere(&self, queue: &str) -> bool {
        lately(&self.elsewhere, queue, self.remembered())
    }

    /// Another process stored work for `queues` while it found their leases held: each is
    /// read again if this process holds it, or gave it back since that process asked.
    pub(super) fn told(self: &Arc<Self>, queues: Vec<String>) {
        for queue in queues {
            let here = self.active().contains_key(&queue)
                || lately(&self.released, &queue, self.remembered());
            if here {
                self.found(&queue);
            }
        }
    }

    /// Keeps the idle worker of `queue` (its lease taken or renewed at `leased_at`) and its
    /// lease for [`LINGER`], or until work is offered; whether work came. Not when the lease
    /// would need renewing meanwhile, nor in a handover.
    pub(super) async fn linger(&self, queue: &str, leased_at: Instant) -> bool {
        let renew_every = self.store.lease_times().renew_every();
        let linger = LINGER.min(renew_every / 3);
        if leased_at.elapsed() + linger >= renew_every || self.is_handing_over() {
            return false;
        }
        let wake = Arc::new(Notify::new());
        {
            let mut active = self.active();
            let Some(offered) = active.get_mut(queue) else {
                return false;
            };
            if offered.anything() {
                return true;
            }
            offered.lingering = Some(wake.clone());
        }
        // No longer busy: a handover or `idle` need not wait for it.
        self.changed.notify_waiters();
        let mut handing_over = self.handing_over.subscribe();
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(linger) => {}
            _ = handing_over.wait_for(|h| *h) => {}
        }
        let came = match self.active().get_mut(queue) {
            // Nothing came: the marker is still there.
            Some(offered) if offered.lingering.is_some() => {
                offered.lingering = None;
                false
            }
            // An offer took the marker.
            Some(_) => true,
            None => return false,
        };
        // Sends made directly under this lease ([`Lanes::hold`]) end first, before the lease
        // goes or new work is taken; none starts once the marker is gone.
        while self.active().get(queue).is_some_and(|o| o.holds > 0) {
            self.changed(Duration::from_millis(20)).await;
        }
        came
    }

    /// Lets a handler of `queue`'s room send directly, with no outbox row, under the lease of
    /// this process's idle worker for the queue (lingering, nothing offered, not asked for):
    /// the worker neither gives its lease back nor takes newly offered work until the hold is
    /// dropped, so the send keeps its place in the queue's order, as SQLite's
    /// [`Lanes::claim`] keeps it. `None` where the store is not shared, or no idle worker here
    /// holds the lease: the request then goes through the outbox.
    pub(crate) fn hold(self: &Arc<Self>, queue: &str) -> Option<Hold<L>> {
        if !self.mode.leases() || self.is_handing_over() {
            return None;
        }
        let mut active = self.active();
        let offered = active.get_mut(queue)?;
        if !offered.held || offered.lingering.is_none() || offered.anything() || offered.wanted {
            return None;
        }
        offered.holds += 1;
        Some(Hold {
            lanes: self.clone(),
            queue: queue.to_owned(),
        })
    }
}

/// A direct send under an idle worker's lease ([`Lanes::hold`]), until dropped.
pub(crate) struct Hold<L: Lane> {
    lanes: Arc<Lanes<L>>,
    queue: String,
}

impl<L: Lane> Drop for Hold<L> {
    fn drop(&mut self) {
        if let Some(offered) = self.lanes.active().get_mut(&self.queue) {
            offered.holds = offered.holds.saturating_sub(1);
        }
        self.lanes.changed.notify_waiters();
    }
}

/// Notes that `queue` was seen now in `seen` (see [`Lanes::elsewhere`], [`Lanes::released`]),
/// forgetting what is older than `span`, so the map stays as small as the rooms seen lately.
pub(super) fn remember(seen: &Mutex<HashMap<String, Instant>>, queue: &str, span: Duration) {
    let mut seen = seen.lock_unpoisoned();
    seen.retain(|_, since| since.elapsed() < span);
    seen.insert(queue.to_owned(), Instant::now());
}

/// Whether `queue` was seen in `seen` within `span`.
pub(super) fn lately(seen: &Mutex<HashMap<String, Instant>>, queue: &str, span: Duration) -> bool {
    seen.lock_unpoisoned()
        .get(queue)
        .is_some_and(|since| since.elapsed() < span)
}

/// What a notice from another process asks of a lane's scan.
pub(super) enum Wake {
    /// Look through every queue: a lease was given back in a handover, or notices were lost.
    Rescan,
    /// Read these queues again: work was stored in them while this process held them.
    Queues(Vec<String>),
    /// Give these queues over: the process that handles their rooms wants them.
    Wanted(Vec<String>),
    /// These queues were given over as asked: take those asked for.
    Yielded(Vec<String>),
}

/// The next notice that concerns the lanes of lease scope `scope`. Never, without notices.
pub(super) async fn next_wake(
    notices: &mut Option<tokio::sync::broadcast::Receiver<Notice>>,
    scope: &str,
) -> Wake {
    let Some(receiver) = notices else {
        return std::future::pending().await;
    };
    loop {
        match receiver.recv().await {
            Ok(Notice::Pending { scope: of, queues }) if of == scope => {
                return Wake::Queues(queues);
            }
            Ok(Notice::Wanted { scope: of, queues }) if of == scope => {
                return Wake::Wanted(queues);
            }
            Ok(Notice::Yielded { scope: of, queues }) if of == scope => {
                return Wake::Yielded(queues);
            }
            Ok(notice @ (Notice::LeaseFreed | Notice::Missed)) => {
                tracing::debug!(?notice, scope, "rescanning");
                return Wake::Rescan;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, scope, "rescanning: notices missed");
                return Wake::Rescan;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *notices = None;
                return std::future::pending().await;
            }
        }
    }
}

/// How long the item in hand may take to finish when its process hands its queues over.
pub(super) const HANDOVER_GRACE: Duration = Duration::from_secs(5);

/// Completes when another process on the store gave a lease back (or may have, unheard):
/// a queue it held may wait for a worker here. Never, without notices.
pub(crate) async fn lease_freed(notices: &mut Option<tokio::sync::broadcast::Receiver<Notice>>) {
    let Some(receiver) = notices else {
        return std::future::pending().await;
    };
    loop {
        match receiver.recv().await {
            Ok(Notice::LeaseFreed | Notice::Missed)
            | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *notices = None;
                return std::future::pending().await;
            }
        }
    }
}
