//! Live updates: every change the index takes (a new post or reply, a like, an edit, a
//! deletion) goes to the pages open at that moment, which show it without reloading (the
//! route is `GET /api/live`, server-sent events, in `api/live.rs`).
//!
//! The hub is one broadcast channel per process. Each open page holds a [`Subscription`]:
//! a bounded queue (a page that falls behind is told to read its view again rather than
//! holding the others up), counted per user and in all, and let go when the page goes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;
use trestle::sync::MutexExt;

use crate::index::Change;

/// Changes a page may fall behind by before it is told to resync.
const QUEUE: usize = 256;
/// Open live connections one user may hold (tabs, devices).
pub(crate) const MAX_PER_USER: usize = 8;
/// Open live connections in all.
pub(crate) const MAX_OPEN: usize = 2_000;

/// Where the index's changes meet the open pages. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Hub {
    sender: broadcast::Sender<Change>,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            sender: broadcast::channel(QUEUE).0,
            open: Arc::default(),
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

/// One open page's share of the changes; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) changes: broadcast::Receiver<Change>,
    user: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut open = self.open.lock_unpoisoned();
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// Passes a change on to every page listening; without listeners it is dropped.
    pub(crate) fn publish(&self, change: Option<Change>) {
        if let Some(change) = change {
            // An error only says nobody listens.
            let _ = self.sender.send(change);
        }
    }

    /// A place for one of `user`'s pages, unless they or the server have too many open.
    pub(crate) fn subscribe(&self, user: &str) -> Result<Subscription, Full> {
        let mut open = self.open.lock_unpoisoned();
        if open.values().sum::<usize>() >= MAX_OPEN {
            return Err(Full::Server);
        }
        let count = open.entry(user.to_owned()).or_default();
        if *count >= MAX_PER_USER {
            return Err(Full::User);
        }
        *count += 1;
        Ok(Subscription {
            changes: self.sender.subscribe(),
            user: user.to_owned(),
            open: self.open.clone(),
        })
    }

    /// How many pages listen, for the tests.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock_unpoisoned().values().sum()
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap in a test is the test failing.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::index::ChangeKind;

    #[tokio::test]
    async fn places_are_bounded_per_user_and_freed_when_a_page_goes() {
        let hub = Hub::default();
        let mut pages: Vec<_> = (0..MAX_PER_USER)
            .map(|_| hub.subscribe("@ada:x").unwrap())
            .collect();
        assert_eq!(hub.subscribe("@ada:x").unwrap_err(), Full::User);
        // Someone else still gets a place.
        let other = hub.subscribe("@bob:x").unwrap();
        assert_eq!(hub.open(), MAX_PER_USER + 1);
        pages.pop();
        let mut again = hub.subscribe("@ada:x").unwrap();
        hub.publish(Some(Change {
            kind: ChangeKind::Post,
            room_id: "!r".into(),
            event_id: "$e".into(),
            thread_root: None,
        }));
        hub.publish(None);
        assert_eq!(again.changes.recv().await.unwrap().event_id, "$e");
        assert!(again.changes.try_recv().is_err());
        drop((pages, other, again));
        assert_eq!(hub.open(), 0);
    }

    #[tokio::test]
    async fn a_page_that_falls_behind_learns_it() {
        let hub = Hub::default();
        let mut page = hub.subscribe("@ada:x").unwrap();
        for i in 0..QUEUE + 5 {
            hub.publish(Some(Change {
                kind: ChangeKind::Like,
                room_id: "!r".into(),
                event_id: format!("${i}"),
                thread_root: None,
            }));
        }
        assert!(matches!(
            page.changes.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
    }
}
