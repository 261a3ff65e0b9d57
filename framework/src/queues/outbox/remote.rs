//! Outcomes that cross processes, where processes share the store: a request one process
//! queued and awaits may be sent by another (the one holding the room's outbox lease). The
//! sender tells the waiter the outcome with one `NOTIFY` ([`Notice::Outcome`]), only for a
//! request another process said it awaits (the outbox row's `waiter`), and the waiter's
//! [`Delivery`](super::Delivery) resolves on it. A slow look in the store is kept as a safety
//! net for a notice lost while the listening connection was down.
//!
//! This replaced looks in the store every 50 to 250 ms while the waiter waited
//! (docs/scaling.md, "The scale-out benchmark"): each awaited send of a room whose outbox was
//! worked elsewhere waited for the next look.

use std::time::Duration;

use ruma::OwnedEventId;

use super::Waiters;
use crate::{
    Error, Result, Store,
    store::{Notice, OutboxState},
    sync::MutexExt,
};

/// How often a waiter looks in the store for an outcome another process may have recorded
/// without its notice arriving. Only a safety net: the notice is the way, and a lost one
/// (the listening connection dropped and opened again) costs this long at most.
const SAFETY_LOOK: Duration = Duration::from_secs(2);

/// What a [`Delivery`](super::Delivery) needs to learn an outcome another process records.
pub(crate) struct Remote {
    pub(super) store: Store,
    /// This process's owner id, when the outbox row does not name it as the waiter yet (a
    /// queued request, awaited later): it is named when the delivery is awaited.
    pub(super) register: Option<String>,
}

/// The outcome of request `seq` once another process records it: the waiter registers if it
/// has not (so the sender tells it), then looks in the store now and then in case the notice
/// that resolves the delivery in memory was lost.
pub(super) async fn outcome_elsewhere(remote: Remote, seq: i64) -> Result<Option<OwnedEventId>> {
    if let Some(owner) = &remote.register {
        match remote.store.outbox_await(seq, owner).await {
            // Still pending: the sender reads the waiter in the statement that records the
            // outcome, so it tells this process.
            Ok(true) => {}
            // Already recorded (by this process, the in-memory outcome wins the race, or by
            // another), or gone.
            Ok(false) => {
                if let Some(outcome) = look(&remote.store, seq).await {
                    return outcome;
                }
            }
            Err(error) => {
                tracing::debug!(%error, seq, "could not say this process awaits a request")
            }
        }
    }
    loop {
        tokio::time::sleep(SAFETY_LOOK).await;
        if let Some(outcome) = look(&remote.store, seq).await {
            return outcome;
        }
    }
}

/// Names this process (`owner`) the waiter of requests `seqs`, which it awaits (or may) and
/// whose queue its worker lets go: whoever sends them now tells it. One whose outcome is
/// recorded already (by a process that took the queue as this one lost it) is read now.
pub(super) async fn name_waiter(store: &Store, owner: &str, waiters: &Waiters, seqs: Vec<i64>) {
    for seq in seqs {
        match store.outbox_await(seq, owner).await {
            Ok(true) => {}
            Ok(false) => {
                let Some(outcome) = look(store, seq).await else {
                    continue;
                };
                if let Some(tx) = waiters.lock_unpoisoned().waiters.remove(&seq) {
                    let _ = tx.send(outcome);
                }
            }
            // The waiter's look in the store finds the outcome, a little later.
            Err(error) => {
                tracing::debug!(%error, seq, "could not say this process awaits a request")
            }
        }
    }
}

/// The outcome of `seq` as the store has it; `None` while it is pending (or unreadable).
async fn look(store: &Store, seq: i64) -> Option<Result<Option<OwnedEventId>>> {
    match store.outbox_state(seq).await {
        Ok(Some((OutboxState::Sent, event_id, _))) => {
            Some(Ok(event_id.and_then(|id| OwnedEventId::try_from(id).ok())))
        }
        Ok(Some((OutboxState::Failed, _, error))) => Some(Err(Error::Other(
            error.unwrap_or_else(|| "the request failed".into()),
        ))),
        Ok(Some((OutboxState::Pending, ..))) => None,
        Ok(None) => Some(Err(Error::Other(
            "the request is no longer in the outbox".into(),
        ))),
        Err(error) => {
            tracing::debug!(%error, seq, "could not look for a request's outcome");
            None
        }
    }
}

/// Records the outcome of request `seq`, sent by this process (`owner`), and tells the process
/// that awaits it, if another does: one notice per outcome someone else awaits.
pub(super) async fn record_outcome(
    store: &Store,
    owner: &str,
    seq: i64,
    outcome: std::result::Result<Option<&str>, &str>,
) -> Result<()> {
    let (state, event_id, error) = match outcome {
        Ok(event_id) => (OutboxState::Sent, event_id, None),
        Err(error) => (OutboxState::Failed, None, Some(error)),
    };
    let waiter = store.outbox_finish(seq, state, event_id, error).await?;
    if let Some(waiter) = waiter.filter(|waiter| waiter != owner) {
        let notice = Notice::Outcome {
            waiter,
            seq,
            event_id: event_id.map(ToOwned::to_owned),
            failed: error.is_some(),
        };
        store.announce(&notice).await;
    }
    Ok(())
}

/// Resolves the waiter in this process (`owner`) that `notice` names, if any. A failure's
/// error is read from the store: a notice carries no long text.
pub(crate) fn wake_waiter(store: &Store, owner: &str, waiters: &Waiters, notice: &Notice) {
    let Notice::Outcome {
        waiter,
        seq,
        event_id,
        failed,
    } = notice
    else {
        return;
    };
    if waiter != owner {
        return;
    }
    // Nobody here may await it any more (the delivery was dropped).
    let Some(tx) = waiters.lock_unpoisoned().waiters.remove(seq) else {
        return;
    };
    if *failed {
        let (store, seq) = (store.clone(), *seq);
        tokio::spawn(async move {
            let outcome = look(&store, seq).await.unwrap_or_else(|| {
                Err(Error::Other("the request failed in another process".into()))
            });
            let _ = tx.send(outcome);
        });
    } else {
        let event_id = event_id
            .as_deref()
            .and_then(|id| OwnedEventId::try_from(id).ok());
        let _ = tx.send(Ok(event_id));
    }
}

#[cfg(test)]
mod tests;
