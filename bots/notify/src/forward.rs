//! Outbound webhooks: a room's messages POSTed as JSON to a URL, signed with HMAC-SHA256.
//!
//! Each message is stored in `notify_deliveries` when it arrives (idempotently: handling the
//! same event again after a crash stores nothing new), and the `forward` service sends each
//! target's queue oldest first, one at a time, deleting a delivery only once the receiver
//! answered 2xx. A receiver that is down is retried with a growing back-off and gets every
//! message, in order, when it is back.

use std::time::Duration;

use sqlx::Row;
use tokio::task::JoinSet;
use trestle::{
    Appservice,
    fetch::{Fetcher, describe},
    router::{RawEvent, Room, State},
    ruma::{RoomId, UserId},
};

use crate::{
    Error, Manage, Result, Shared, answer, db, dm,
    hooks::split_word,
    render::{Message, escape_markdown},
    rounds, sign,
};

pub(crate) const USAGE: &str = "<add|list|remove> [url]";

/// The header naming the Matrix event a delivery carries.
pub const EVENT_ID_HEADER: &str = "x-trestle-event-id";

/// `!forward …`.
pub(crate) async fn command(m: Manage) -> Result<()> {
    m.shared.ready(&m.app).await?;
    let (url, _) = split_word(&m.rest);
    let outcome = match m.sub.as_str() {
        "add" => add(&m.app, &m.shared, &m.room, &m.sender, &url).await,
        "list" => list(&m.app, &m.room).await,
        "remove" => remove(&m.app, &m.room, &url).await,
        _ => Err(Error::Invalid(format!("Usage: !forward {USAGE}"))),
    };
    answer(&m.app, &m.room, outcome).await
}

async fn add(
    app: &Appservice,
    shared: &Shared,
    room: &RoomId,
    sender: &UserId,
    url: &str,
) -> Result<String> {
    check_target(&shared.fetcher, url).await?;
    let exists = sqlx::query("SELECT id FROM notify_forwards WHERE room_id = $1 AND url = $2")
        .bind(room.as_str())
        .bind(url)
        .fetch_optional(app.store().pool())
        .await?;
    if exists.is_some() {
        return Err(Error::Invalid("This room already forwards there.".into()));
    }
    let secret = db::random_secret();
    sqlx::query(
        "INSERT INTO notify_forwards (id, room_id, url, secret, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(db::random_id(12))
    .bind(room.as_str())
    .bind(url)
    .bind(&secret)
    .bind(sender.as_str())
    .bind(db::now_ms())
    .execute(app.store().pool())
    .await?;
    let text = format!(
        "Messages of {room} are now sent to {url}, each signed with this secret:\n\n`{secret}`\n\nCheck the `X-Hub-Signature-256: sha256=<hex>` header: HMAC-SHA256 of the body with the secret."
    );
    dm::send_private(app, sender, &Message::markdown("m.notice", &text)).await?;
    Ok(format!(
        "From now on this room's messages are sent to {}; I sent you the signing secret in a direct message.",
        escape_markdown(url)
    ))
}

/// Refuses a target that deliveries could never reach: not an http(s) URL, or one whose
/// address (literal, or every address its name resolves to) the fetcher refuses. Were it
/// accepted, every delivery would be refused and retried forever.
async fn check_target(fetcher: &Fetcher, url: &str) -> Result<()> {
    let parsed = url::Url::parse(url)
        .map_err(|_| Error::Invalid("Give the full URL to send messages to.".into()))?;
    fetcher
        .check_destination(&parsed)
        .await
        .map_err(|e| Error::Invalid(format!("I cannot send there: {e}")))
}

async fn list(app: &Appservice, room: &RoomId) -> Result<String> {
    let rows = db::rows_of_room(
        app,
        "SELECT f.url, f.failures, f.last_error,
                (SELECT COUNT(*) FROM notify_deliveries d WHERE d.forward_id = f.id)
         FROM notify_forwards f WHERE f.room_id = $1 ORDER BY f.url",
        room.as_str(),
    )
    .await?;
    if rows.is_empty() {
        return Ok("This room forwards its messages nowhere.".into());
    }
    let mut out = String::from("This room's messages go to:");
    for row in rows {
        let url: String = row.get(0);
        let failures: i64 = row.get(1);
        let error: Option<String> = row.get(2);
        let pending: i64 = row.get(3);
        out.push_str(&format!("\n- {}", escape_markdown(&url)));
        if pending > 0 {
            out.push_str(&format!(" ({pending} waiting"));
            if failures > 0 {
                out.push_str(&format!(
                    ", {failures} failed attempts, last: {}",
                    escape_markdown(error.as_deref().unwrap_or("?"))
                ));
            }
            out.push(')');
        }
    }
    Ok(out)
}

async fn remove(app: &Appservice, room: &RoomId, url: &str) -> Result<String> {
    let removal = db::Removal {
        find: "SELECT id, url FROM notify_forwards WHERE room_id = $1 AND url = $2",
        children: "DELETE FROM notify_deliveries WHERE forward_id = $1",
        parent: "DELETE FROM notify_forwards WHERE id = $1",
    };
    db::remove(app, &removal, room.as_str(), url)
        .await?
        .ok_or_else(|| Error::Invalid("This room does not forward there.".into()))?;
    Ok(format!(
        "This room's messages are no longer sent to {}.",
        escape_markdown(url)
    ))
}

/// Every message in a room with forwards is queued for each of them.
pub(crate) async fn on_message(
    event: RawEvent,
    Room(room): Room,
    State(shared): State<Shared>,
    app: Appservice,
) -> Result<()> {
    shared.ready(&app).await?;
    let forwards: Vec<String> = sqlx::query("SELECT id FROM notify_forwards WHERE room_id = $1")
        .bind(room.as_str())
        .fetch_all(app.store().pool())
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if forwards.is_empty() {
        return Ok(());
    }
    let mut json: serde_json::Value = event.deserialize()?;
    let body = json["content"]["body"].as_str().unwrap_or("");
    // The bot's own management commands stay in the room.
    let prefix = &shared.settings.command_prefix;
    if ["forward", "webhook", "feed", "help"]
        .iter()
        .any(|c| crate::is_command(body, prefix, c))
    {
        return Ok(());
    }
    if let Some(object) = json.as_object_mut() {
        object.remove("unsigned");
    }
    let event_id = json["event_id"].as_str().unwrap_or_default().to_owned();
    let body = serde_json::to_string(&json)?;
    for forward in forwards {
        sqlx::query(
            "INSERT INTO notify_deliveries (forward_id, event_id, body, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (forward_id, event_id) DO NOTHING",
        )
        .bind(&forward)
        .bind(&event_id)
        .bind(&body)
        .bind(db::now_ms())
        .execute(app.store().pool())
        .await?;
    }
    shared.forward_wake.notify_one();
    Ok(())
}

/// The `forward` service: delivers queued messages until the appservice stops.
pub(crate) async fn run(app: Appservice, shared: Shared) -> trestle::Result<()> {
    shared.ready(&app).await.map_err(into_trestle)?;
    rounds::run_rounds(&app, "forward", &shared.forward_wake, || {
        deliver_due(&app, &shared)
    })
    .await;
    Ok(())
}

fn into_trestle(error: Error) -> trestle::Error {
    match error {
        Error::Trestle(e) => e,
        other => trestle::Error::Other(other.to_string()),
    }
}

/// Drains every target that is due, concurrently; returns how long until one is due again.
async fn deliver_due(app: &Appservice, shared: &Shared) -> Result<Duration> {
    let now = db::now_ms();
    let due: Vec<(String, String, String, i64)> = sqlx::query(
        "SELECT f.id, f.url, f.secret, f.failures FROM notify_forwards f
         WHERE f.next_attempt_at <= $1
           AND EXISTS (SELECT 1 FROM notify_deliveries d WHERE d.forward_id = f.id)",
    )
    .bind(now)
    .fetch_all(app.store().pool())
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    let mut tasks = JoinSet::new();
    for (id, url, secret, failures) in due {
        let (app, shared) = (app.clone(), shared.clone());
        tasks.spawn(async move {
            if let Err(error) = drain(&app, &shared, &id, &url, &secret, failures).await {
                tracing::warn!(forward = %id, %error, "forwarding stopped");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(f.next_attempt_at) FROM notify_forwards f
         WHERE EXISTS (SELECT 1 FROM notify_deliveries d WHERE d.forward_id = f.id)",
    )
    .fetch_one(app.store().pool())
    .await?;
    Ok(match next {
        Some(at) => Duration::from_millis((at - db::now_ms()).clamp(0, 60_000) as u64),
        None => Duration::from_secs(60),
    })
}

/// What a receiver's answer means for a delivery.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Try the same delivery again later.
    Retry(String),
    /// The receiver refused this delivery for good (4xx); it is dropped with a warning.
    Refused(String),
}

fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 425 | 429 => Outcome::Retry(format!("HTTP {status}")),
        400..=499 => Outcome::Refused(format!("HTTP {status}")),
        _ => Outcome::Retry(format!("HTTP {status}")),
    }
}

/// The wait after `failures` failed attempts in a row: 1 s doubling to `max`.
pub(crate) fn backoff(failures: i64, max: Duration) -> Duration {
    let exp = failures.clamp(1, 20) - 1;
    Duration::from_secs(1u64 << exp).min(max)
}

async fn drain(
    app: &Appservice,
    shared: &Shared,
    id: &str,
    url: &str,
    secret: &str,
    mut failures: i64,
) -> Result<()> {
    let pool = app.store().pool();
    loop {
        if app.is_stopping() {
            return Ok(());
        }
        let Some(row) = sqlx::query(
            "SELECT seq, event_id, body FROM notify_deliveries WHERE forward_id = $1
             ORDER BY seq LIMIT 1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(());
        };
        let (seq, event_id, body): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        let (outcome, retry_after) = match post(shared, url, secret, &event_id, &body).await {
            Ok((status, retry_after)) => (classify(status), retry_after),
            Err(error) => (Outcome::Retry(error.to_string()), None),
        };
        match outcome {
            Outcome::Delivered | Outcome::Refused(_) => {
                if let Outcome::Refused(why) = &outcome {
                    tracing::warn!(forward = %id, %event_id, %why, "receiver refused a message; dropped");
                }
                sqlx::query("DELETE FROM notify_deliveries WHERE seq = $1")
                    .bind(seq)
                    .execute(pool)
                    .await?;
                if failures > 0 {
                    failures = 0;
                    sqlx::query(
                        "UPDATE notify_forwards SET failures = 0, next_attempt_at = 0, last_error = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .execute(pool)
                    .await?;
                }
            }
            Outcome::Retry(why) => {
                failures += 1;
                let max = Duration::from_secs(shared.settings.forward_max_backoff_secs.max(1));
                // A receiver that says when to come back is believed, within the maximum.
                let wait = backoff(failures, max).max(retry_after.unwrap_or_default().min(max));
                tracing::info!(forward = %id, %why, failures, ?wait, "delivery failed; will retry");
                sqlx::query(
                    "UPDATE notify_forwards SET failures = $1, next_attempt_at = $2, last_error = $3 WHERE id = $4",
                )
                .bind(failures)
                .bind(db::now_ms() + wait.as_millis() as i64)
                .bind(why)
                .bind(id)
                .execute(pool)
                .await?;
                return Ok(());
            }
        }
    }
}

/// Sends one delivery; returns the status and the `Retry-After` the receiver asked for.
async fn post(
    shared: &Shared,
    url: &str,
    secret: &str,
    event_id: &str,
    body: &str,
) -> Result<(u16, Option<Duration>)> {
    let response = shared
        .fetcher
        .request(reqwest::Method::POST, url)?
        .header("content-type", "application/json")
        .header(
            sign::SIGNATURE_HEADER,
            sign::signature(secret, body.as_bytes()),
        )
        .header(EVENT_ID_HEADER, event_id)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| Error::Fetch(describe(&e)))?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((response.status().as_u16(), retry_after))
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use trestle::fetch::{FetchPolicy, FixedResolver};

    use super::*;

    fn fetcher(allow_private: bool) -> Fetcher {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let names = FixedResolver::new()
            .with("hooks.internal.example", &[ip("127.0.0.1")])
            .with("hooks.example", &[ip("93.184.216.34")]);
        let policy = FetchPolicy {
            allow_private,
            ..FetchPolicy::default()
        };
        Fetcher::with_resolver(policy, Arc::new(names)).unwrap()
    }

    async fn refusal(fetcher: &Fetcher, url: &str) -> String {
        match check_target(fetcher, url).await {
            Err(Error::Invalid(reason)) => reason,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_target_whose_name_resolves_to_loopback_is_refused_with_the_reason() {
        let strict = fetcher(false);
        assert_eq!(
            refusal(&strict, "http://hooks.internal.example:8080/in").await,
            "I cannot send there: hooks.internal.example resolves to 127.0.0.1, a private or \
             local address, which may not be fetched"
        );
        assert!(
            refusal(&strict, "http://localhost/in")
                .await
                .contains("private or local address")
        );
        assert!(
            refusal(&strict, "ftp://hooks.example/")
                .await
                .contains("only http")
        );
        assert!(
            refusal(&strict, "hooks.example/in")
                .await
                .contains("full URL")
        );
        check_target(&strict, "https://hooks.example/in")
            .await
            .unwrap();
        // allow_private_addresses: true lets it through, as deliveries would.
        check_target(&fetcher(true), "http://hooks.internal.example:8080/in")
            .await
            .unwrap();
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204), Outcome::Delivered);
        assert!(matches!(classify(503), Outcome::Retry(_)));
        assert!(matches!(classify(429), Outcome::Retry(_)));
        assert!(matches!(classify(404), Outcome::Refused(_)));
    }

    #[test]
    fn back_off_doubles_to_the_maximum() {
        let max = Duration::from_secs(600);
        let waits: Vec<u64> = (1..=12).map(|f| backoff(f, max).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }
}
