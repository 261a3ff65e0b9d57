//! The index: what arrives in timeline rooms, kept in the plugin's own tables so the page can
//! read feeds, profiles and threads quickly. Matrix stays the source of truth: every row here
//! can be rebuilt from the rooms (see [`crate::reindex`]), and writing the same event twice
//! changes nothing.

use serde_json::Value;
use sqlx::AnyPool;
use trestle::{Appservice, Result, store::Migration};

use crate::content::{self, LIKE_KEY, POST_TYPE, ROOM_TYPE};

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
        sqlx::query(
            "INSERT INTO timeline_profiles (user_id, display_name) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(user_id)
        .bind(name)
        .execute(db)
        .await?;
    }
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
/// thread, are ignored: the sender is the author, whatever the content says.
pub async fn apply(app: &Appservice, event: &Value) -> Result<()> {
    let db = app.store().pool();
    let (Some(event_type), Some(room_id), Some(sender)) = (
        event["type"].as_str(),
        event["room_id"].as_str(),
        event["sender"].as_str(),
    ) else {
        return Ok(());
    };
    let content = &event["content"];
    let ts = event["origin_server_ts"].as_i64().unwrap_or(0);
    if event_type == "m.room.create" {
        if content["type"] == ROOM_TYPE {
            add_room(db, room_id, sender, ts).await?;
        }
        return Ok(());
    }
    let Some(owner) = room_owner(db, room_id).await? else {
        return Ok(());
    };
    let Some(event_id) = event["event_id"].as_str() else {
        return Ok(());
    };
    match event_type {
        POST_TYPE if content["m.relates_to"]["rel_type"] == "m.replace" => {
            edit(db, event_id, sender, ts, content).await?;
        }
        POST_TYPE => {
            let Some(post) = content::parse_post(content) else {
                return Ok(());
            };
            if post.thread_root.is_none() && sender != owner {
                tracing::info!(
                    room_id,
                    sender,
                    event_id,
                    "ignoring a post by someone else than the room's owner"
                );
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO timeline_posts
                 (event_id, room_id, sender, ts, body, html, thread_root, repost_of)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(room_id)
            .bind(sender)
            .bind(ts)
            .bind(post.text)
            .bind(post.html)
            .bind(post.thread_root)
            .bind(post.repost_of)
            .execute(db)
            .await?;
        }
        "m.reaction" => {
            let relates = &content["m.relates_to"];
            if relates["rel_type"] == "m.annotation"
                && relates["key"] == LIKE_KEY
                && let Some(post_id) = relates["event_id"].as_str()
            {
                sqlx::query(
                    "INSERT INTO timeline_likes (event_id, post_id, sender, ts)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(event_id)
                .bind(post_id)
                .bind(sender)
                .bind(ts)
                .execute(db)
                .await?;
            }
        }
        "m.room.member" => {
            let Some(user_id) = event["state_key"].as_str() else {
                return Ok(());
            };
            let Ok(user) = trestle::ruma::UserId::parse(user_id) else {
                return Ok(());
            };
            if app.is_own_user(&user) {
                return Ok(());
            }
            if content["membership"] == "join" {
                add_member(db, room_id, user_id, content["displayname"].as_str()).await?;
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
                return Ok(());
            };
            for sql in [
                "DELETE FROM timeline_posts WHERE event_id = $1",
                "DELETE FROM timeline_likes WHERE event_id = $1",
            ] {
                sqlx::query(sql).bind(redacts).execute(db).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Applies an edit (`m.replace`) to the post it replaces: only its author's edits count, and
/// only the latest.
async fn edit(db: &AnyPool, event_id: &str, sender: &str, ts: i64, content: &Value) -> Result<()> {
    let (Some(original), Some(new)) = (
        content["m.relates_to"]["event_id"].as_str(),
        content::parse_post(&content["m.new_content"]),
    ) else {
        return Ok(());
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
    }
    Ok(())
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
mod tests {
    use serde_json::json;
    use trestle::Registration;

    use super::*;
    use crate::query;

    async fn app() -> Appservice {
        let registration =
            Registration::generate("timeline", None, "timeline", "timeline_", "localhost");
        let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
            .build()
            .await
            .unwrap();
        migrate(&app).await.unwrap();
        // Bob's timeline, which Alice follows.
        let create = event(
            "$create",
            "m.room.create",
            "@bob:localhost",
            1,
            json!({ "type": ROOM_TYPE }),
        );
        let join = event(
            "$join",
            "m.room.member",
            "@alice:localhost",
            2,
            json!({ "membership": "join" }),
        );
        for event in [create, join] {
            apply(&app, &event).await.unwrap();
        }
        app
    }

    fn event(id: &str, kind: &str, sender: &str, ts: i64, content: Value) -> Value {
        let mut event = json!({ "event_id": id, "type": kind, "room_id": "!bob", "sender": sender,
                "origin_server_ts": ts, "content": content });
        if kind == "m.room.member" {
            event["state_key"] = json!(sender);
        }
        event
    }

    fn post(id: &str, sender: &str, ts: i64, text: &str) -> Value {
        event(
            id,
            POST_TYPE,
            sender,
            ts,
            json!({ "body": text, content::TEXT_KEY: text }),
        )
    }

    async fn texts(
        app: &Appservice,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> (Vec<String>, Option<String>) {
        let page = query::feed(app.store().pool(), "@alice:localhost", before, limit)
            .await
            .unwrap();
        (page.posts.into_iter().map(|p| p.text).collect(), page.next)
    }

    #[tokio::test]
    async fn posts_with_equal_timestamps_page_without_gaps_or_repeats() {
        let app = app().await;
        let events = [
            post("$a", "@bob:localhost", 10, "a"),
            post("$b", "@bob:localhost", 10, "b"),
            post("$c", "@bob:localhost", 10, "c"),
            post("$d", "@bob:localhost", 11, "d"),
        ];
        for event in &events {
            apply(&app, event).await.unwrap();
            // Twice: what arrives again changes nothing.
            apply(&app, event).await.unwrap();
        }
        let (all, next) = texts(&app, None, 10).await;
        assert_eq!(all, ["d", "c", "b", "a"]);
        assert_eq!(next, None);
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let (page, next) = texts(&app, before, 1).await;
            seen.extend(page);
            match next {
                Some(cursor) => before = query::parse_cursor(&cursor),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[tokio::test]
    async fn forged_posts_foreign_edits_and_redactions() {
        let app = app().await;
        for event in [
            post("$p", "@bob:localhost", 10, "original"),
            // Alice's top-level post in Bob's room is no post of his.
            post("$forged", "@alice:localhost", 11, "I am Bob"),
            // Her edit of his post does nothing; his two edits, arriving out of order, leave
            // the later one.
            edit("$e1", "@alice:localhost", 12, "hijacked"),
            edit("$e3", "@bob:localhost", 14, "latest"),
            edit("$e2", "@bob:localhost", 13, "older"),
            event(
                "$like",
                "m.reaction",
                "@alice:localhost",
                15,
                json!({
                "m.relates_to": { "rel_type": "m.annotation", "event_id": "$p", "key": LIKE_KEY } }),
            ),
            event(
                "$thumb",
                "m.reaction",
                "@alice:localhost",
                15,
                json!({
                "m.relates_to": { "rel_type": "m.annotation", "event_id": "$p", "key": "👍" } }),
            ),
        ] {
            apply(&app, &event).await.unwrap();
        }
        let db = app.store().pool();
        let (texts, _) = texts(&app, None, 10).await;
        assert_eq!(texts, ["latest"]);
        assert!(
            query::post_by_id(db, "", "$forged")
                .await
                .unwrap()
                .is_none()
        );
        let post = query::post_by_id(db, "@alice:localhost", "$p")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (post.like_count, post.liked, post.edited_ts),
            (1, true, Some(14))
        );
        // A redaction (room version 11 and later: `redacts` in the content) takes the like away.
        apply(
            &app,
            &event(
                "$r",
                "m.room.redaction",
                "@alice:localhost",
                16,
                json!({ "redacts": "$like" }),
            ),
        )
        .await
        .unwrap();
        let post = query::post_by_id(db, "@alice:localhost", "$p")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(post.like_count, 0);
        // Events of rooms that are no timeline are not indexed.
        let mut elsewhere = post_json("$x");
        elsewhere["room_id"] = json!("!other:localhost");
        apply(&app, &elsewhere).await.unwrap();
        assert!(query::post_by_id(db, "", "$x").await.unwrap().is_none());
    }

    /// An edit of `$p`.
    fn edit(id: &str, sender: &str, ts: i64, text: &str) -> Value {
        let content = json!({
            "m.new_content": { content::TEXT_KEY: text },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$p" },
        });
        event(id, POST_TYPE, sender, ts, content)
    }

    fn post_json(id: &str) -> Value {
        post(id, "@bob:localhost", 20, "x")
    }
}
