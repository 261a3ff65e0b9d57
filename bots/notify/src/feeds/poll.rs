//! The `feeds` service: polls each feed when due, posts its new entries once each.
//!
//! "Once" across crashes: the entries of one poll are recorded together with the feed's new
//! `ETag`, as *pending* with the message and a transaction id derived from the feed and the
//! entry, in one database transaction. Pending entries are then put in the durable outbox and
//! marked posted. A crash between the two leaves them pending, and they are queued again at
//! the next start with the same transaction ids, which the homeserver does not post twice.
//!
//! An entry posted and later changed (what its message shows: title, link) is edited the same
//! way: recorded as *edit pending* with the new message and a transaction id of its own
//! version, then sent as an `m.replace` of the message's event, recorded once the homeserver
//! took it.

use std::time::Duration;

use sqlx::{Any, Row, Transaction};
use tokio::task::JoinSet;
use trestle::{
    Appservice,
    fetch::describe,
    intent::SendOptions,
    ruma::{OwnedTransactionId, RoomId},
};

use super::parse::{self, Feed};
use crate::{
    Error, Result, Shared, db,
    render::{Message, escape_markdown},
    rounds,
};

/// Entry states in `notify_feed_items`.
pub(crate) const PENDING: i64 = 0;
pub(crate) const POSTED: i64 = 1;
/// Seen but never to be posted: there before the feed was added, or past a poll's maximum.
pub(crate) const SKIPPED: i64 = 2;
/// Posted, then changed in the feed: its message is to be edited (`content` is the new one).
pub(crate) const EDIT_PENDING: i64 = 3;

/// What a fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// `304 Not Modified`.
    Unchanged,
    /// A feed, with the validators for the next request.
    Changed {
        /// The feed.
        feed: Feed,
        /// `ETag`.
        etag: Option<String>,
        /// `Last-Modified`.
        last_modified: Option<String>,
    },
}

/// Fetches and parses a feed, conditionally when validators are given.
pub async fn fetch(
    shared: &Shared,
    url: &str,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Result<Fetched> {
    let mut request = shared.fetcher.request(reqwest::Method::GET, url)?.header(
        "accept",
        "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, */*;q=0.8",
    );
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    if let Some(last_modified) = last_modified {
        request = request.header("if-modified-since", last_modified);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Error::Fetch(describe(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::Unchanged);
    }
    if !status.is_success() {
        return Err(Error::Fetch(format!("the server answered {status}")));
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let body = shared.fetcher.body(response).await?;
    let feed = parse::parse(&body, url)?;
    Ok(Fetched::Changed {
        feed,
        etag,
        last_modified,
    })
}

/// Records one entry of a feed, with the digest of what its message shows ([`entry_digest`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_item(
    tx: &mut Transaction<'_, Any>,
    feed_id: &str,
    key: &str,
    digest: Option<&str>,
    state: i64,
    content: Option<String>,
    txn_id: Option<String>,
    now: i64,
    index: usize,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO notify_feed_items
             (feed_id, item_key, entry_digest, state, content, txn_id, position, seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (feed_id, item_key) DO NOTHING",
    )
    .bind(feed_id)
    .bind(key)
    .bind(digest)
    .bind(state)
    .bind(content)
    .bind(txn_id)
    .bind(now * 1000 + index as i64)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The service: polls due feeds until the appservice stops.
pub(crate) async fn run(app: Appservice, shared: Shared) -> trestle::Result<()> {
    shared
        .ready(&app)
        .await
        .map_err(|e| trestle::Error::Other(e.to_string()))?;
    // Entries recorded before a crash but not yet queued.
    let feeds: Vec<(String, String)> = sqlx::query(
        "SELECT DISTINCT f.id, f.room_id FROM notify_feeds f
         JOIN notify_feed_items i ON i.feed_id = f.id WHERE i.state = $1",
    )
    .bind(PENDING)
    .fetch_all(app.store().pool())
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    for (feed, room) in feeds {
        if let Err(error) = post_pending(&app, &feed, &room).await {
            tracing::warn!(%feed, %error, "could not queue pending feed entries");
        }
    }
    rounds::run_rounds(&app, "feeds", &shared.feed_wake, || poll_due(&app, &shared)).await;
    Ok(())
}

#[derive(Clone, Debug)]
struct FeedRow {
    id: String,
    room_id: String,
    url: String,
    title: String,
    interval_secs: i64,
    etag: Option<String>,
    last_modified: Option<String>,
    failures: i64,
    failing_since: Option<i64>,
    failure_notified: i64,
}

/// Polls every due feed (a few at a time); returns how long until the next one is due.
async fn poll_due(app: &Appservice, shared: &Shared) -> Result<Duration> {
    let due: Vec<FeedRow> = sqlx::query(
        "SELECT id, room_id, url, title, interval_secs, etag, last_modified, failures,
                failing_since, failure_notified
         FROM notify_feeds WHERE next_poll_at <= $1 ORDER BY next_poll_at",
    )
    .bind(db::now_ms())
    .fetch_all(app.store().pool())
    .await?
    .iter()
    .map(|r| FeedRow {
        id: r.get(0),
        room_id: r.get(1),
        url: r.get(2),
        title: r.get(3),
        interval_secs: r.get(4),
        etag: r.get(5),
        last_modified: r.get(6),
        failures: r.get(7),
        failing_since: r.get(8),
        failure_notified: r.get(9),
    })
    .collect();
    for batch in due.chunks(8) {
        let mut tasks = JoinSet::new();
        for feed in batch.iter().cloned() {
            let (app, shared) = (app.clone(), shared.clone());
            tasks.spawn(async move {
                if let Err(error) = poll(&app, &shared, &feed).await {
                    tracing::warn!(feed = %feed.id, %error, "feed poll could not be recorded");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    let next: Option<i64> = sqlx::query_scalar("SELECT MIN(next_poll_at) FROM notify_feeds")
        .fetch_one(app.store().pool())
        .await?;
    Ok(match next {
        Some(at) => Duration::from_millis((at - db::now_ms()).clamp(0, 60_000) as u64),
        None => Duration::from_secs(60),
    })
}

/// The wait before the next poll after `failures` failures in a row: the interval, doubled
/// per failure up to six hours (or the interval, if longer).
pub(crate) fn next_wait(interval_secs: i64, failures: i64) -> i64 {
    let cap = interval_secs.max(6 * 3600);
    (interval_secs.max(1) << failures.clamp(0, 16)).min(cap)
}

async fn poll(app: &Appservice, shared: &Shared, feed: &FeedRow) -> Result<()> {
    let room = RoomId::parse(&feed.room_id).map_err(trestle::Error::from)?;
    match fetch(
        shared,
        &feed.url,
        feed.etag.as_deref(),
        feed.last_modified.as_deref(),
    )
    .await
    {
        Ok(Fetched::Unchanged) => succeeded(app, shared, feed, &room, None).await,
        Ok(changed @ Fetched::Changed { .. }) => {
            succeeded(app, shared, feed, &room, Some(changed)).await
        }
        Err(error) => failed(app, shared, feed, &room, &error.to_string()).await,
    }?;
    Ok(())
}

async fn succeeded(
    app: &Appservice,
    shared: &Shared,
    feed: &FeedRow,
    room: &RoomId,
    fetched: Option<Fetched>,
) -> Result<()> {
    let now = db::now_ms();
    let next = now + feed.interval_secs * 1000;
    let pool = app.store().pool();
    let mut skipped = 0;
    if let Some(Fetched::Changed {
        feed: parsed,
        etag,
        last_modified,
    }) = fetched
    {
        // Each entry seen before, with its state and the digest of what its message shows.
        let known: std::collections::HashMap<String, (i64, Option<String>)> = sqlx::query(
            "SELECT item_key, state, entry_digest FROM notify_feed_items WHERE feed_id = $1",
        )
        .bind(&feed.id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
        let new: Vec<&parse::Entry> = parsed
            .entries
            .iter()
            .filter(|e| !known.contains_key(&e.key))
            .collect();
        let max = shared.settings.feed_max_new_items.max(1);
        skipped = new.len().saturating_sub(max);
        let mut tx = app.store().begin().await?;
        for (i, entry) in new.iter().enumerate() {
            let (state, content, txn) = if i < skipped {
                (SKIPPED, None, None)
            } else {
                let message = entry_message(&parsed.title, entry);
                let txn = format!("notify.feed.{}.{}", feed.id, &entry.key[..32]);
                (
                    PENDING,
                    Some(serde_json::to_string(&message.content())?),
                    Some(txn),
                )
            };
            let digest = entry_digest(entry);
            insert_item(
                &mut tx,
                &feed.id,
                &entry.key,
                Some(&digest),
                state,
                content,
                txn,
                now,
                i,
            )
            .await?;
        }
        // Entries new in this poll were recorded with their digest just now.
        for entry in &parsed.entries {
            if let Some((state, digest)) = known.get(&entry.key) {
                changed_entry(
                    &mut tx,
                    feed,
                    &parsed.title,
                    entry,
                    (*state, digest.as_deref()),
                )
                .await?;
            }
        }
        sqlx::query(
            "UPDATE notify_feeds SET etag = $1, last_modified = $2, title = $3 WHERE id = $4",
        )
        .bind(etag)
        .bind(last_modified)
        .bind(&parsed.title)
        .bind(&feed.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    sqlx::query(
        "UPDATE notify_feeds SET next_poll_at = $1, failures = 0, failing_since = NULL,
                failure_notified = 0, last_error = NULL WHERE id = $2",
    )
    .bind(next)
    .bind(&feed.id)
    .execute(pool)
    .await?;
    if skipped > 0 {
        let text = format!(
            "{skipped} older new entries of **{}** were not posted, to keep the room readable.",
            escape_markdown(&feed.title)
        );
        notice(app, room, &text).await?;
    }
    post_pending(app, &feed.id, room.as_str()).await?;
    if feed.failure_notified != 0 {
        let text = format!("**{}** can be read again.", escape_markdown(&feed.title));
        notice(app, room, &text).await?;
    }
    Ok(())
}

async fn failed(
    app: &Appservice,
    shared: &Shared,
    feed: &FeedRow,
    room: &RoomId,
    error: &str,
) -> Result<()> {
    let now = db::now_ms();
    let failures = feed.failures + 1;
    let since = feed.failing_since.unwrap_or(now);
    let wait = next_wait(feed.interval_secs, failures);
    let tell = failures >= shared.settings.feed_failure_notice_after && feed.failure_notified == 0;
    tracing::info!(feed = %feed.id, url = %feed.url, failures, %error, "feed poll failed");
    sqlx::query(
        "UPDATE notify_feeds SET failures = $1, failing_since = $2, last_error = $3,
                next_poll_at = $4, failure_notified = $5 WHERE id = $6",
    )
    .bind(failures)
    .bind(since)
    .bind(error)
    .bind(now + wait * 1000)
    .bind(i64::from(tell) | feed.failure_notified)
    .bind(&feed.id)
    .execute(app.store().pool())
    .await?;
    if tell {
        let minutes = (now - since) / 60_000;
        let text = format!(
            "**{}** has failed {failures} times in a row (for {minutes} min): {}. I keep trying, less often.",
            escape_markdown(&feed.title),
            escape_markdown(error)
        );
        notice(app, room, &text).await?;
    }
    Ok(())
}

async fn notice(app: &Appservice, room: &RoomId, markdown: &str) -> Result<()> {
    // Stored in the outbox is enough: it is sent from there.
    drop(
        app.bot()
            .send_json(
                room,
                "m.room.message",
                Message::markdown("m.notice", markdown).content(),
                SendOptions::default(),
            )
            .queue()
            .await?,
    );
    Ok(())
}

/// Queues a feed's pending entries, oldest first, and marks each posted.
async fn post_pending(app: &Appservice, feed_id: &str, room: &str) -> Result<()> {
    let room = RoomId::parse(room).map_err(trestle::Error::from)?;
    let pool = app.store().pool();
    let rows = sqlx::query(
        "SELECT item_key, content, txn_id, state, event_id FROM notify_feed_items
         WHERE feed_id = $1 AND state IN ($2, $3) ORDER BY position",
    )
    .bind(feed_id)
    .bind(PENDING)
    .bind(EDIT_PENDING)
    .fetch_all(pool)
    .await?;
    for row in rows {
        let (key, content, txn): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let (state, event_id): (i64, Option<String>) = (row.get(3), row.get(4));
        let content: serde_json::Value = serde_json::from_str(&content)?;
        let content = match (state, event_id) {
            (EDIT_PENDING, Some(original)) => edit_of(&original, content),
            // The original's event id comes once the homeserver has taken it: next round.
            (EDIT_PENDING, None) => continue,
            _ => content,
        };
        let options = SendOptions::default().txn_id(OwnedTransactionId::from(txn));
        let delivery = app
            .bot()
            .send_json(&room, "m.room.message", content, options)
            .queue()
            .await?;
        if state == PENDING {
            // Kept for an edit later; the outbox sends it whatever happens to this task.
            let (app, feed_id, key) = (app.clone(), feed_id.to_owned(), key.clone());
            tokio::spawn(async move {
                if let Ok(Some(event_id)) = delivery.await {
                    let recorded = sqlx::query(
                        "UPDATE notify_feed_items SET event_id = $1
                         WHERE feed_id = $2 AND item_key = $3",
                    )
                    .bind(event_id.as_str())
                    .bind(&feed_id)
                    .bind(&key)
                    .execute(app.store().pool())
                    .await;
                    if let Err(error) = recorded {
                        tracing::warn!(%error, feed = %feed_id, "could not record a posted entry's event");
                    }
                }
            });
        }
        sqlx::query(
            "UPDATE notify_feed_items SET state = $1, content = NULL WHERE feed_id = $2 AND item_key = $3",
        )
        .bind(POSTED)
        .bind(feed_id)
        .bind(&key)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// The digest of what an entry's message shows: a change of it is an edit.
pub(crate) fn entry_digest(entry: &parse::Entry) -> String {
    db::digest(&format!(
        "{}\n{}",
        entry.title,
        entry.link.as_deref().unwrap_or_default()
    ))
}

/// Records what `entry` shows now, and where it shows something else than when it was posted,
/// queues an edit of its message (hookshot#1151: neither silence nor a second post). `stored`
/// is its state and digest before this poll. Entries never posted, and rows from before
/// digests were kept, only have their digest recorded.
async fn changed_entry(
    tx: &mut Transaction<'_, Any>,
    feed: &FeedRow,
    feed_title: &str,
    entry: &parse::Entry,
    stored: (i64, Option<&str>),
) -> Result<()> {
    let digest = entry_digest(entry);
    let edit = match stored {
        (_, Some(before)) if before == digest => return Ok(()),
        (POSTED | EDIT_PENDING, Some(_)) => true,
        _ => false,
    };
    if !edit {
        sqlx::query(
            "UPDATE notify_feed_items SET entry_digest = $1 WHERE feed_id = $2 AND item_key = $3",
        )
        .bind(&digest)
        .bind(&feed.id)
        .bind(&entry.key)
        .execute(&mut **tx)
        .await?;
        if let (PENDING, Some(_)) = stored {
            // Changed before it was posted: the new version is what is posted.
            let message = entry_message(feed_title, entry);
            sqlx::query(
                "UPDATE notify_feed_items SET content = $1 WHERE feed_id = $2 AND item_key = $3",
            )
            .bind(serde_json::to_string(&message.content())?)
            .bind(&feed.id)
            .bind(&entry.key)
            .execute(&mut **tx)
            .await?;
        }
        return Ok(());
    }
    let message = entry_message(feed_title, entry);
    // One transaction id per version, so each edit is sent once and a later one is not
    // taken for a repeat of it.
    let txn = format!(
        "notify.feed.{}.{}.{}",
        feed.id,
        &entry.key[..32],
        &digest[..16]
    );
    sqlx::query(
        "UPDATE notify_feed_items SET state = $1, content = $2, txn_id = $3, entry_digest = $4
         WHERE feed_id = $5 AND item_key = $6",
    )
    .bind(EDIT_PENDING)
    .bind(serde_json::to_string(&message.content())?)
    .bind(txn)
    .bind(&digest)
    .bind(&feed.id)
    .bind(&entry.key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The content of an edit of `original` to `new`: the new content under `m.new_content`, and
/// a fallback for clients without edits, marked with `*` as Element does.
/// [Event replacements](https://spec.matrix.org/v1.16/client-server-api/#event-replacements).
fn edit_of(original: &str, new: serde_json::Value) -> serde_json::Value {
    let mut fallback = new.clone();
    for field in ["body", "formatted_body"] {
        if let Some(text) = new[field].as_str() {
            fallback[field] = serde_json::Value::from(format!("* {text}"));
        }
    }
    fallback["m.new_content"] = new;
    fallback["m.relates_to"] = serde_json::json!({"rel_type": "m.replace", "event_id": original});
    fallback
}

/// The message for one entry: the feed's name, and the entry's title as a link.
pub fn entry_message(feed_title: &str, entry: &parse::Entry) -> Message {
    let title = escape_markdown(&entry.title);
    let markdown = match entry.link.as_deref() {
        Some(link) if link.starts_with("http://") || link.starts_with("https://") => format!(
            "**{}**: [{title}](<{}>)",
            escape_markdown(feed_title),
            link.replace('>', "%3E")
        ),
        _ => format!("**{}**: {title}", escape_markdown(feed_title)),
    };
    let mut message = Message::markdown("m.notice", &markdown);
    // The plain body reads better with the bare link than with Markdown.
    message.body = match entry.link.as_deref() {
        Some(link) => format!("{feed_title}: {} {link}", entry.title),
        None => format!("{feed_title}: {}", entry.title),
    };
    message
}

#[cfg(test)]
mod backends;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_feeds_are_polled_less_often() {
        assert_eq!(next_wait(600, 0), 600);
        assert_eq!(next_wait(600, 1), 1200);
        assert_eq!(next_wait(600, 3), 4800);
        assert_eq!(next_wait(600, 10), 6 * 3600);
        assert_eq!(next_wait(86_400, 3), 86_400);
    }

    #[test]
    fn entry_messages_link_the_title() {
        let entry = parse::Entry {
            key: "k".into(),
            title: "Release *1.0*".into(),
            link: Some("https://x.example/1".into()),
            date: None,
        };
        let message = entry_message("News", &entry);
        assert_eq!(message.body, "News: Release *1.0* https://x.example/1");
        let html = message.html.unwrap();
        assert!(
            html.contains("<strong>News</strong>: <a href=\"https://x.example/1\""),
            "{html}"
        );
        assert!(html.contains(">Release *1.0*</a>"), "{html}");
        let unsafe_link = parse::Entry {
            link: Some("javascript:alert(1)".into()),
            ..entry
        };
        assert!(
            !entry_message("N", &unsafe_link)
                .html
                .unwrap()
                .contains("<a")
        );
    }
}
