//! Done marks that several rooms' workers write at the same moment, gathered into one
//! statement, as a database gathers concurrent commits into one flush of its log.
//!
//! Where processes share the store, each room's worker writes its marks before it goes on
//! (`store/mode.rs`), and with many busy rooms those were a statement and a commit each: a
//! third of a statement per event in `bench-scale`, and the costliest statement by time
//! under `pg_stat_statements` (docs/scaling.md). Here a worker's marks wait while a statement
//! is being written, and go together with every other worker's in the next one. Nothing is
//! delayed when nothing is being written: the first marks start a statement at once. A
//! worker still returns only once its own marks are committed.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::oneshot;

use super::super::Store;
use crate::{Error, Result, sync::MutexExt};

/// The marks waiting for the next statement, and whether one is being written.
#[derive(Default)]
pub(crate) struct GroupedMarks {
    state: Mutex<State>,
    /// Statements written, for the test that they are gathered.
    statements: AtomicU64,
}

/// A worker's marks, and where to tell it they were written (or why not).
type Waiting = (Vec<i64>, oneshot::Sender<std::result::Result<(), String>>);

#[derive(Default)]
struct State {
    waiting: Vec<Waiting>,
    writing: bool,
}

impl std::fmt::Debug for GroupedMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedMarks")
            .field("statements", &self.statements)
            .finish_non_exhaustive()
    }
}

impl GroupedMarks {
    /// Marks `seqs` done in `store`, with whatever other workers mark meanwhile; returns once
    /// they are committed.
    pub(crate) async fn mark(self: &Arc<Self>, store: &Store, seqs: &[i64]) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock_unpoisoned();
            state.waiting.push((seqs.to_vec(), tx));
            !std::mem::replace(&mut state.writing, true)
        };
        if start {
            // A task of its own writes, not this caller: it may go on for other workers'
            // marks after this one's are done, and this caller should not wait for those.
            tokio::spawn(self.clone().write(store.clone()));
        }
        match rx.await {
            Ok(outcome) => outcome.map_err(Error::Other),
            Err(_) => Err(Error::Other(
                "the done marks' writer stopped before writing them".into(),
            )),
        }
    }

    /// Writes what waits, one statement at a time, until nothing does.
    async fn write(self: Arc<Self>, store: Store) {
        loop {
            let batch = {
                let mut state = self.state.lock_unpoisoned();
                if state.waiting.is_empty() {
                    state.writing = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let seqs: Vec<i64> = batch.iter().flat_map(|(s, _)| s.iter().copied()).collect();
            self.statements.fetch_add(1, Ordering::Relaxed);
            let outcome = match store.conn().await {
                Ok(mut conn) => super::mark_done(&mut conn, store.backend, &seqs).await,
                Err(error) => Err(error),
            }
            .map_err(|error| error.to_string());
            for (_, tx) in batch {
                let _ = tx.send(outcome.clone());
            }
        }
    }

    /// Statements written so far.
    #[cfg(test)]
    pub(crate) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}
