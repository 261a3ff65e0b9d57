//! What a queue's worker has been offered, kept per queue in [`Lanes::active`](super::Lanes).

use std::{collections::HashMap, sync::Arc};

use tokio::sync::Notify;

/// What was offered to a queue's worker since it last looked.
pub(super) struct Offered<T> {
    /// Work committed to the store that the worker must read from there.
    pub(super) in_store: bool,
    /// Work handed over in memory, in order; also in the store.
    pub(super) items: Vec<T>,
    /// Whether this process stored the work (received it, or a handler queued it), so that
    /// the process holding the queue's lease, if another does, is told to read it. Work a
    /// scan found or a notice named is not announced again.
    pub(super) announce: bool,
    /// Set while the worker, idle, keeps its lease for more work (`shared::LINGER`); taken, and
    /// woken, by the next offer. A lingering worker does not count as busy.
    pub(super) lingering: Option<Arc<Notify>>,
    /// Items offered since the worker last took the lease, let go ([`Lane::let_go`](super::Lane::let_go)) if
    /// another process holds it.
    pub(super) admitted: usize,
    /// Whether the worker holds the queue's lease (where processes share the store).
    pub(super) held: bool,
    /// Set when the process that handles the room's events asked for the queue
    /// (`Notice::Wanted`): the worker stops after the item in hand and gives its lease over.
    pub(super) wanted: bool,
    /// Handlers sending directly under the idle worker's lease ([`Hold`](super::Hold)): the
    /// worker neither gives the lease back nor takes new work until they are done.
    pub(super) holds: usize,
}

impl<T> Offered<T> {
    pub(super) fn nothing() -> Self {
        Offered {
            in_store: false,
            items: Vec::new(),
            announce: false,
            lingering: None,
            admitted: 0,
            held: false,
            wanted: false,
            holds: 0,
        }
    }

    pub(super) fn anything(&self) -> bool {
        self.in_store || !self.items.is_empty()
    }
}

/// Queues with a worker at work: those whose worker lingers, idle, do not count.
pub(super) fn working<T>(active: &HashMap<String, Offered<T>>) -> usize {
    active.values().filter(|o| o.lingering.is_none()).count()
}
