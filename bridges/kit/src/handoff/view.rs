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
//! event here after a pause ([`STILL_HERE`]): an event is handled under its room's inbox
//! lease, and a worker keeps that lease a while after its last event
//! (`framework/src/queues/lanes/shared.rs`, `LINGER`), so a room whose last event here was
//! decided less than that ago has been here since, and no other process could push for it.
//! The query is then one per room and burst, not one per event.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

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

/// How recently a room's last event must have been decided here for its lease to have stayed
/// here since: less than the shortest time an idle worker keeps its lease (the framework's
/// `LINGER`, 250 ms, or a ninth of the lease's time where that is shorter: 111 ms for the
/// shortest lease, a second). The handler's own time only lengthens the hold.
pub(crate) const STILL_HERE: Duration = Duration::from_millis(100);

/// The holder's view of its handoff queue. See the module's documentation.
pub(crate) struct View {
    /// What rings when an item is pushed; `None` while this process does not take the queue.
    wakes: Option<Wakes>,
    /// Whether the last read saw every item, and nothing was pushed since.
    whole: bool,
    /// How many items of each order key were read and not finished.
    unfinished: HashMap<String, usize>,
    /// When an event of each room was last decided here.
    here: HashMap<String, Instant>,
    /// [`STILL_HERE`]; longer in a test that is about the rest.
    still_here: Duration,
}

impl Default for View {
    fn default() -> Self {
        View {
            wakes: None,
            whole: false,
            unfinished: HashMap::new(),
            here: HashMap::new(),
            still_here: STILL_HERE,
        }
    }
}

impl View {
    /// The holder begins to take the queue: its view is whole after its first read.
    pub(crate) fn start(&mut self, wakes: Wakes) {
        *self = View {
            wakes: Some(wakes),
            still_here: self.still_here,
            ..View::default()
        };
    }

    /// The holder stops taking the queue.
    pub(crate) fn stop(&mut self) {
        *self = View {
            still_here: self.still_here,
            ..View::default()
        };
    }

    /// The holder is about to read the queue: what was pushed until now is in that read (a
    /// push is committed before it is announced). Until [`View::read`], the view is not whole.
    pub(crate) fn reading(&mut self) {
        if let Some(wakes) = &mut self.wakes {
            wakes.rung();
        }
        self.whole = false;
    }

    /// The holder read `items`: all that waited, unless `complete` is false (a full batch).
    pub(crate) fn read(&mut self, items: &[Handed], complete: bool) {
        self.unfinished.clear();
        for item in items {
            *self.unfinished.entry(item.order_key.clone()).or_default() += 1;
        }
        self.whole = complete && self.wakes.is_some();
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

    /// What to do with an event of `order_key` the holder received itself.
    pub(crate) fn decide(&mut self, order_key: &str) -> Decision {
        self.decide_at(order_key, Instant::now())
    }

    /// Whether `order_key`'s last event was decided here less than [`STILL_HERE`] before
    /// `now`, so that its lease has stayed here since; notes `now` as its last.
    fn stayed(&mut self, order_key: &str, now: Instant) -> bool {
        if self.here.len() > 4096 {
            let still_here = self.still_here;
            self.here
                .retain(|_, at| now.saturating_duration_since(*at) < still_here);
        }
        self.here
            .insert(order_key.to_owned(), now)
            .is_some_and(|at| now.saturating_duration_since(at) < self.still_here)
    }

    fn decide_at(&mut self, order_key: &str, now: Instant) -> Decision {
        if self.wakes.as_mut().is_none_or(Wakes::rung) {
            self.whole = false;
        }
        let stayed = self.stayed(order_key, now);
        if self.unfinished.contains_key(order_key) {
            Decision::Hand
        } else if self.whole && stayed {
            Decision::Here
        } else {
            Decision::Ask
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is the test failing.

    use std::time::{Duration, Instant};

    use trestle::store::Store;

    use super::*;

    /// Decides for `order_key` until the answer is `wanted` (a notice takes a moment to come
    /// back through the database), for at most a second.
    async fn comes_to(view: &mut View, order_key: &str, wanted: Decision) {
        let started = Instant::now();
        while view.decide(order_key) != wanted {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{order_key}: {:?}, not {wanted:?}",
                view.decide(order_key)
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
        // Time is the other test's: here each room's lease stays.
        let mut view = View {
            still_here: Duration::from_secs(3600),
            ..View::default()
        };
        // Not taking the queue: unsure.
        assert_eq!(view.decide("!a"), Decision::Ask);
        let mut wakes = queue.wakes();
        // The listener's first word (it may have missed notices).
        wakes.next().await;
        view.start(wakes);
        assert_eq!(view.decide("!a"), Decision::Ask, "before the first read");

        // Read, empty: every room's events are handled here, with no query.
        view.reading();
        assert_eq!(view.decide("!a"), Decision::Ask, "while reading");
        view.read(&queue.oldest(10).await.unwrap(), true);
        assert_eq!(view.decide("!a"), Decision::Here);
        assert_eq!(view.decide("!b"), Decision::Ask, "!b's first event here");
        assert_eq!(view.decide("!b"), Decision::Here);

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
        assert_eq!(view.decide("!a"), Decision::Hand);
        assert_eq!(view.decide("!b"), Decision::Here);

        // A push the holder made itself rings too.
        queue.push("!b", "t2.0", "timeline", "{}").await.unwrap();
        comes_to(&mut view, "!c", Decision::Ask).await;
        assert_eq!(view.decide("!a"), Decision::Hand);
        view.reading();
        let items = queue.oldest(10).await.unwrap();
        view.read(&items, true);
        assert_eq!(view.decide("!b"), Decision::Hand);

        // Each finished: !a's events are handled here again, no query.
        for item in &items {
            queue.done(item.seq).await.unwrap();
            view.finished(&item.order_key);
        }
        assert_eq!(view.decide("!a"), Decision::Here);
        assert_eq!(view.decide("!b"), Decision::Here);

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
        assert_eq!(view.decide("!a"), Decision::Hand);
        assert_eq!(view.decide("!b"), Decision::Ask);

        // Stopped: unsure again.
        view.stop();
        assert_eq!(view.decide("!c"), Decision::Ask);
    }

    /// A room whose last event here was decided a while ago may have been another process's
    /// since, which may have handed its events over a moment ago: the store is asked.
    #[test]
    fn a_room_back_after_a_pause_is_asked_about() {
        let mut view = View::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(!view.stayed("!r", at(0)), "its first event");
        assert!(view.stayed("!r", at(90)));
        assert!(view.stayed("!r", at(170)), "80 ms after the last");
        assert!(!view.stayed("!s", at(170)));
        assert!(!view.stayed("!r", at(170) + STILL_HERE), "a pause");
        assert!(view.stayed("!r", at(180) + STILL_HERE));
    }
}
