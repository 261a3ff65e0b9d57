//! How much received work may wait behind the answers.
//!
//! An answer tells the homeserver to send the next transaction. Answered as fast as they are
//! stored, a burst of large transactions piles up in the rooms' workers: the homeserver
//! sees quick answers while the last event of the burst waits seconds for its handler
//! (issue 25 measured a p50 of 390 ms from push to echo at 50 events a transaction, against
//! 2 ms for an appservice that stores nothing). The homeserver keeps such a queue itself, and
//! durably, if it is answered a little later. So past a bound of events received and not yet
//! handled, a transaction waits before it is taken; below it, nothing changes.
//!
//! The count is this process's: events handed to the workers (`receive.rs`, `offer`) less
//! events finished (`inbox.rs`, `finish`). Items a worker let go of without finishing (another
//! process took the room on PostgreSQL) would keep it high, so a wait also ends when no room has
//! a worker, and never lasts longer than [`MAX_DELAY`]: an answer may come late, never not at
//! all.

use std::{
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// The longest a transaction waits for the handlers, well inside Synapse's timeout for a
/// push (it gives up and retries after a minute): a handler that waits for something only a
/// later transaction brings (a key over to-device, say) holds the others this long at most.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);

/// The count of events in flight, and what wakes a waiting transaction.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: AtomicUsize,
    /// Events in flight past which a transaction waits; `usize::MAX` waits never.
    bound: usize,
    freed: Notify,
}

impl Admission {
    pub(crate) fn new(bound: usize) -> Self {
        Admission {
            in_flight: AtomicUsize::new(0),
            bound: bound.max(1),
            freed: Notify::new(),
        }
    }

    /// Events handed to the workers.
    pub(crate) fn admit(&self, events: usize) {
        self.in_flight.fetch_add(events, Relaxed);
    }

    /// Events finished. Items left by an earlier run were never admitted, so the count stops
    /// at zero rather than wrapping.
    pub(crate) fn release(&self, events: usize) {
        let before = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(events)))
            .unwrap_or_default();
        if before >= self.bound && before.saturating_sub(events) < self.bound {
            self.freed.notify_waiters();
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Waits while the bound is reached, at most [`MAX_DELAY`]; `idle` says whether any room
    /// still has a worker (when none has, what is counted is not coming back). Returns how
    /// long it waited, if it did.
    pub(crate) async fn wait(&self, idle: impl Fn() -> bool) -> Option<Duration> {
        if self.in_flight() < self.bound {
            return None;
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the count is read again, so a release in between is not missed.
            freed.as_mut().enable();
            if self.in_flight() < self.bound {
                break;
            }
            if idle() {
                self.in_flight.store(0, Relaxed);
                break;
            }
            // Woken by a release below the bound; the poll every 100 ms sees rooms gone idle.
            let poll = tokio::time::Instant::now() + Duration::from_millis(100);
            if tokio::time::timeout_at(poll.min(deadline), freed)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                tracing::warn!(
                    in_flight = self.in_flight(),
                    bound = self.bound,
                    "handlers have been this far behind for {MAX_DELAY:?}; answering the \
                     homeserver anyway"
                );
                break;
            }
        }
        Some(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::{sync::Arc, time::Duration};

    use super::Admission;

    #[tokio::test]
    async fn a_transaction_waits_past_the_bound_until_events_are_finished() {
        let admission = Arc::new(Admission::new(10));
        admission.admit(9);
        let waited = tokio::time::timeout(Duration::from_millis(50), admission.wait(|| false))
            .await
            .expect("below the bound nothing waits");
        assert_eq!(waited, None);
        admission.admit(5);
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.wait(|| false).await }
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!waiting.is_finished(), "14 in flight against a bound of 10");
        admission.release(3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "11 in flight is still past the bound"
        );
        admission.release(2);
        let waited = tokio::time::timeout(Duration::from_millis(500), waiting)
            .await
            .expect("woken when the count fell below the bound")
            .unwrap();
        assert!(waited.unwrap() >= Duration::from_millis(250));
        admission.release(100);
        assert_eq!(admission.in_flight(), 0, "never below zero");
    }

    #[tokio::test]
    async fn a_wait_ends_when_no_room_has_a_worker() {
        let admission = Admission::new(2);
        admission.admit(5);
        tokio::time::timeout(Duration::from_secs(1), admission.wait(|| true))
            .await
            .expect("nothing is coming back to lower the count");
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_lasts_no_longer_than_the_longest_delay() {
        let admission = Admission::new(2);
        admission.admit(5);
        let started = tokio::time::Instant::now();
        admission.wait(|| false).await;
        assert!(started.elapsed() >= super::MAX_DELAY);
        assert!(started.elapsed() < super::MAX_DELAY + Duration::from_millis(200));
    }
}
