//! Encrypted events waiting for their room key, kept in the appservice's store so that neither a
//! late key nor a restart loses them.
//!
//! An event whose key is missing is remembered here by the key's session id and routed on
//! (still encrypted) so its room's queue moves on. When a room key with that session id arrives,
//! the event is offered to the handlers again through [`Appservice::redeliver`] and decrypts then.
//! An event still waiting after the key timeout is reported in the room instead, and forgotten.
//!
//! Each row moves `WAITING` → `REDELIVERING` or `REPORTING` → deleted; the middle state is a
//! claim, so a key and the timeout never both act on one event, and a row found in it after a
//! crash is finished by the sweep (a redelivery is idempotent by its key).

use serde_json::value::RawValue;
use sqlx::Row;
use trestle::{Appservice, Result, store::Migration, transaction::TimelineEvent};

const SCHEMA_V1: &str = "
CREATE TABLE crypto_waiting_events (
    event_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    state BIGINT NOT NULL
);
CREATE INDEX crypto_waiting_events_session ON crypto_waiting_events (session_id)";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sqlite: SCHEMA_V1,
    postgres: SCHEMA_V1,
}];

const WAITING: i64 = 0;
const REDELIVERING: i64 = 1;
const REPORTING: i64 = 2;

/// Creates the table if needed.
pub(crate) async fn ready(app: &Appservice) -> Result<()> {
    app.store().migrate("crypto", MIGRATIONS).await
}

/// The store's timestamp unit, so this table's columns agree with the framework's.
pub(crate) use trestle::store::now_ms;

/// The Megolm session an `m.room.encrypted` event was encrypted with.
pub(crate) fn session_id(event: &TimelineEvent) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        content: Content,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        session_id: String,
    }
    let event: Event = serde_json::from_str(event.json.get()).ok()?;
    Some(event.content.session_id)
}

/// Remembers `event` until a key of `session_id` arrives. Seen again (redelivered, and still
/// missing a later part of the session), it waits again under a new attempt number but keeps
/// the time it was first seen, so the timeout counts from then.
pub(crate) async fn remember(
    app: &Appservice,
    event: &TimelineEvent,
    session_id: &str,
) -> Result<()> {
    let (room_id, sender) = (event.room_id.as_str(), event.sender.as_str());
    let json = event.json.get();
    remember_json(
        app,
        event.event_id.as_str(),
        room_id,
        sender,
        json,
        session_id,
    )
    .await
}

async fn remember_json(
    app: &Appservice,
    event_id: &str,
    room_id: &str,
    sender: &str,
    json: &str,
    session_id: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO crypto_waiting_events
             (event_id, session_id, room_id, sender, event, first_seen, attempt, state)
         VALUES ($1, $2, $3, $4, $5, $6, 1, 0)
         ON CONFLICT (event_id) DO UPDATE
             SET attempt = crypto_waiting_events.attempt + 1, state = 0",
    )
    .bind(event_id)
    .bind(session_id)
    .bind(room_id)
    .bind(sender)
    .bind(json)
    .bind(now_ms())
    .execute(app.store().pool())
    .await?;
    Ok(())
}

/// Forgets a waiting event that decrypted after all. `false` if a key's arrival claimed it
/// first, which then redelivers it.
pub(crate) async fn take(app: &Appservice, event_id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM crypto_waiting_events WHERE event_id = $1 AND state = $2")
        .bind(event_id)
        .bind(WAITING)
        .execute(app.store().pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A remembered event.
pub(crate) struct Waiting {
    pub(crate) event_id: String,
    pub(crate) room_id: String,
    pub(crate) sender: String,
    pub(crate) event: String,
    attempt: i64,
    state: i64,
}

impl Waiting {
    pub(crate) fn is_waiting(&self) -> bool {
        self.state == WAITING
    }

    pub(crate) fn is_reporting(&self) -> bool {
        self.state == REPORTING
    }
}

const COLUMNS: &str = "event_id, room_id, sender, event, attempt, state";

fn waiting(row: &sqlx::any::AnyRow) -> Result<Waiting> {
    Ok(Waiting {
        event_id: row.try_get(0)?,
        room_id: row.try_get(1)?,
        sender: row.try_get(2)?,
        event: row.try_get(3)?,
        attempt: row.try_get(4)?,
        state: row.try_get(5)?,
    })
}

/// Room keys of `session_ids` arrived: their waiting events are handled again. Returns how many.
pub(crate) async fn keys_arrived(app: &Appservice, session_ids: &[String]) -> Result<usize> {
    let mut redelivered = 0;
    for session_id in session_ids {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM crypto_waiting_events WHERE session_id = $1 AND state = $2"
        )))
        .bind(session_id.as_str())
        .bind(WAITING)
        .fetch_all(app.store().pool())
        .await?;
        for row in &rows {
            let event = waiting(row)?;
            if claim_for_redelivery(app, &event).await? {
                redeliver(app, &event).await?;
                redelivered += 1;
            }
        }
    }
    Ok(redelivered)
}

/// Events past their timeout (`first_seen` before `cutoff`), and claimed ones a crash left
/// unfinished.
pub(crate) async fn overdue(app: &Appservice, cutoff: i64) -> Result<Vec<Waiting>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM crypto_waiting_events WHERE state <> $1 OR first_seen < $2"
    )))
    .bind(WAITING)
    .bind(cutoff)
    .fetch_all(app.store().pool())
    .await?;
    rows.iter().map(waiting).collect()
}

/// Moves a waiting event to `state`; `false` if something else claimed it first.
async fn claim(app: &Appservice, event: &Waiting, state: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE crypto_waiting_events SET state = $1
         WHERE event_id = $2 AND attempt = $3 AND state = $4",
    )
    .bind(state)
    .bind(event.event_id.as_str())
    .bind(event.attempt)
    .bind(WAITING)
    .execute(app.store().pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Claims a waiting event for the report.
pub(crate) async fn claim_for_report(app: &Appservice, event: &Waiting) -> Result<bool> {
    claim(app, event, REPORTING).await
}

/// Claims a waiting event for redelivery.
pub(crate) async fn claim_for_redelivery(app: &Appservice, event: &Waiting) -> Result<bool> {
    claim(app, event, REDELIVERING).await
}

/// Hands a claimed event to the inbox again (stored before this returns), then forgets it.
pub(crate) async fn redeliver(app: &Appservice, event: &Waiting) -> Result<()> {
    let json = RawValue::from_string(event.event.clone())?;
    let key = format!("e2ee.{}.{}", event.event_id, event.attempt);
    app.redeliver(&key, vec![json]).await?;
    tracing::info!(event_id = %event.event_id, "a late room key arrived; the event is handled again");
    forget(app, event).await
}

/// Deletes a claimed event's row (a newer attempt, waiting again, stays).
pub(crate) async fn forget(app: &Appservice, event: &Waiting) -> Result<()> {
    sqlx::query(
        "DELETE FROM crypto_waiting_events WHERE event_id = $1 AND attempt = $2 AND state <> $3",
    )
    .bind(event.event_id.as_str())
    .bind(event.attempt)
    .bind(WAITING)
    .execute(app.store().pool())
    .await?;
    Ok(())
}

/// How many events are waiting for a key.
pub(crate) async fn count(app: &Appservice) -> Result<i64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crypto_waiting_events")
        .fetch_one(app.store().pool())
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use trestle::{Router, Store};

    use super::*;

    const EVENT: &str = r#"{"type":"m.room.encrypted","room_id":"!r:x","sender":"@u:x",
        "event_id":"$e","origin_server_ts":1,"content":{"algorithm":"m.megolm.v1.aes-sha2",
        "ciphertext":"c","sender_key":"k","device_id":"D","session_id":"s1"}}"#;

    async fn app(store: Store) -> Appservice {
        let registration = trestle::Registration::generate("t", None, "bot", "t_", "x");
        let app = Appservice::builder(registration, "http://127.0.0.1:9", "x")
            .router(Router::new())
            .store(store)
            .build()
            .await
            .unwrap();
        ready(&app).await.unwrap();
        ready(&app).await.unwrap();
        app
    }

    async fn remember_e(app: &Appservice) {
        remember_json(app, "$e", "!r:x", "@u:x", EVENT, "s1")
            .await
            .unwrap();
    }

    /// One life of a waiting event on `store`: remembered twice (one row, a new attempt),
    /// taken back, remembered again, redelivered for its session's key only, overdue, claimed.
    async fn a_waiting_event_is_kept_until_its_key_or_its_timeout(store: Store) {
        let app = app(store).await;
        remember_e(&app).await;
        remember_e(&app).await;
        assert_eq!(count(&app).await.unwrap(), 1);
        assert!(take(&app, "$e").await.unwrap());
        assert!(!take(&app, "$e").await.unwrap());

        remember_e(&app).await;
        assert_eq!(keys_arrived(&app, &["other".to_owned()]).await.unwrap(), 0);
        assert_eq!(keys_arrived(&app, &["s1".to_owned()]).await.unwrap(), 1);
        assert_eq!(count(&app).await.unwrap(), 0);

        remember_e(&app).await;
        assert!(overdue(&app, 0).await.unwrap().is_empty());
        let late = overdue(&app, now_ms() + 1).await.unwrap();
        assert_eq!(late.len(), 1);
        assert!(late[0].is_waiting());
        assert_eq!(
            (late[0].room_id.as_str(), late[0].sender.as_str()),
            ("!r:x", "@u:x")
        );
        assert!(claim_for_report(&app, &late[0]).await.unwrap());
        // Claimed once only: the key's arrival now leaves it alone.
        assert!(!claim_for_redelivery(&app, &late[0]).await.unwrap());
        assert_eq!(keys_arrived(&app, &["s1".to_owned()]).await.unwrap(), 0);
        // A claimed row is found again by the sweep (as after a crash) until forgotten.
        let left = overdue(&app, 0).await.unwrap();
        assert!(left[0].is_reporting());
        forget(&app, &left[0]).await.unwrap();
        assert_eq!(count(&app).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn on_sqlite() {
        let store = Store::in_memory().await.unwrap();
        a_waiting_event_is_kept_until_its_key_or_its_timeout(store).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let url = trestle_tests::postgres::fresh_database().await;
        let store = Store::connect(&url).await.unwrap();
        a_waiting_event_is_kept_until_its_key_or_its_timeout(store).await;
    }
}
