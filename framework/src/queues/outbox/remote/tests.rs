//! Two processes on one PostgreSQL database: one awaits requests the other sends.
#![allow(clippy::unwrap_used)] // A failed unwrap is the test failing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use super::*;
use crate::queues::outbox::{Delivery, Waiting};

/// A store on `url` whose listening connection is open (its first word is `Missed`), and its
/// notices.
async fn listening(url: &str) -> (Store, tokio::sync::broadcast::Receiver<Notice>) {
    let store = Store::connect(url).await.unwrap();
    let mut notices = store.notices().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), notices.recv()).await;
    assert!(matches!(first, Ok(Ok(Notice::Missed))), "{first:?}");
    (store, notices)
}

/// Pushes a request of `waiter`'s (if any) into process `store`'s outbox.
async fn push(store: &Store, waiter: Option<&str>) -> i64 {
    store
        .outbox_push("as", "!r:x", "@u:x", None, "{}", waiter)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_outcome_another_process_records_wakes_its_waiter_at_once_with_one_notice() {
    let url = trestle_postgres_harness::fresh_database().await;
    let (a, mut a_notices) = listening(&url).await;
    let (b, _) = listening(&url).await;
    // A third process, which awaits nothing, counts every outcome notice on the channel.
    let (_c, mut c_notices) = listening(&url).await;
    let outcome_notices = Arc::new(AtomicUsize::new(0));
    let counted = outcome_notices.clone();
    tokio::spawn(async move {
        while let Ok(notice) = c_notices.recv().await {
            if matches!(notice, Notice::Outcome { .. }) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // Process `a`: its waiters, resolved by the notices it hears.
    let waiters: Arc<Waiters> = Arc::new(Mutex::new(Waiting::default()));
    let heard = waiters.clone();
    let a_store = a.clone();
    tokio::spawn(async move {
        while let Ok(notice) = a_notices.recv().await {
            wake_waiter(&a_store, "A", &heard, &notice);
        }
    });
    let delivery = |seq: i64, register: Option<&str>| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        waiters.lock().unwrap().waiters.insert(seq, tx);
        let remote = Remote {
            store: a.clone(),
            register: register.map(ToOwned::to_owned),
        };
        let delivery = Delivery {
            seq,
            rx,
            remote: Some(remote),
        };
        // Awaited from now on; resolved when, and with what.
        tokio::spawn(async move {
            let outcome = delivery.await;
            (Instant::now(), outcome)
        })
    };
    // `a` awaits a send (its row names `a`) and a queued request it awaits later (it names
    // itself when it starts to wait); nobody awaits a third, and `b` its own fourth.
    let awaited = push(&a, Some("A")).await;
    let queued = push(&a, None).await;
    let forgotten = push(&a, None).await;
    let own = push(&b, Some("B")).await;
    let awaited_delivery = delivery(awaited, None);
    let queued_delivery = delivery(queued, Some("A"));
    // Waiting long enough that the old looks (after 50, 150, 350 ms) would have looked twice
    // and next look 150 ms after the outcome.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `b` holds the room's outbox and sends all four.
    let sent_at = Instant::now();
    record_outcome(&b, "B", awaited, Ok(Some("$sent:x")))
        .await
        .unwrap();
    let (resolved_at, outcome) = awaited_delivery.await.unwrap();
    assert_eq!(outcome.unwrap().unwrap().as_str(), "$sent:x");
    let waited = resolved_at - sent_at;
    assert!(
        waited < Duration::from_millis(40),
        "resolved {waited:?} after the outcome was recorded"
    );
    let failed_at = Instant::now();
    record_outcome(&b, "B", queued, Err("M_FORBIDDEN: not in the room"))
        .await
        .unwrap();
    let (resolved_at, outcome) = queued_delivery.await.unwrap();
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("M_FORBIDDEN: not in the room"), "{error}");
    let waited = resolved_at - failed_at;
    assert!(
        waited < Duration::from_millis(40),
        "the failure reached its waiter {waited:?} after it was recorded"
    );
    record_outcome(&b, "B", forgotten, Ok(None)).await.unwrap();
    record_outcome(&b, "B", own, Ok(Some("$own:x")))
        .await
        .unwrap();
    // One notice per outcome another process awaited: none for the request nobody awaits,
    // nor for the one its sender awaits itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outcome_notices.load(Ordering::SeqCst), 2);
    assert!(waiters.lock().unwrap().waiters.is_empty());
}

#[tokio::test]
async fn a_queued_request_awaited_after_its_outcome_is_read_from_the_store() {
    let url = trestle_postgres_harness::fresh_database().await;
    let (a, _) = listening(&url).await;
    let seq = push(&a, None).await;
    record_outcome(&a, "B", seq, Ok(Some("$early:x")))
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let delivery = Delivery {
        seq,
        rx,
        remote: Some(Remote {
            store: a.clone(),
            register: Some("A".into()),
        }),
    };
    // Registering finds the outcome recorded: no wait for the safety look.
    let outcome = tokio::time::timeout(Duration::from_secs(1), delivery)
        .await
        .expect("resolved at once");
    assert_eq!(outcome.unwrap().unwrap().as_str(), "$early:x");
}
