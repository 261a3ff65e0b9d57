//! Feeds: `!feed add|list|remove`, and the poller that posts new entries ([`poll`]).

pub mod parse;
pub mod poll;

use sqlx::Row;
use trestle::{
    Appservice,
    ruma::{RoomId, UserId},
};

use crate::{
    Error, Manage, Result, Shared, answer, db, hooks::split_word, render::escape_markdown,
};

pub(crate) const USAGE: &str = "<add|list|remove> [url] [interval: 90s, 15m, 2h]";

/// `!feed …`.
pub(crate) async fn command(m: Manage) -> Result<()> {
    m.shared.ready(&m.app).await?;
    let (url, interval) = split_word(&m.rest);
    let outcome = match m.sub.as_str() {
        "add" => add(&m.app, &m.shared, &m.room, &m.sender, &url, &interval).await,
        "list" => list(&m.app, &m.room).await,
        "remove" => remove(&m.app, &m.room, &url).await,
        _ => Err(Error::Invalid(format!("Usage: !feed {USAGE}"))),
    };
    answer(&m.app, &m.room, outcome).await
}

/// Reads `90s`, `15m`, `2h`, `1d`, or a bare number of minutes.
pub fn parse_interval(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "m"),
    };
    let n: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Says an interval in words.
pub fn describe_interval(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

async fn add(
    app: &Appservice,
    shared: &Shared,
    room: &RoomId,
    sender: &UserId,
    url: &str,
    interval: &str,
) -> Result<String> {
    let settings = &shared.settings;
    if url.is_empty() {
        return Err(Error::Invalid(format!("Usage: !feed {USAGE}")));
    }
    let interval = if interval.trim().is_empty() {
        settings.feed_interval_secs
    } else {
        parse_interval(interval).ok_or_else(|| {
            Error::Invalid(format!(
                "I do not understand the interval {interval}: say 90s, 15m or 2h."
            ))
        })?
    };
    if interval < settings.feed_min_interval_secs {
        return Err(Error::Invalid(format!(
            "Feeds are polled at most every {}.",
            describe_interval(settings.feed_min_interval_secs)
        )));
    }
    let exists = sqlx::query("SELECT id FROM notify_feeds WHERE room_id = $1 AND url = $2")
        .bind(room.as_str())
        .bind(url)
        .fetch_optional(app.store().pool())
        .await?;
    if exists.is_some() {
        return Err(Error::Invalid(
            "This room already follows that feed.".into(),
        ));
    }
    // The first read happens now: a bad URL is refused at once, and the entries already
    // there are remembered without being posted, so a new feed does not flood the room.
    let fetched = poll::fetch(shared, url, None, None)
        .await
        .map_err(|e| Error::Invalid(format!("I could not read that feed: {e}")))?;
    let poll::Fetched::Changed {
        feed,
        etag,
        last_modified,
    } = fetched
    else {
        return Err(Error::Invalid(
            "The feed answered with nothing to read.".into(),
        ));
    };
    let id = db::random_id(12);
    let now = db::now_ms();
    let mut tx = app.store().begin().await?;
    sqlx::query(
        "INSERT INTO notify_feeds (id, room_id, url, title, interval_secs, etag, last_modified,
                                   next_poll_at, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(room.as_str())
    .bind(url)
    .bind(&feed.title)
    .bind(interval as i64)
    .bind(etag)
    .bind(last_modified)
    .bind(now + interval as i64 * 1000)
    .bind(sender.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for (i, entry) in feed.entries.iter().enumerate() {
        let digest = poll::entry_digest(entry);
        poll::insert_item(
            &mut tx,
            &id,
            &entry.key,
            Some(&digest),
            poll::SKIPPED,
            None,
            None,
            now,
            i,
        )
        .await?;
    }
    tx.commit().await?;
    shared.feed_wake.notify_one();
    Ok(format!(
        "Following **{}**, read every {}. The {} entries there now are not posted; new ones will be.",
        escape_markdown(&feed.title),
        describe_interval(interval),
        feed.entries.len()
    ))
}

async fn list(app: &Appservice, room: &RoomId) -> Result<String> {
    let rows = db::rows_of_room(
        app,
        "SELECT title, url, interval_secs, failures, last_error FROM notify_feeds
         WHERE room_id = $1 ORDER BY title",
        room.as_str(),
    )
    .await?;
    if rows.is_empty() {
        return Ok("This room follows no feeds.".into());
    }
    let mut out = String::from("Feeds followed here:");
    for row in rows {
        let (title, url): (String, String) = (row.get(0), row.get(1));
        let interval: i64 = row.get(2);
        let failures: i64 = row.get(3);
        let error: Option<String> = row.get(4);
        out.push_str(&format!(
            "\n- **{}** {} (every {})",
            escape_markdown(&title),
            escape_markdown(&url),
            describe_interval(interval as u64)
        ));
        if failures > 0 {
            out.push_str(&format!(
                ", failing: {}",
                escape_markdown(error.as_deref().unwrap_or("?"))
            ));
        }
    }
    Ok(out)
}

async fn remove(app: &Appservice, room: &RoomId, url: &str) -> Result<String> {
    let removal = db::Removal {
        find: "SELECT id, title FROM notify_feeds WHERE room_id = $1 AND url = $2",
        children: "DELETE FROM notify_feed_items WHERE feed_id = $1",
        parent: "DELETE FROM notify_feeds WHERE id = $1",
    };
    let title = db::remove(app, &removal, room.as_str(), url)
        .await?
        .ok_or_else(|| Error::Invalid("This room does not follow that feed.".into()))?;
    Ok(format!(
        "No longer following **{}**.",
        escape_markdown(&title)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_and_say() {
        assert_eq!(parse_interval("90s"), Some(90));
        assert_eq!(parse_interval("15m"), Some(900));
        assert_eq!(parse_interval("15"), Some(900));
        assert_eq!(parse_interval("2h"), Some(7200));
        assert_eq!(parse_interval("1d"), Some(86_400));
        assert_eq!(parse_interval("soon"), None);
        assert_eq!(parse_interval("5w"), None);
        assert_eq!(describe_interval(900), "15 min");
        assert_eq!(describe_interval(90), "90 s");
    }
}
