use super::*;

fn matrix(status: u16, errcode_json: serde_json::Value) -> Error {
    let response = http::Response::builder()
        .status(status)
        .body(serde_json::to_vec(&errcode_json).unwrap())
        .unwrap();
    let error = <ruma::api::error::Error as ruma::api::EndpointError>::from_http_response(response);
    Error::from(error)
}

#[test]
fn rate_limits_wait_exactly_what_the_homeserver_asked() {
    let e = matrix(
        429,
        serde_json::json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow", "retry_after_ms": 1234}),
    );
    assert_eq!(
        retry_policy(&e, 5),
        Retry::After(Duration::from_millis(1234))
    );
}

#[test]
fn server_errors_retry_and_client_errors_give_up() {
    let e = matrix(
        502,
        serde_json::json!({"errcode": "M_UNKNOWN", "error": "bad gateway"}),
    );
    assert!(matches!(retry_policy(&e, 0), Retry::After(_)));
    let e = matrix(
        403,
        serde_json::json!({"errcode": "M_FORBIDDEN", "error": "no"}),
    );
    assert_eq!(retry_policy(&e, 0), Retry::GiveUp);
    let e = matrix(
        400,
        serde_json::json!({"errcode": "M_BAD_JSON", "error": "no"}),
    );
    assert_eq!(retry_policy(&e, 0), Retry::GiveUp);
}

#[test]
fn backoff_grows_to_a_cap_with_jitter() {
    for attempt in 0..20 {
        let d = backoff(attempt);
        let base = (250u64 << attempt.min(10)).min(30_000);
        assert!(
            d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base),
            "{attempt}: {d:?}"
        );
    }
    assert!(backoff(30) <= Duration::from_secs(30));
}

#[test]
fn ops_survive_the_store() {
    let op = Op::Message {
        room_id: "!r:x".try_into().unwrap(),
        event_type: "m.room.message".into(),
        content: serde_json::value::to_raw_value(&serde_json::json!({"body": "hi"})).unwrap(),
        txn_id: "t1".into(),
        ts: Some(5),
    };
    let json = serde_json::to_string(&op).unwrap();
    let back: Op = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert_eq!(back.queue_key(&"@u:x".try_into().unwrap()), "!r:x");
    let profile = Op::DisplayName { name: "N".into() };
    assert_eq!(profile.queue_key(&"@u:x".try_into().unwrap()), "user:@u:x");
}

#[tokio::test]
async fn transaction_ids_repeat_for_the_same_inbox_item() {
    let first = with_send_scope(Arc::from("t1.0"), async { (next_txn_id(), next_txn_id()) }).await;
    let again = with_send_scope(Arc::from("t1.0"), async { (next_txn_id(), next_txn_id()) }).await;
    assert_eq!(first, again);
    assert_ne!(first.0, first.1);
    assert_ne!(next_txn_id(), next_txn_id());
}

async fn outbox_rows(app: &crate::Appservice) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_awaited_send_on_an_idle_queue_skips_the_outbox_and_order_holds_either_way() {
    use crate::{
        Router,
        router::{Command, Room},
        testing::{MockHomeserver, deliver, text},
    };
    async fn say(cmd: Command, Room(room): Room, app: crate::Appservice) -> Result<()> {
        let bot = app.bot();
        match cmd.args.as_str() {
            "awaited" => {
                bot.send_text(&room, "one").await?;
            }
            _ => {
                // Queued without waiting, then awaited: the second must not overtake.
                drop(bot.send_text(&room, "two").queue().await?);
                bot.send_text(&room, "three").await?;
                drop(bot.send_text(&room, "four").queue().await?);
            }
        }
        Ok(())
    }
    let hs = MockHomeserver::start(serde_json::json!({}), serde_json::json!({})).await;
    let registration = trestle_registration::Registration::generate("test", None, "bot", "t_", "x");
    let app = crate::Appservice::builder(registration, hs.url.clone(), "x")
        .router(Router::new().command("say", say))
        .build()
        .await
        .unwrap();
    // The first scan has not run yet at this point in some runs; wait for it, so the
    // appservice is in its steady state.
    tokio::time::sleep(Duration::from_millis(50)).await;
    deliver(&app, vec![text("$1", "!r:x", "@u:x", "!say awaited")]).await;
    assert_eq!(hs.bodies(), ["one"]);
    assert_eq!(
        outbox_rows(&app).await,
        0,
        "the join and the send went out directly"
    );
    deliver(&app, vec![text("$2", "!r:x", "@u:x", "!say mixed")]).await;
    assert_eq!(hs.bodies(), ["two", "three", "four"]);
    assert!(outbox_rows(&app).await >= 2, "queued sends are stored");
}

/// An appservice on a fresh PostgreSQL database (at the URL returned), sending to a
/// homeserver that accepts everything, with `router`.
async fn on_postgres(
    router: crate::Router,
) -> (crate::Appservice, crate::testing::MockHomeserver, String) {
    let url = trestle_postgres_harness::fresh_database().await;
    let hs =
        crate::testing::MockHomeserver::start(serde_json::json!({}), serde_json::json!({})).await;
    let registration = trestle_registration::Registration::generate("test", None, "bot", "t_", "x");
    let app = crate::Appservice::builder(registration, hs.url.clone(), "x")
        .router(router)
        .store(crate::Store::connect(&url).await.unwrap())
        .build()
        .await
        .unwrap();
    (app, hs, url)
}

/// The waiter each outbox row of `body` names.
async fn waiters_of(app: &crate::Appservice, body: &str) -> Vec<Option<String>> {
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT op, waiter FROM outbox ORDER BY seq")
            .fetch_all(app.store().pool())
            .await
            .unwrap();
    rows.into_iter()
        .filter(|(op, _)| op.contains(&format!("\"body\":\"{body}\"")))
        .map(|(_, waiter)| waiter)
        .collect()
}

#[tokio::test]
async fn a_queued_request_awaited_while_its_rooms_outbox_is_held_here_names_no_waiter() {
    use crate::router::{Command, Room};
    async fn say(cmd: Command, Room(room): Room, app: crate::Appservice) -> Result<()> {
        let bot = app.bot();
        if cmd.args == "held" {
            // Joins and sends through the outbox, whose worker then keeps the room's lease
            // a moment, idle: what is queued now is this process's to send.
            bot.send_text(&room, "one").await?;
            bot.send_text(&room, "two").queue().await?.await?;
        } else {
            bot.join(&room).await?;
            // Long enough for the worker to give the room's lease back, idle: another
            // process may take the room and send what is queued now.
            tokio::time::sleep(Duration::from_millis(800)).await;
            bot.send_text(&room, "cold").queue().await?.await?;
        }
        Ok(())
    }
    let (app, hs, _) = on_postgres(crate::Router::new().command("say", say)).await;
    let owner = app.queues().core.owner.clone();
    crate::testing::deliver(
        &app,
        vec![crate::testing::text("$1", "!r:x", "@u:x", "!say held")],
    )
    .await;
    assert_eq!(hs.bodies(), ["one", "two"]);
    // Told in memory by the worker that sent it: no `UPDATE` named the waiter.
    assert_eq!(waiters_of(&app, "two").await, [None]);
    crate::testing::deliver(
        &app,
        vec![crate::testing::text("$2", "!s:x", "@u:x", "!say cold")],
    )
    .await;
    assert_eq!(hs.bodies(), ["cold"]);
    assert_eq!(waiters_of(&app, "cold").await, [Some(owner)]);
}

#[tokio::test]
async fn a_request_awaited_unnamed_is_named_when_the_worker_lets_its_room_go() {
    let (app, _hs, url) = on_postgres(crate::Router::new()).await;
    let queues = app.queues();
    let (store, owner) = (app.store(), queues.core.owner.clone());
    // Stored under another appservice's id, so that this one's worker, which scans for its
    // own, does not send it before the test lets the room go.
    let seq = store
        .outbox_push("unscanned", "!r:x", "@bot:x", None, "{}", None)
        .await
        .unwrap();
    // Awaited while this process's worker held the room: unnamed.
    let delivery = queues.outbox.lane().delivery(seq, "!r:x", false, || true);
    let waiting = tokio::spawn(delivery.into_future());
    let waiter: Option<String> = sqlx::query_scalar("SELECT waiter FROM outbox WHERE seq = $1")
        .bind(seq)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(waiter, None);
    // The worker lets the room go before it sent the request: this process is named, and
    // the process that sends it instead tells it at once.
    queues.outbox.lane().leaving("!r:x").await;
    let waiter: Option<String> = sqlx::query_scalar("SELECT waiter FROM outbox WHERE seq = $1")
        .bind(seq)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(waiter, Some(owner));
    let other = crate::Store::connect(&url).await.unwrap();
    remote::record_outcome(&other, "other", seq, Ok(Some("$sent:x")))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(1), waiting).await;
    assert_eq!(
        outcome.unwrap().unwrap().unwrap().unwrap().as_str(),
        "$sent:x"
    );
}
