//! What the holder knows of its handoff queue without asking the store: the rooms (order keys)
//! of the items it has read and not yet finished, and whether items may wait that it has not
//! read. With it, an event the holder receives itself is handled at once, with no query, when
//! nothing of its room waits; the store is asked only while the holder's view is not whole.
//!
//! Why that is enough: an item of room R is pushed by another process only while that process
//! handles R's events, so holds R's inbox lease; its push is committed, then announced
//! (`NOTIFY`), before its handler returns, so before R's item is marked done and R's lease can
//! come here. Notices reach this process in commit order: when its inbox takes R on a notice
//! (R given back, or work stored for it), the push's notice was broadcast before that one, and
//! [`Wakes::rung`] sees it. A listener that reconnected says notices may be lost (`Missed`),
//! which makes the view not whole until the next read. When it takes R on a lease that ran out
//! (the pusher died, perhaps between its commit and its `NOTIFY`), the holder's look every
//! second has read the push long before: a lease runs out seconds after its last renewal.
//! That leaves R taken here, on events this process received itself, the moment another
//! process gave it back, while this process's listener is behind by more than the round trips
//! of taking the lease and reading the item. So the store is also asked for a room's first
//! event under each take of its inbox lease here ([`EventContext::lease_take`]): while the
//! take stays, the room has been here since its previous event, and no other process could
//! push for it. The query is then one per room and take, not one per event.
//!
//! [`EventContext::lease_take`]: trestle::router::EventContext::lease_take

use std::collections::HashMap;

use trestle::store::{Handed, Wakes};

/// What the holder does with an event of a room that it received itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Handle it here: nothing of its room waits.
    Here,
    /// Hand it over behind the room's items it has read and not finished.
    Hand,
    /// Ask the store whether the room's items wait: the view is not whole.
    Ask,
}

/// How many rooms the view remembers the take of: past that it forgets them all, and asks the
/// store once more for each.
const TAKES_KEPT: usize = 4096;

/// The holder's view of its handoff queue. See the module's documentation.
#[derive(Default)]
pub(crate) struct View {
    /// What rings when an item is pushed; `None` while this process does not take the queue.
    wakes: Option<Wakes>,
    /// Whether the last read saw every item, and nothing was pushed since.
    whole: bool,
    /// Whether the holder pushed an item itself since it began its last read, which that read
    /// may have missed ([`View::pushed`]).
    pushed: bool,
    /// How many items of each order key were read and not finished.
    unfinished: HashMap<String, usize>,
    /// The take of each room's inbox lease under which an event of it was last decided here.
    taken: HashMap<String, u64>,
}

impl View {
    /// The holder begins to take the queue: its view is whole after its first read.
    pub(crate) fn start(&mut self, wakes: Wakes) {
        *self = View {
            wakes: Some(wakes),
            ..View::default()
        };
    }

    /// The holder stops taking the queue.
    pub(crate) fn stop(&mut self) {
        *self = View::default();
    }

    /// The holder is about to read the queue: what was pushed until now is in that read (a
    /// push is committed before it is announced). Until [`View::read`], the view is not whole.
    pub(crate) fn reading(&mut self) {
        if let Some(wakes) = &mut self.wakes {
            wakes.rung();
        }
        self.whole = false;
        self.pushed = false;
    }

    /// The holder read `items`: all that waited, unless `complete` is false (a full batch).
    pub(crate) fn read(&mut self, items: &[Handed], complete: bool) {
        self.unfinished.clear();
        for item in items {
            *self.unfinished.entry(item.order_key.clone()).or_default() += 1;
        }
        self.whole = complete && self.wakes.is_some() && !self.pushed;
    }

    /// The holder pushed an item itself (an event of a room whose items it must not pass):
    /// not whole until its next read, though the push's notice has not come back yet. Without
    /// this, the room's next event, decided in between, passed the pushed one once the items
    /// of the room read before were finished.
    pub(crate) fn pushed(&mut self) {
        self.whole = false;
        self.pushed = true;
    }

    /// The holder finished an item of `order_key` (handled, and deleted or left to be done
    /// again by the next holder).
    pub(crate) fn finished(&mut self, order_key: &str) {
        if let Some(count) = self.unfinished.get_mut(order_key) {
            *count -= 1;
            if *count == 0 {
                self.unfinished.remove(order_key);
            }
        }
    }

    /// What to do with an event of `order_key` the holder received itself, handled under
    /// `take` of its room's inbox lease.
    pub(crate) fn decide(&mut self, order_key: &str, take: u64) -> Decision {
        if self.wakes.as_mut().is_none_or(Wakes::rung) {
            self.whole = false;
        }
        let stayed = self.stayed(order_key, take);
        if self.unfinished.contains_key(order_key) {
            Decision::Hand
        } else if self.whole && stayed {
            Decision::Here
        } else {
            Decision::Ask
        }
    }

    /// Whether `order_key`'s last event was decided here under `take` too, so that its lease
    /// has stayed here since; notes `take` as its last.
    fn stayed(&mut self, order_key: &str, take: u64) -> bool {
        if self.taken.len() >= TAKES_KEPT && !self.taken.contains_key(order_key) {
            self.taken.clear();
        }
        self.taken.insert(order_key.to_owned(), take) == Some(take)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is the test failing.

    use std::time::{Duration, Instant};

    use trestle::store::Store;

    use super::*;

    /// Decides for `order_key` (under take 1 of its lease) until the answer is `wanted` (a notice takes a moment to come
    /// back through the database), for at most a second.
    async fn comes_to(view: &mut View, order_key: &str, wanted: Decision) {
        let started = Instant::now();
        while view.decide(order_key, 1) != wanted {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{order_key}: {:?}, not {wanted:?}",
                view.decide(order_key, 1)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_holder_passes_no_waiting_item_of_a_room_and_asks_only_when_unsure() {
        let url = trestle_postgres_harness::fresh_database().await;
        let here = Store::connect(&url).await.unwrap();
        let other = Store::connect(&url).await.unwrap();
        let queue = here.handoff("as", "bridge").unwrap();
        let elsewhere = other.handoff("as", "bridge").unwrap();
        // Takes are the other test's: here each room's lease stays taken.
        let mut view = View::default();
        // Not taking the queue: unsure.
        assert_eq!(view.decide("!a", 1), Decision::Ask);
        let mut wakes = queue.wakes();
        // The listener's first word (it may have missed notices).
        wakes.next().await;
        view.start(wakes);
        assert_eq!(view.decide("!a", 1), Decision::Ask, "before the first read");

        // Read, empty: every room's events are handled here, with no query.
        view.reading();
        assert_eq!(view.decide("!a", 1), Decision::Ask, "while reading");
        view.read(&queue.oldest(10).await.unwrap(), true);
        assert_eq!(view.decide("!a", 1), Decision::Here);
        assert_eq!(view.decide("!b", 1), Decision::Ask, "!b's first event here");
        assert_eq!(view.decide("!b", 1), Decision::Here);

        // Another process hands an event of !a over: unsure until the holder reads it, then
        // !a's events go behind it and !b's are still handled here.
        elsewhere
            .push("!a", "t1.0", "timeline", "{}")
            .await
            .unwrap();
        comes_to(&mut view, "!b", Decision::Ask).await;
        assert!(queue.waiting("!a").await.unwrap());
        view.reading();
        let items = queue.oldest(10).await.unwrap();
        view.read(&items, true);
        assert_eq!(view.decide("!a", 1), Decision::Hand);
        assert_eq!(view.decide("!b", 1), Decision::Here);

        // A push the holder made itself rings too.
        queue.push("!b", "t2.0", "timeline", "{}").await.unwrap();
        comes_to(&mut view, "!c", Decision::Ask).await;
        assert_eq!(view.decide("!a", 1), Decision::Hand);
        view.reading();
        let items = queue.oldest(10).await.unwrap();
        view.read(&items, true);
        assert_eq!(view.decide("!b", 1), Decision::Hand);

        // Each finished: !a's events are handled here again, no query.
        for item in &items {
            queue.done(item.seq).await.unwrap();
            view.finished(&item.order_key);
        }
        assert_eq!(view.decide("!a", 1), Decision::Here);
        assert_eq!(view.decide("!b", 1), Decision::Here);

        // A read that filled its batch may have left items: unsure of the others.
        elsewhere
            .push("!a", "t3.0", "timeline", "{}")
            .await
            .unwrap();
        elsewhere
            .push("!b", "t3.1", "timeline", "{}")
            .await
            .unwrap();
        comes_to(&mut view, "!a", Decision::Ask).await;
        view.reading();
        view.read(&queue.oldest(1).await.unwrap(), false);
        assert_eq!(view.decide("!a", 1), Decision::Hand);
        assert_eq!(view.decide("!b", 1), Decision::Ask);

        // Stopped: unsure again.
        view.stop();
        assert_eq!(view.decide("!c", 1), Decision::Ask);
    }

    /// An event the holder pushed itself, behind items of its room, is not passed by the room's
    /// next event before the push's notice comes back, nor when the push came during a read.
    #[tokio::test]
    async fn the_holders_own_push_is_not_passed_before_its_notice_comes_back() {
        let url = trestle_postgres_harness::fresh_database().await;
        let here = Store::connect(&url).await.unwrap();
        let queue = here.handoff("as", "bridge").unwrap();
        let mut view = View::default();
        let mut wakes = queue.wakes();
        wakes.next().await;
        view.start(wakes);
        view.reading();
        view.read(&[], true);
        assert_eq!(view.decide("!a", 1), Decision::Ask, "!a's first event");
        assert_eq!(view.decide("!a", 1), Decision::Here);
        // Pushed (the store is not needed: the view must not wait for the notice).
        view.pushed();
        assert_eq!(
            view.decide("!a", 1),
            Decision::Ask,
            "after the holder's push"
        );
        view.reading();
        view.read(&[], true);
        assert_eq!(view.decide("!a", 1), Decision::Here, "read again");
        // A push while the holder reads may be missing from what it reads.
        view.reading();
        view.pushed();
        view.read(&[], true);
        assert_eq!(
            view.decide("!a", 1),
            Decision::Ask,
            "pushed during the read"
        );
    }

    /// A room whose inbox lease this process took again since its previous event here may have
    /// been another process's meanwhile, which may have handed its events over a moment ago:
    /// the store is asked about its first event under each take, and only that one.
    #[test]
    fn a_room_taken_again_is_asked_about_once_per_take() {
        let mut view = View::default();
        assert!(!view.stayed("!r", 1), "its first event");
        assert!(view.stayed("!r", 1));
        assert!(!view.stayed("!s", 2), "another room's first event");
        assert!(!view.stayed("!r", 3), "taken again");
        assert!(view.stayed("!r", 3));
        assert!(view.stayed("!s", 2), "!s is still under its take");
        // Past the rooms it keeps, the view forgets them all: each is asked about once more.
        for n in 0..TAKES_KEPT {
            view.stayed(&format!("!many{n}"), 4);
        }
        assert!(!view.stayed("!r", 3), "forgotten");
        assert!(view.stayed("!r", 3));
    }
}
