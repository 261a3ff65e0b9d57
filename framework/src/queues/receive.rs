//! From a received transaction to its items' workers.
//!
//! On a SQLite file a transaction is appended to the store's journal and answered; a task of
//! its own ([`commit_forever`]) commits the journal to the inbox in batches, skips ids seen
//! before, and only then hands the items to their rooms' workers. The homeserver waits for the
//! append only, one `write`, instead of a SQLite commit (`store/journal.rs` says why). Elsewhere
//! (PostgreSQL, an in-memory store) the transaction is committed before it is answered.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use super::{
    core::Core,
    inbox::{InboxLane, Pending},
    lanes::Lanes,
    writeback::Write,
};
use crate::{
    Result,
    store::{InboxItem, NewInboxItem, Parsed, TxnName},
    transaction::{Incoming, TransactionBody},
};

/// Where a transaction comes from, which decides what names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Pushed by the homeserver: named by its id and a digest of its contents, since an id may
    /// come again with other contents; an event stored before is not stored again.
    Homeserver,
    /// Given back by `Appservice::redeliver`: named by its key alone, and its events stored
    /// again, which is the point.
    Redelivery,
}

mod stall;

/// Stores a transaction and has its items handled. Returns `false` when the transaction is
/// known to have been seen before (nothing is stored then); through the journal that is known
/// only when it is committed, and this returns `true` unless `wait_for_commit`.
pub(super) async fn receive(
    core: &Core,
    inbox: &Arc<Lanes<InboxLane>>,
    txn_id: &str,
    body: TransactionBody,
    wait_for_commit: bool,
    delivery: Source,
) -> Result<bool> {
    // Before anything is taken: a transaction refused by a crash meanwhile was never answered.
    if let Some(waited) = core.admission.wait(|| inbox.busy() == 0).await {
        core.metrics.answer_delayed(waited);
    }
    let parsed = body.into_items(txn_id);
    let mut items: Vec<_> = parsed
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| NewInboxItem::from_incoming(item, i))
        .collect();
    let digest = match delivery {
        Source::Homeserver => crate::store::digest(&items),
        Source::Redelivery => {
            for item in &mut items {
                item.event_id = None;
            }
            String::new()
        }
    };
    let txn = TxnName {
        id: txn_id,
        digest: &digest,
    };
    if core.mode.journaled() && !items.is_empty() {
        core.store.journal_room().await;
        // A larger transaction is answered once it is committed, as without the journal:
        // answered at once, transactions of 50 ran ahead of their handlers until each room's
        // backlog outgrew its worker's memory and was read back, slower and much later
        // (docs/benchmarks.md, "Why the receive path's constants are what they are").
        let wait_for_commit = wait_for_commit || items.len() > ANSWER_AT_ONCE_UP_TO;
        let (tell, committed) = match wait_for_commit {
            true => {
                let (tell, committed) = tokio::sync::oneshot::channel();
                (Some(tell), Some(committed))
            }
            false => (None, None),
        };
        let parsed = Parsed {
            items: parsed.items,
            skipped: parsed.skipped,
            committed: tell,
        };
        core.store
            .append_to_journal(&core.appservice_id, txn, items, parsed)?;
        let Some(committed) = committed else {
            return Ok(true);
        };
        core.store.journal_hurry();
        // Dropped unanswered only with the appservice; the record stays in the journal.
        return committed.await.map_err(|_| {
            crate::Error::Other("stopped before the transaction was committed".into())
        });
    }
    // Items of one room must reach its worker in the order they were committed.
    let _order = core.receiving.lock().await;
    // Done marks written behind ride along with the commit this transaction needs anyway
    // (one commit instead of two when events arrive one at a time). There are some only
    // where the mode writes them behind: elsewhere a worker writes its own before it lets
    // go of a room.
    let done = core.writeback.take_done();
    let received = core
        .store
        .receive_and_mark_done(&core.appservice_id, txn, items, &done)
        .await;
    if received.is_err() && !done.is_empty() {
        core.writeback.extend(done.into_iter().map(Write::Done));
    }
    let Some(received) = received? else {
        return Ok(false);
    };
    if received.reused {
        reused_id(core, txn_id);
    }
    core.metrics.transaction(parsed.skipped);
    offer(core, inbox, received.items, parsed.items);
    Ok(true)
}

/// Says that the homeserver used `txn_id` again for other contents.
fn reused_id(core: &Core, txn_id: &str) {
    core.metrics.reused_id();
    tracing::warn!(
        txn_id,
        "the homeserver sent a transaction id it had used before, with other events; storing \
         and handling it as a new transaction (Synapse on SQLite starts its appservice \
         transaction ids again after a restart: element-hq/synapse#14556)"
    );
}

/// Hands committed items to their rooms' workers, in commit order. `stored` and `parsed` are in
/// the transaction's order; a `None` in `stored` is an event that came before in another
/// transaction, not handled again. Items handed over in memory go without their stored JSON
/// (the parsed item holds it; up to 256 items a room wait in memory).
fn offer(
    core: &Core,
    inbox: &Arc<Lanes<InboxLane>>,
    stored: Vec<Option<InboxItem>>,
    parsed: Vec<Incoming>,
) {
    let mut repeated = 0;
    let mut pending: Vec<Pending> = stored
        .into_iter()
        .zip(parsed)
        .filter_map(|(item, incoming)| {
            let Some(mut item) = item else {
                repeated += 1;
                if let Incoming::Timeline(event) = &incoming {
                    tracing::info!(event_id = %event.event_id, "event received before; not handling it again");
                }
                return None;
            };
            item.payload = String::new();
            Some(Pending {
                item,
                parsed: Some(incoming),
            })
        })
        .collect();
    if repeated > 0 {
        core.metrics.repeated_events(repeated);
    }
    core.admission.admit(pending.len());
    pending.sort_by_key(|p| p.item.seq);
    let mut by_queue: HashMap<String, Vec<Pending>> = HashMap::new();
    for p in pending {
        // The key is copied once a room, not once an item.
        match by_queue.get_mut(&p.item.queue_key) {
            Some(items) => items.push(p),
            None => {
                by_queue.insert(p.item.queue_key.clone(), vec![p]);
            }
        }
    }
    for (queue, items) in by_queue {
        inbox.offer_items(&queue, items);
    }
}

/// The most items a transaction may have to be answered as soon as it is in the journal.
const ANSWER_AT_ONCE_UP_TO: usize = 4;

/// How long the first record after a lull waits for others to be committed with it. At one
/// event per transaction a commit each cost more than the rest of the work together
/// (docs/benchmarks.md, "Why the receive path's constants are what they are"); handling
/// starts later by as much.
const GATHER: Duration = Duration::from_millis(1);

/// Commits the journal's records as they come, until the appservice is dropped. While one
/// batch commits the next gathers, so batches grow with the load. Done marks written behind
/// ride along. Failures are retried; a few in a row stall receiving (`receive/stall.rs`).
pub(super) async fn commit_forever(weak: Weak<Core>, inbox: Arc<Lanes<InboxLane>>) {
    let mut stall = stall::Stall::default();
    loop {
        let Some(core) = weak.upgrade() else { return };
        let Some(batch) = core.store.take_journal() else {
            if let Some(error) = core.store.journal_unemptied() {
                // No batch until the last one's file is emptied: `take_journal` tries again.
                stall.failed(&core, stall::emptying_failed(&core, &error));
                let backoff = stall.backoff();
                drop(core);
                tokio::time::sleep(backoff).await;
                continue;
            }
            stall.succeeded(&core);
            // Waits holding only a weak reference, so a dropped appservice ends this task.
            let store = core.store.clone();
            drop(core);
            // Batches kept with items not yet handled are settled after a lull, as the next
            // commit would have settled them (`store/journal.rs`).
            let keeps = store.journal_keeps_batches();
            if keeps
                && store.journal_out_of_files()
                && let Err(error) = store.settle_journal().await
            {
                // Records wait, yet no batch was taken: every other file is kept or not
                // emptied, and settling the kept ones frees theirs.
                tracing::warn!(%error, "could not write the waiting rows of the inbox journal's kept batches");
            }
            let lull = match keeps {
                true => crate::store::SETTLE_AFTER,
                false => Duration::from_secs(1),
            };
            if store.journal_appended(lull).await {
                // Woken by the first record after a lull: a moment more gathers a batch when
                // transactions come one at a time, instead of one commit for each. Not when a
                // receiver waits for the commit.
                store.journal_gather(GATHER).await;
            } else if keeps && let Err(error) = store.settle_journal_due().await {
                tracing::warn!(%error, "could not write the waiting rows of the inbox journal's kept batches");
            }
            continue;
        };
        let done = core.writeback.take_done();
        let committed = loop {
            match core.store.commit_journal(&batch, &done).await {
                Ok(committed) => break committed,
                Err(error) => {
                    // The records stay in the journal's file meanwhile: a crash loses nothing.
                    stall.failed(&core, stall::commit_failed(&core, &error));
                    tokio::time::sleep(stall.backoff()).await;
                }
            }
        };
        match core.store.journal_unemptied() {
            Some(error) => stall.failed(&core, stall::emptying_failed(&core, &error)),
            None => stall.succeeded(&core),
        }
        for mut record in batch.records {
            let Some(mut parsed) = record.parsed.take() else {
                continue;
            };
            let new = committed.fresh.contains(&record.number);
            // Told after the items are offered, so that they count as in flight by the time
            // the homeserver is answered.
            let tell = parsed.committed.take();
            if new {
                if committed.reused.contains(&record.number) {
                    reused_id(&core, &record.txn_id);
                }
                core.metrics.transaction(parsed.skipped);
                let stored = crate::store::record_items(record, &committed.repeated_events);
                offer(&core, &inbox, stored, parsed.items);
            } else {
                tracing::debug!(
                    txn_id = record.txn_id,
                    "transaction already received; not handling it again"
                );
            }
            if let Some(tell) = tell {
                let _ = tell.send(new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{
        Appservice,
        testing::{MockHomeserver, text},
        transaction::TransactionBody,
    };

    /// Through the journal a transaction of a few events is answered once appended; a larger one
    /// once committed, so that answers do not run ahead of the handlers.
    #[tokio::test]
    async fn a_larger_transaction_is_answered_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = crate::Store::connect(&url).await.unwrap();
        let hs = MockHomeserver::start(json!({}), json!({})).await;
        let registration =
            trestle_registration::Registration::generate("t", None, "bot", "t_", "x");
        let app = Appservice::builder(registration, hs.url.clone(), "x")
            .store(store.clone())
            .build()
            .await
            .unwrap();
        assert!(app.queues().core.mode.journaled());
        let events: Vec<_> = (0..=super::ANSWER_AT_ONCE_UP_TO)
            .map(|i| text(&format!("${i}"), "!r:x", "@u:x", "hi"))
            .collect();
        let body: TransactionBody = serde_json::from_value(json!({ "events": events })).unwrap();
        assert!(
            app.queues()
                .receive("big", body, false, super::Source::Homeserver)
                .await
                .unwrap()
        );
        assert_eq!(
            store.journal_backlog(),
            0,
            "answered before it was committed"
        );
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
            .fetch_one(&mut *store.conn().await.unwrap())
            .await
            .unwrap();
        assert_eq!(stored, events.len() as i64);
        app.idle().await;
    }

    async fn hold(
        _event: crate::router::RawEvent,
        crate::router::State(gate): crate::router::State<std::sync::Arc<tokio::sync::Semaphore>>,
    ) {
        gate.acquire().await.unwrap().forget();
    }

    /// Past `max_in_flight` events handed to the handlers and not handled, the next
    /// transaction waits until they catch up; both through the journal and without it.
    #[tokio::test]
    async fn a_transaction_waits_while_the_handlers_are_too_far_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = format!("sqlite://{}", dir.path().join("store.db").display());
        for url in ["sqlite::memory:", file.as_str()] {
            let store = crate::Store::connect(url).await.unwrap();
            let hs = MockHomeserver::start(json!({}), json!({})).await;
            let registration =
                trestle_registration::Registration::generate("t", None, "bot", "t_", "x");
            let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
            let app = Appservice::builder(registration, hs.url.clone(), "x")
                .store(store.clone())
                .router(crate::Router::new().on(hold).with_state(gate.clone()))
                .max_in_flight(4)
                .build()
                .await
                .unwrap();
            let txn = |n: usize| -> TransactionBody {
                let events: Vec<_> = (0..3)
                    .map(|i| text(&format!("${n}.{i}"), &format!("!r{i}:x"), "@u:x", "hi"))
                    .collect();
                serde_json::from_value(json!({ "events": events })).unwrap()
            };
            let receive = |n: usize| {
                let app = app.clone();
                tokio::spawn(async move {
                    app.queues()
                        .receive(&n.to_string(), txn(n), true, super::Source::Homeserver)
                        .await
                        .unwrap()
                })
            };
            // 3, then 6 in flight: the second is taken, the third waits.
            receive(1).await.unwrap();
            receive(2).await.unwrap();
            let third = receive(3);
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            assert!(
                !third.is_finished(),
                "{url}: 6 events in flight against a bound of 4"
            );
            assert_eq!(app.events_in_flight(), 6, "{url}");
            gate.add_permits(2);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(
                !third.is_finished(),
                "{url}: 4 in flight is still the bound"
            );
            gate.add_permits(1);
            assert!(
                tokio::time::timeout(std::time::Duration::from_secs(2), third)
                    .await
                    .expect("taken once the handlers caught up")
                    .unwrap()
            );
            gate.add_permits(100);
            app.idle().await;
            assert_eq!(app.events_in_flight(), 0, "{url}");
        }
    }
}
