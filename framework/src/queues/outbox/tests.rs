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
