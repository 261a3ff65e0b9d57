//! The index: what arrives in timeline rooms, kept in the plugin's own tables so the page can
//! read feeds, profiles and threads quickly. Matrix stays the source of truth: every row here
//! can be rebuilt from the rooms (see [`crate::reindex`]), and writing the same event twice
//! changes nothing.

use serde::Serialize;
use serde_json::Value;
use sqlx::AnyPool;
use trestle::{Appservice, Result, store::Migration};

use crate::content::{self, LIKE_KEY, POST_TYPE, ROOM_TYPE};

/// What an event changed in the index, for pages that show it as it happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The timeline room it happened in.
    pub room_id: String,
    /// The post it concerns: the new post or reply, or the post liked, unliked, edited or
    /// deleted.
    pub event_id: String,
    /// For a reply, or a deleted reply: its thread's root, whose reply count changed.
    pub thread_root: Option<String>,
}

/// The kinds of [`Change`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A new top-level post or repost.
    Post,
    /// A new reply in a thread.
    Reply,
    /// A like given or taken back.
    Like,
    /// An edit.
    Edit,
    /// A post or reply redacted.
    Delete,
}

const SCHEMA: &str = "
CREATE TABLE timeline_rooms (
    room_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX timeline_rooms_owner ON timeline_rooms (owner, created_ts);
CREATE TABLE timeline_posts (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    ts BIGINT NOT NULL,
    body TEXT NOT NULL,
    html TEXT,
    thread_root TEXT,
    repost_of TEXT
);
CREATE INDEX timeline_posts_room_ts ON timeline_posts (room_id, ts);
CREATE INDEX timeline_posts_thread ON timeline_posts (thread_root, ts);
CREATE TABLE timeline_likes (
    event_id TEXT PRIMARY KEY,
    post_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    ts BIGINT NOT NULL,
    UNIQUE (post_id, sender)
);
CREATE TABLE timeline_follows (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX timeline_follows_user ON timeline_follows (user_id);
CREATE TABLE timeline_profiles (
    user_id TEXT PRIMARY KEY,
    display_name TEXT
)";

const EDITS: &str = "ALTER TABLE timeline_posts ADD COLUMN edited_ts BIGINT";

/// Avatars, bios (the timeline room's topic) and images.
const PEOPLE: &str = "
ALTER TABLE timeline_profiles ADD COLUMN avatar_url TEXT;
ALTER TABLE timeline_rooms ADD COLUMN topic TEXT;
ALTER TABLE timeline_posts ADD COLUMN image TEXT;
ALTER TABLE timeline_posts ADD COLUMN image_mxc TEXT;
CREATE INDEX timeline_posts_image ON timeline_posts (image_mxc);
CREATE INDEX timeline_profiles_avatar ON timeline_profiles (avatar_url)";

/// The index's tables; the same SQL suits both dialects.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: SCHEMA,
        postgres: SCHEMA,
    },
    Migration {
        version: 2,
        sqlite: EDITS,
        postgres: EDITS,
    },
    Migration {
        version: 3,
        sqlite: PEOPLE,
        postgres: PEOPLE,
    },
    // The search's own tables, where the dialect has them (see `crate::search`).
    Migration {
        version: 4,
        sqlite: crate::search::SQLITE_SCHEMA,
        postgres: crate::search::POSTGRES_SCHEMA,
    },
];

/// Brings the index's tables up to date; cheap when they are.
pub async fn migrate(app: &Appservice) -> Result<()> {
    app.store().migrate("timeline", MIGRATIONS).await
}

/// The tables every row of the index lives in, emptied by a reindex.
pub(crate) const TABLES: &[&str] = &[
    "timeline_rooms",
    "timeline_posts",
    "timeline_likes",
    "timeline_follows",
    "timeline_profiles",
];

/// Records a timeline room and its owner.
pub(crate) async fn add_room(db: &AnyPool, room_id: &str, owner: &str, ts: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO timeline_rooms (room_id, owner, created_ts) VALUES ($1, $2, $3)
         ON CONFLICT (room_id) DO NOTHING",
    )
    .bind(room_id)
    .bind(owner)
    .bind(ts)
    .execute(db)
    .await?;
    Ok(())
}

/// The owner of a timeline room, `None` for rooms that are not timelines.
pub(crate) async fn room_owner(db: &AnyPool, room_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT owner FROM timeline_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(db)
            .await?,
    )
}

/// A user's timeline room (their first, should there be several).
pub(crate) async fn room_of(db: &AnyPool, owner: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT room_id FROM timeline_rooms WHERE owner = $1 ORDER BY created_ts, room_id LIMIT 1",
    )
    .bind(owner)
    .fetch_optional(db)
    .await?)
}

/// Records that `user_id` is in a timeline room (its owner, or a follower).
pub(crate) async fn add_member(
    db: &AnyPool,
    room_id: &str,
    user_id: &str,
    display_name: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO timeline_follows (room_id, user_id) VALUES ($1, $2)
         ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(room_id)
    .bind(user_id)
    .execute(db)
    .await?;
    if let Some(name) = display_name {
        set_display_name(db, user_id, name).await?;
    }
    Ok(())
}

/// Records a user's display name, as their profile now says.
pub(crate) async fn set_display_name(db: &AnyPool, user_id: &str, name: &str) -> Result<()> {
    set_profile_field(db, user_id, "display_name", Some(name)).await
}

/// Sets one column of a user's profile row, making the row if need be.
async fn set_profile_field(
    db: &AnyPool,
    user_id: &str,
    column: &'static str,
    value: Option<&str>,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO timeline_profiles (user_id, {column}) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(value)
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn remove_member(db: &AnyPool, room_id: &str, user_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM timeline_follows WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Indexes one event (client format, as pushed by the homeserver or read from `/messages`).
/// Events in rooms that are not timelines, and posts the room's owner did not write outside a
/// thread, are ignored: the sender is the author, whatever the content says. Answers what
/// changed, if anything did: an event indexed a second time changes nothing.
pub async fn apply(app: &Appservice, event: &Value) -> Result<Option<Change>> {
    let db = app.store().pool();
    let (Some(event_type), Some(room_id), Some(sender)) = (
        event["type"].as_str(),
        event["room_id"].as_str(),
        event["sender"].as_str(),
    ) else {
        return Ok(None);
    };
    let content = &event["content"];
    let ts = event["origin_server_ts"].as_i64().unwrap_or(0);
    if event_type == "m.room.create" {
        if content["type"] == ROOM_TYPE {
            add_room(db, room_id, sender, ts).await?;
        }
        return Ok(None);
    }
    let Some(owner) = room_owner(db, room_id).await? else {
        return Ok(None);
    };
    let Some(event_id) = event["event_id"].as_str() else {
        return Ok(None);
    };
    let change = |kind, event_id: &str, thread_root: Option<String>| {
        Some(Change {
            kind,
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
            thread_root,
        })
    };
    match event_type {
        POST_TYPE if content["m.relates_to"]["rel_type"] == "m.replace" => {
            if let Some(original) = edit(db, event_id, sender, ts, content).await? {
                return Ok(change(ChangeKind::Edit, &original, None));
            }
        }
        POST_TYPE => {
            let Some(post) = content::parse_post(content) else {
                return Ok(None);
            };
            if post.thread_root.is_none() && sender != owner {
                tracing::info!(
                    room_id,
                    sender,
                    event_id,
                    "ignoring a post by someone else than the room's owner"
                );
                return Ok(None);
            }
            let image_mxc = post.image.as_ref().map(|i| i.url.clone());
            let image = post.image.as_ref().map(serde_json::to_string).transpose()?;
            let inserted = sqlx::query(
                "INSERT INTO timeline_posts
                 (event_id, room_id, sender, ts, body, html, thread_root, repost_of, image, image_mxc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(room_id)
            .bind(sender)
            .bind(ts)
            .bind(post.text)
            .bind(post.html)
            .bind(post.thread_root.clone())
            .bind(post.repost_of)
            .bind(image)
            .bind(image_mxc)
            .execute(db)
            .await?;
            if inserted.rows_affected() > 0 {
                let kind = match post.thread_root {
                    Some(_) => ChangeKind::Reply,
                    None => ChangeKind::Post,
                };
                return Ok(change(kind, event_id, post.thread_root));
            }
        }
        "m.reaction" => {
            let relates = &content["m.relates_to"];
            if relates["rel_type"] == "m.annotation"
                && relates["key"] == LIKE_KEY
                && let Some(post_id) = relates["event_id"].as_str()
            {
                let inserted = sqlx::query(
                    "INSERT INTO timeline_likes (event_id, post_id, sender, ts)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(event_id)
                .bind(post_id)
                .bind(sender)
                .bind(ts)
                .execute(db)
                .await?;
                if inserted.rows_affected() > 0 {
                    return Ok(change(ChangeKind::Like, post_id, None));
                }
            }
        }
        "m.room.member" => {
            let Some(user_id) = event["state_key"].as_str() else {
                return Ok(None);
            };
            let Ok(user) = trestle::ruma::UserId::parse(user_id) else {
                return Ok(None);
            };
            if app.is_own_user(&user) {
                return Ok(None);
            }
            if content["membership"] == "join" {
                add_member(db, room_id, user_id, content["displayname"].as_str()).await?;
                set_avatar(db, user_id, content["avatar_url"].as_str()).await?;
            } else {
                remove_member(db, room_id, user_id).await?;
            }
        }
        "m.room.redaction" => {
            // Room versions up to 10 put `redacts` beside the content, 11 and later inside it.
            let Some(redacts) = content["redacts"]
                .as_str()
                .or_else(|| event["redacts"].as_str())
            else {
                return Ok(None);
            };
            return redact(db, room_id, redacts).await;
        }
        "m.room.topic" if event["state_key"] == "" => {
            // The topic of a timeline room is its owner's bio; the room's power levels say
            // who may set it.
            sqlx::query("UPDATE timeline_rooms SET topic = $1 WHERE room_id = $2")
                .bind(content["topic"].as_str())
                .bind(room_id)
                .execute(db)
                .await?;
        }
        _ => {}
    }
    Ok(None)
}

/// Deletes the post or like `redacts`, saying which post changed.
async fn redact(db: &AnyPool, room_id: &str, redacts: &str) -> Result<Option<Change>> {
    let post: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT event_id, thread_root FROM timeline_posts WHERE event_id = $1")
            .bind(redacts)
            .fetch_optional(db)
            .await?;
    let liked: Option<String> =
        sqlx::query_scalar("SELECT post_id FROM timeline_likes WHERE event_id = $1")
            .bind(redacts)
            .fetch_optional(db)
            .await?;
    for sql in [
        "DELETE FROM timeline_posts WHERE event_id = $1",
        "DELETE FROM timeline_likes WHERE event_id = $1",
    ] {
        sqlx::query(sql).bind(redacts).execute(db).await?;
    }
    let change = match (post, liked) {
        (Some((event_id, thread_root)), _) => Change {
            kind: ChangeKind::Delete,
            room_id: room_id.to_owned(),
            event_id,
            thread_root,
        },
        (None, Some(post_id)) => Change {
            kind: ChangeKind::Like,
            room_id: room_id.to_owned(),
            event_id: post_id,
            thread_root: None,
        },
        (None, None) => return Ok(None),
    };
    Ok(Some(change))
}

/// Records a user's avatar as their latest join event gives it (none when it has none); only
/// `mxc://` URIs are kept, since the page shows them through the media route.
pub(crate) async fn set_avatar(
    db: &AnyPool,
    user_id: &str,
    avatar_url: Option<&str>,
) -> Result<()> {
    let avatar = avatar_url.filter(|url| <&trestle::ruma::MxcUri>::from(*url).validate().is_ok());
    set_profile_field(db, user_id, "avatar_url", avatar).await
}

/// Applies an edit (`m.replace`) to the post it replaces: only its author's edits count, and
/// only the latest. Answers the edited post's id when the edit took.
async fn edit(
    db: &AnyPool,
    event_id: &str,
    sender: &str,
    ts: i64,
    content: &Value,
) -> Result<Option<String>> {
    let (Some(original), Some(new)) = (
        content["m.relates_to"]["event_id"].as_str(),
        content::parse_post(&content["m.new_content"]),
    ) else {
        return Ok(None);
    };
    let updated = sqlx::query(
        "UPDATE timeline_posts SET body = $1, html = $2, edited_ts = $3
         WHERE event_id = $4 AND sender = $5 AND (edited_ts IS NULL OR edited_ts < $6)",
    )
    .bind(new.text)
    .bind(new.html)
    .bind(ts)
    .bind(original)
    .bind(sender)
    .bind(ts)
    .execute(db)
    .await?;
    if updated.rows_affected() == 0 {
        tracing::debug!(
            event_id,
            original,
            sender,
            "edit of no post of the sender's, or an older one"
        );
        return Ok(None);
    }
    Ok(Some(original.to_owned()))
}

/// Empties the index.
pub(crate) async fn clear(db: &AnyPool) -> Result<()> {
    for table in TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(db)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
