//! Synapse on SQLite numbers appservice transactions again after a restart: its counter starts
//! from the highest transaction still pending in `application_services_txns`, or from 0 when none
//! is, since it deletes each transaction once the appservice accepts it (element-hq/synapse#14556).
//! A restart with transactions pending numbers on above them, and resends them (same id, same
//! events, a different `age`); a restart with none pending sends ids 1, 2, … again, which the
//! appservice has already seen, with other events in them. Either way every command must be
//! answered exactly once.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::{UserClient, free_port},
    txn_proxy::{Delivery, TxnProxy},
};

const BOT: &str = "@echo:localhost";

/// Sends `!echo <label> <i>` for each i, adding the texts the bot should echo to `texts`;
/// returns the event ids of the commands.
async fn send_commands(
    user: &UserClient,
    room: &str,
    label: &str,
    n: usize,
    texts: &mut Vec<String>,
) -> Vec<String> {
    let mut events = Vec::new();
    for i in 0..n {
        let text = format!("{label} {i}");
        events.push(user.send_text(room, &format!("!echo {text}")).await);
        texts.push(text);
    }
    events
}

/// How often the bot said each body in the room.
async fn replies(user: &UserClient, room: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in user.messages(room).await {
        if event["type"] == "m.room.message" && event["sender"] == BOT {
            let body = event["content"]["body"].as_str().unwrap_or_default();
            *counts.entry(body.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Waits until the bot has answered every one of `texts`, then asserts it answered each exactly
/// once and said nothing else.
async fn assert_answered_once(
    harness: &Harness,
    proxy: &TxnProxy,
    user: &UserClient,
    room: &str,
    texts: &[String],
) {
    let started = Instant::now();
    loop {
        let counts = replies(user, room).await;
        if texts.iter().all(|t| counts.contains_key(t)) || started.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A duplicate would come from work still queued: let it finish before counting.
    harness.app.idle().await;
    let counts = replies(user, room).await;
    let missing: Vec<&String> = texts.iter().filter(|t| !counts.contains_key(*t)).collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let unexpected: Vec<&String> = counts.keys().filter(|b| !texts.contains(b)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "every command answered exactly once; never answered: {missing:?}; answered more than \
         once: {twice:?}; unexpected: {unexpected:?}\ntransactions pushed, in order:\n{}",
        pushed(proxy)
    );
}

/// Waits until Synapse has put each event in a transaction (pending or delivered): returns the
/// pending ones.
async fn wait_until_queued(harness: &Harness, proxy: &TxnProxy, events: &[String]) -> Vec<i64> {
    let started = Instant::now();
    loop {
        let pending = harness
            .synapse
            .pending_appservice_txns(&harness.registration.id)
            .await;
        let seen: HashSet<&String> = pending.iter().flat_map(|(_, events)| events).collect();
        let delivered = proxy.deliveries();
        let delivered: HashSet<&String> = delivered.iter().flat_map(|d| &d.event_ids).collect();
        if events
            .iter()
            .all(|e| seen.contains(e) || delivered.contains(e))
        {
            return pending.into_iter().map(|(id, _)| id).collect();
        }
        assert!(
            started.elapsed() < WAIT,
            "Synapse never put all of {events:?} in a transaction; pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until Synapse has no transaction pending and has pushed nothing for two seconds.
async fn wait_until_quiet(harness: &Harness, proxy: &TxnProxy) {
    let started = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    loop {
        harness.app.idle().await;
        let pending = harness
            .synapse
            .pending_appservice_txns(&harness.registration.id)
            .await;
        let pushed = proxy.deliveries().len();
        if pushed != last.0 || !pending.is_empty() {
            last = (pushed, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "Synapse kept transactions pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn restart(harness: &mut Harness) {
    harness.synapse.restart().await;
    // Synapse reaches the appservice again. (The ping would also end the back-off for one it
    // marked down, but its scheduler only starts with the first new event after a start.)
    harness
        .synapse
        .wait_for_appservice(
            &harness.registration.id,
            &harness.registration.as_token,
            WAIT,
        )
        .await;
}

/// One line per transaction pushed: id, event ids, status answered.
fn pushed(proxy: &TxnProxy) -> String {
    let lines: Vec<String> = proxy
        .deliveries()
        .iter()
        .map(|d| format!("  {} {:?} -> {}", d.txn_id, d.event_ids, d.status))
        .collect();
    lines.join("\n")
}

/// Transaction ids Synapse used again for other events, with the event ids of each use.
fn reused_ids(deliveries: &[Delivery]) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut uses: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for d in deliveries {
        let seen = uses.entry(d.txn_id.clone()).or_default();
        if !seen.contains(&d.event_ids) {
            seen.push(d.event_ids.clone());
        }
    }
    uses.retain(|_, contents| contents.len() > 1);
    uses
}

#[tokio::test]
async fn commands_are_answered_once_when_synapse_restarts_and_reuses_transaction_ids() {
    let mut registration = trestle_echo::PLUGIN.generate_registration(None, "localhost");
    let app_port = free_port();
    let proxy = TxnProxy::start(format!("http://127.0.0.1:{app_port}")).await;
    let mut harness = Harness::start_at(
        &mut registration,
        trestle_echo::router(),
        "",
        app_port,
        proxy.url().to_owned(),
    )
    .await;
    let (user, room) = harness.user_in_room_with_bot("rita").await;

    let mut texts = Vec::new();
    send_commands(&user, &room, "first", 5, &mut texts).await;
    assert_answered_once(&harness, &proxy, &user, &room, &texts).await;

    // Transactions pending at a restart: the appservice gets them, Synapse gets 500 and keeps
    // them, retrying the oldest with back-off and queueing the rest.
    proxy.fail_after_forwarding(true);
    let events = send_commands(&user, &room, "pending", 3, &mut texts).await;
    let pending = wait_until_queued(&harness, &proxy, &events).await;
    harness.synapse.stop();
    assert!(
        !pending.is_empty(),
        "transactions pending while Synapse is down"
    );
    proxy.fail_after_forwarding(false);
    restart(&mut harness).await;
    // Synapse starts retrying pending transactions only once a new event comes in; it numbers
    // the new ones on from the highest pending.
    send_commands(&user, &room, "resumed", 3, &mut texts).await;
    assert_answered_once(&harness, &proxy, &user, &room, &texts).await;

    // A restart with nothing pending: Synapse numbers from 1 again, ids the appservice has seen.
    wait_until_quiet(&harness, &proxy).await;
    let before = proxy.deliveries().len();
    harness.synapse.stop();
    restart(&mut harness).await;
    let events = send_commands(&user, &room, "after", 5, &mut texts).await;
    wait_until_queued(&harness, &proxy, &events).await;

    let deliveries = proxy.deliveries();
    let reused = reused_ids(&deliveries);
    assert!(
        deliveries[before..]
            .iter()
            .any(|d| reused.contains_key(&d.txn_id)),
        "after the restart Synapse reused a transaction id for other events (else this test \
         proves nothing); reused: {reused:?}\ntransactions pushed, in order:\n{}",
        pushed(&proxy)
    );
    assert_answered_once(&harness, &proxy, &user, &room, &texts).await;
}
