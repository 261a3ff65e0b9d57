//! Live updates: every change the index takes (a new post or reply, a like, an edit, a
//! deletion) goes to the pages open at that moment, which show it without reloading (the
//! route is `GET /api/live`, server-sent events, in `api/live.rs`).
//!
//! The hub is one broadcast channel per process. Each open page holds a [`Subscription`]:
//! a bounded queue (a page that falls behind is told to read its view again rather than
//! holding the others up), counted per user and in all, and let go when the page goes. Each
//! change has a number, and the latest [`QUEUE`] are kept, so a page that reconnects (streams
//! are short-lived) says the last number it saw and gets what came meanwhile: nothing falls
//! between two streams.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;
use trestle::sync::MutexExt;

use crate::index::Change;

/// Changes a page may fall behind by before it is told to resync, and changes kept for pages
/// that reconnect.
const QUEUE: usize = 256;
/// Open live connections one user may hold (tabs, devices).
pub(crate) const MAX_PER_USER: usize = 8;
/// Open live connections in all.
pub(crate) const MAX_OPEN: usize = 2_000;

/// A change and its number, which counts up from 1 in this process.
pub(crate) type Numbered = (u64, Change);

/// Where the index's changes meet the open pages. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Hub {
    sender: broadcast::Sender<Numbered>,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    open: HashMap<String, usize>,
    /// The number the next change gets.
    next: u64,
    /// The latest changes, oldest first.
    recent: VecDeque<Numbered>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            sender: broadcast::channel(QUEUE).0,
            state: Arc::new(Mutex::new(State {
                open: HashMap::new(),
                next: 1,
                recent: VecDeque::with_capacity(QUEUE),
            })),
        }
    }
}

/// Why a page may not listen now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The user has [`MAX_PER_USER`] pages listening.
    User,
    /// [`MAX_OPEN`] pages listen in all.
    Server,
}

/// What a page that reconnects missed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Nothing, or it is a new page.
    Nothing,
    /// These changes, oldest first.
    Changes(Vec<Numbered>),
    /// More than is kept, or changes of a process since restarted: read the view again.
    TooMuch,
}

/// One open page's share of the changes; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// What the page missed since the number it said it saw.
    pub(crate) missed: Missed,
    /// The number of the latest change when it subscribed: where its queue starts.
    pub(crate) position: u64,
    pub(crate) changes: broadcast::Receiver<Numbered>,
    user: String,
    state: Arc<Mutex<State>>,
}

impl Subscription {
    /// What the page missed, once.
    pub(crate) fn take_missed(&mut self) -> Missed {
        std::mem::replace(&mut self.missed, Missed::Nothing)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.state.lock_unpoisoned();
        if let Some(count) = state.open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                state.open.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// Numbers a change and passes it on to every page listening.
    pub(crate) fn publish(&self, change: Option<Change>) {
        let Some(change) = change else {
            return;
        };
        // Sent under the lock, so a page subscribing sees each change either in what it
        // missed or in its queue, never in both or neither.
        let mut state = self.state.lock_unpoisoned();
        let number = state.next;
        state.next += 1;
        if state.recent.len() == QUEUE {
            state.recent.pop_front();
        }
        state.recent.push_back((number, change.clone()));
        // An error only says nobody listens.
        let _ = self.sender.send((number, change));
    }

    /// A place for one of `user`'s pages, unless they or the server have too many open; with
    /// what it missed since change `seen`, when it says one.
    pub(crate) fn subscribe(&self, user: &str, seen: Option<u64>) -> Result<Subscription, Full> {
        let mut state = self.state.lock_unpoisoned();
        if state.open.values().sum::<usize>() >= MAX_OPEN {
            return Err(Full::Server);
        }
        let count = state.open.entry(user.to_owned()).or_default();
        if *count >= MAX_PER_USER {
            return Err(Full::User);
        }
        *count += 1;
        let missed = match seen {
            None => Missed::Nothing,
            Some(seen) if seen + 1 == state.next => Missed::Nothing,
            Some(seen)
                if seen < state.next
                    && state
                        .recent
                        .front()
                        .is_some_and(|(first, _)| *first <= seen + 1) =>
            {
                Missed::Changes(
                    state
                        .recent
                        .iter()
                        .filter(|(number, _)| *number > seen)
                        .cloned()
                        .collect(),
                )
            }
            Some(_) => Missed::TooMuch,
        };
        Ok(Subscription {
            missed,
            position: state.next - 1,
            changes: self.sender.subscribe(),
            user: user.to_owned(),
            state: self.state.clone(),
        })
    }

    /// How many pages listen, for the tests.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state.lock_unpoisoned().open.values().sum()
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap in a test is the test failing.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::index::ChangeKind;

    fn change(id: usize) -> Option<Change> {
        Some(Change {
            kind: ChangeKind::Like,
            room_id: "!r".into(),
            event_id: format!("${id}"),
            thread_root: None,
        })
    }

    #[tokio::test]
    async fn places_are_bounded_per_user_and_freed_when_a_page_goes() {
        let hub = Hub::default();
        let mut pages: Vec<_> = (0..MAX_PER_USER)
            .map(|_| hub.subscribe("@ada:x", None).unwrap())
            .collect();
        assert_eq!(hub.subscribe("@ada:x", None).unwrap_err(), Full::User);
        // Someone else still gets a place.
        let other = hub.subscribe("@bob:x", None).unwrap();
        assert_eq!(hub.open(), MAX_PER_USER + 1);
        pages.pop();
        let mut again = hub.subscribe("@ada:x", None).unwrap();
        hub.publish(change(1));
        hub.publish(None);
        let (number, received) = again.changes.recv().await.unwrap();
        assert_eq!((number, received.event_id.as_str()), (1, "$1"));
        assert!(again.changes.try_recv().is_err());
        drop((pages, other, again));
        assert_eq!(hub.open(), 0);
    }

    #[tokio::test]
    async fn a_page_that_falls_behind_learns_it() {
        let hub = Hub::default();
        let mut page = hub.subscribe("@ada:x", None).unwrap();
        for i in 0..QUEUE + 5 {
            hub.publish(change(i));
        }
        assert!(matches!(
            page.changes.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
    }

    #[test]
    fn a_page_that_reconnects_gets_what_came_between() {
        let hub = Hub::default();
        for i in 1..=3 {
            hub.publish(change(i));
        }
        let missed = |seen| hub.subscribe("@a:x", Some(seen)).unwrap().take_missed();
        let numbers = |missed: Missed| -> Vec<u64> {
            match missed {
                Missed::Changes(changes) => changes.into_iter().map(|(n, _)| n).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(numbers(missed(1)), [2, 3]);
        assert_eq!(numbers(missed(0)), [1, 2, 3]);
        assert_eq!(missed(3), Missed::Nothing);
        // A number this process never gave: it restarted since.
        assert_eq!(missed(9), Missed::TooMuch);
        for i in 4..=QUEUE + 4 {
            hub.publish(change(i));
        }
        // Change 2 is no longer kept.
        assert_eq!(missed(1), Missed::TooMuch);
        assert_eq!(
            numbers(missed(QUEUE as u64)),
            [
                QUEUE as u64 + 1,
                QUEUE as u64 + 2,
                QUEUE as u64 + 3,
                QUEUE as u64 + 4
            ]
        );
    }
}
