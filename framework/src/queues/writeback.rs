//! Writes that may lag a little behind: marks and records whose loss in a crash costs a
//! repeat, never an event.
//!
//! An inbox item not marked done is handled again (idempotency keys cover that); a ghost not
//! recorded as registered is registered again (`M_USER_IN_USE` counts as success); a join not
//! recorded is joined again. None of them needs its own commit on the hot path, so they are
//! gathered from every room and written together, one transaction per flush: while one flush
//! runs the next batch gathers, so batches grow with the load and a lone write waits for
//! nothing.

use crate::sync::MutexExt;
use std::{
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::sync::Notify;

use crate::Store;
pub(crate) use crate::store::Write;

/// How long writes wait to be gathered into one commit. The cost of a longer wait: after a
/// crash, the items handled in the last `GATHER` are handled again (their sends repeat the
/// same transaction ids, so the homeserver deduplicates them).
const GATHER: Duration = Duration::from_millis(10);

/// The writes waiting for the next flush, and the store they go to.
pub(crate) struct WriteBack {
    store: Store,
    pending: Mutex<Vec<Write>>,
    /// Shared with the flushing task, which waits on it holding nothing else.
    notify: Arc<Notify>,
}

impl WriteBack {
    pub(crate) fn new(store: Store) -> Self {
        WriteBack {
            store,
            pending: Mutex::default(),
            notify: Arc::default(),
        }
    }

    pub(crate) fn push(&self, write: Write) {
        self.extend(std::iter::once(write));
    }

    pub(crate) fn extend(&self, writes: impl IntoIterator<Item = Write>) {
        self.pending.lock_unpoisoned().extend(writes);
        self.notify.notify_one();
    }

    /// Writes waiting to be flushed.
    pub(crate) fn len(&self) -> usize {
        self.pending.lock_unpoisoned().len()
    }

    /// Takes the waiting done marks, leaving the other writes in their order: on SQLite the
    /// next commit of received transactions writes them (the journal's, or the receive script),
    /// which saves a commit per transaction when events arrive one at a time. A caller that
    /// fails to write them gives them back with [`WriteBack::extend`].
    pub(crate) fn take_done(&self) -> Vec<i64> {
        let mut pending = self.pending.lock_unpoisoned();
        let mut done = Vec::new();
        pending.retain(|write| match write {
            Write::Done(seq) => {
                done.push(*seq);
                false
            }
            _ => true,
        });
        done
    }

    fn take(&self) -> Vec<Write> {
        std::mem::take(&mut *self.pending.lock_unpoisoned())
    }

    /// Flushes as writes come, until the appservice (which holds the only strong reference)
    /// is dropped.
    pub(crate) async fn flush_forever(this: Weak<WriteBack>) {
        loop {
            let Some(writeback) = this.upgrade() else {
                return;
            };
            let writes = writeback.take();
            if writes.is_empty() {
                // Waits holding only a weak reference, and looks again now and then, so a
                // dropped appservice ends this task.
                let notify = writeback.notify.clone();
                drop(writeback);
                if tokio::time::timeout(Duration::from_secs(1), notify.notified())
                    .await
                    .is_ok()
                {
                    // Woken by the first write after a lull: a moment more gathers a batch
                    // when transactions arrive one event at a time. On SQLite, done marks ride
                    // along with the next commit of received transactions meanwhile, so while
                    // transactions keep coming this task wakes only every `GATHER` and seldom
                    // commits.
                    tokio::time::sleep(GATHER).await;
                }
                continue;
            }
            for attempt in 0..5u32 {
                match writeback.store.apply(&writes).await {
                    Ok(()) => {
                        // Only once committed: told earlier, another process would read the
                        // old record back into its cache.
                        writeback.store.announce_writes(&writes).await;
                        break;
                    }
                    Err(error) => {
                        tracing::error!(writes = writes.len(), %error, attempt, "could not write to the store");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                }
            }
        }
    }
}
