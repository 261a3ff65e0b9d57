//! A queue reserved for a caller that does its work directly ([`Lanes::claim`]), where the
//! store is this process's alone: the SQLite counterpart of a direct send under a lease
//! (`shared.rs`, [`Lanes::hold`]).

use std::sync::Arc;

use super::{Lane, Lanes, Offered};

impl<L: Lane> Lanes<L> {
    /// Reserves `queue` for the caller, who does its work directly, when no worker holds it.
    /// Work offered meanwhile waits, and is handed to a worker when the claim is dropped, so
    /// order within the queue holds.
    pub(crate) fn claim(self: &Arc<Self>, queue: &str) -> Option<Claim<L>> {
        let mut active = self.active();
        if active.contains_key(queue) {
            return None;
        }
        active.insert(queue.to_owned(), Offered::nothing());
        Some(Claim {
            lanes: self.clone(),
            queue: queue.to_owned(),
        })
    }
}

/// A queue reserved by [`Lanes::claim`].
pub(crate) struct Claim<L: Lane> {
    lanes: Arc<Lanes<L>>,
    queue: String,
}

impl<L: Lane> Drop for Claim<L> {
    fn drop(&mut self) {
        let mut active = self.lanes.active();
        if active.get(&self.queue).is_some_and(|o| o.anything()) {
            // Work was offered while the queue was claimed: a worker takes over the entry.
            drop(active);
            self.lanes.spawn_worker(std::mem::take(&mut self.queue));
        } else {
            active.remove(&self.queue);
            drop(active);
            self.lanes.changed.notify_waiters();
        }
    }
}
