//! Handling in order per room, rooms concurrently.
//!
//! Each room with work has a queue and one task draining it; the task ends when its queue is
//! empty, so idle rooms cost nothing. The HTTP handler only enqueues, which keeps the
//! transaction's answer fast: Synapse gives up on a request after 60 s and then backs off.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::Notify;

use crate::transaction::Incoming;

/// Per-room ordered queues.
pub(crate) struct Dispatcher {
    queues: Mutex<HashMap<String, VecDeque<Arc<Incoming>>>>,
    pending: AtomicUsize,
    idle: Notify,
}

impl Dispatcher {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Dispatcher {
            queues: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Queues `item` behind earlier items of its room; `handle` is called for each item.
    pub(crate) fn push<H, F>(self: &Arc<Self>, item: Incoming, handle: H)
    where
        H: Fn(Arc<Incoming>) -> F + Send + Sync + Clone + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let key = item.queue_key().map(|r| r.to_string()).unwrap_or_default();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.get_mut(&key) {
                // A task is already draining this room: it will reach the item.
                Some(queue) => {
                    queue.push_back(Arc::new(item));
                    false
                }
                None => {
                    queues.insert(key.clone(), VecDeque::from([Arc::new(item)]));
                    true
                }
            }
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drain(key, handle).await });
        }
    }

    async fn drain<H, F>(self: Arc<Self>, key: String, handle: H)
    where
        H: Fn(Arc<Incoming>) -> F,
        F: Future<Output = ()>,
    {
        loop {
            let next = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let queue = queues.get_mut(&key).expect("a draining room has a queue");
                // Peek, not pop: the queue must stay present while its head is handled, so
                // that a push meanwhile appends here instead of starting a second task.
                match queue.front() {
                    Some(item) => item.clone(),
                    None => {
                        queues.remove(&key);
                        return;
                    }
                }
            };
            handle(next).await;
            {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(queue) = queues.get_mut(&key) {
                    queue.pop_front();
                }
            }
            if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
        }
    }

    /// Items queued or being handled.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits until nothing is queued or being handled.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.pending() == 0 {
                return;
            }
            notified.await;
        }
    }
}
