//! Reading the index: home feeds, profiles and threads, newest first with cursors.

use serde::Serialize;
use sqlx::{AnyPool, Row, any::AnyRow};
use trestle::Result;

/// A post as the page and the JSON API show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Post {
    /// The post's event id, which is its id everywhere.
    pub event_id: String,
    /// The timeline room it was posted in (its author's).
    pub room_id: String,
    /// The sender: posts are written by whoever sent them.
    pub author: String,
    /// The author's display name, when the index knows one.
    pub author_name: Option<String>,
    /// The author's avatar (`mxc://`), shown through the plugin's media route.
    pub author_avatar: Option<String>,
    /// The plain text.
    pub text: String,
    /// Sanitised HTML.
    pub html: Option<String>,
    /// The post's image, if it has one.
    pub image: Option<crate::content::Image>,
    /// Milliseconds since the Unix epoch (`origin_server_ts`).
    pub ts: i64,
    /// For a reply, the post that started the thread.
    pub thread_root: Option<String>,
    /// For a repost, the original post.
    pub repost_of: Option<String>,
    /// When the post was last edited, if it was.
    pub edited_ts: Option<i64>,
    /// How many replies its thread has.
    pub reply_count: i64,
    /// How many likes it has.
    pub like_count: i64,
    /// Whether the user asking liked it.
    pub liked: bool,
}

/// One page of posts, and the cursor of the next (older) one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page {
    /// The posts, newest first.
    pub posts: Vec<Post>,
    /// Pass as `before` to read on; `None` at the end.
    pub next: Option<String>,
}

/// A user and their posts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The user's Matrix id.
    pub user_id: String,
    /// The user's display name, when the index knows one.
    pub display_name: Option<String>,
    /// The user's avatar (`mxc://`), when the index knows one.
    pub avatar_url: Option<String>,
    /// The user's bio: their timeline room's topic.
    pub bio: Option<String>,
    /// The user's timeline room, `None` until they post for the first time.
    pub room_id: Option<String>,
    /// How many users follow them.
    pub followers: i64,
    /// How many users they follow.
    pub following: i64,
    /// Whether the user asking follows them.
    pub followed: bool,
    /// Their posts, a page at a time.
    #[serde(flatten)]
    pub page: Page,
}

/// A post with its replies, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// The post that started the thread.
    pub post: Post,
    /// The replies in it, oldest first.
    pub replies: Vec<Post>,
}

const SELECT: &str = "SELECT p.event_id, p.room_id, p.sender, p.ts, p.body, p.html,
        p.thread_root, p.repost_of, p.edited_ts, p.image, pr.display_name, pr.avatar_url,
        (SELECT COUNT(*) FROM timeline_posts r WHERE r.thread_root = p.event_id) AS replies,
        (SELECT COUNT(*) FROM timeline_likes l WHERE l.post_id = p.event_id) AS likes,
        (SELECT COUNT(*) FROM timeline_likes l WHERE l.post_id = p.event_id AND l.sender = $1) AS liked
    FROM timeline_posts p LEFT JOIN timeline_profiles pr ON pr.user_id = p.sender";

fn post(row: &AnyRow) -> Result<Post> {
    Ok(Post {
        event_id: row.try_get("event_id")?,
        room_id: row.try_get("room_id")?,
        author: row.try_get("sender")?,
        author_name: row.try_get("display_name")?,
        author_avatar: row.try_get("avatar_url")?,
        text: row.try_get("body")?,
        html: row.try_get("html")?,
        // Checked when it was indexed; a row that no longer reads is shown without it.
        image: row
            .try_get::<Option<String>, _>("image")?
            .and_then(|json| serde_json::from_str(&json).ok()),
        ts: row.try_get("ts")?,
        thread_root: row.try_get("thread_root")?,
        repost_of: row.try_get("repost_of")?,
        edited_ts: row.try_get("edited_ts")?,
        reply_count: row.try_get("replies")?,
        like_count: row.try_get("likes")?,
        liked: row.try_get::<i64, _>("liked")? > 0,
    })
}

/// A cursor: the last post's timestamp and event id.
fn cursor(post: &Post) -> String {
    format!("{}_{}", post.ts, post.event_id)
}

/// Reads a cursor; an invalid one is an error for the caller to report.
pub fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (ts, event_id) = cursor.split_once('_')?;
    Some((ts.parse().ok()?, event_id.to_owned()))
}

/// Posts matching `filter` (SQL over `p`, with `$2` the filter's argument), newest first.
pub(crate) async fn page(
    db: &AnyPool,
    viewer: &str,
    filter: &str,
    argument: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Page> {
    let (ts, event_id) = before.unwrap_or((i64::MAX, String::new()));
    // Without a cursor every post is older than `i64::MAX`.
    let sql = format!(
        "{SELECT} WHERE {filter} AND p.thread_root IS NULL
           AND (p.ts < $3 OR (p.ts = $3 AND p.event_id < $4))
         ORDER BY p.ts DESC, p.event_id DESC LIMIT $5"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(viewer)
        .bind(argument)
        .bind(ts)
        .bind(event_id)
        .bind(limit + 1)
        .fetch_all(db)
        .await?;
    let mut posts = rows.iter().map(post).collect::<Result<Vec<_>>>()?;
    let next = if posts.len() as i64 > limit {
        posts.truncate(limit as usize);
        posts.last().map(cursor)
    } else {
        None
    };
    Ok(Page { posts, next })
}

/// The home feed of `user`: the posts of everyone whose timeline they are in (their own
/// included), newest first.
pub async fn feed(
    db: &AnyPool,
    user: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Page> {
    page(
        db,
        user,
        "p.room_id IN (SELECT room_id FROM timeline_follows WHERE user_id = $2)",
        user,
        before,
        limit,
    )
    .await
}

/// A user's profile and their posts, as `viewer` sees them.
pub async fn profile(
    db: &AnyPool,
    viewer: &str,
    user: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Profile> {
    let room_id = crate::index::room_of(db, user).await?;
    let names: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT display_name, avatar_url FROM timeline_profiles WHERE user_id = $1")
            .bind(user)
            .fetch_optional(db)
            .await?;
    let (display_name, avatar_url) = names.unwrap_or_default();
    let bio: Option<Option<String>> = match &room_id {
        Some(room) => {
            sqlx::query_scalar("SELECT topic FROM timeline_rooms WHERE room_id = $1")
                .bind(room)
                .fetch_optional(db)
                .await?
        }
        None => None,
    };
    // Memberships of timeline rooms, `$1` and `$2` bound to the two users.
    let count = |filter: &'static str, first: &str, second: &str| {
        let sql = format!(
            "SELECT COUNT(*) FROM timeline_follows f JOIN timeline_rooms r ON r.room_id = f.room_id
             WHERE {filter}"
        );
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(first.to_owned())
            .bind(second.to_owned())
            .fetch_one(db)
    };
    let followers = count("r.owner = $1 AND f.user_id <> $2", user, user).await?;
    let following = count("f.user_id = $1 AND r.owner <> $2", user, user).await?;
    let followed = count("r.owner = $1 AND f.user_id = $2", user, viewer).await?;
    let page = page(
        db,
        viewer,
        "p.room_id IN (SELECT room_id FROM timeline_rooms WHERE owner = $2)",
        user,
        before,
        limit,
    )
    .await?;
    Ok(Profile {
        user_id: user.to_owned(),
        display_name,
        avatar_url,
        bio: bio.flatten().filter(|bio| !bio.is_empty()),
        room_id,
        followers,
        following,
        followed: followed > 0,
        page,
    })
}

/// One post, reply or not.
pub async fn post_by_id(db: &AnyPool, viewer: &str, event_id: &str) -> Result<Option<Post>> {
    let sql = format!("{SELECT} WHERE p.event_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(viewer)
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(post).transpose()
}

/// A post and its replies, oldest first; `None` if the post is not known.
pub async fn thread(db: &AnyPool, viewer: &str, event_id: &str) -> Result<Option<Thread>> {
    let Some(root) = post_by_id(db, viewer, event_id).await? else {
        return Ok(None);
    };
    let sql = format!("{SELECT} WHERE p.thread_root = $2 ORDER BY p.ts, p.event_id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(viewer)
        .bind(event_id)
        .fetch_all(db)
        .await?;
    let replies = rows.iter().map(post).collect::<Result<Vec<_>>>()?;
    Ok(Some(Thread {
        post: root,
        replies,
    }))
}

/// The like `user` gave `post_id`, if any: the reaction's event id.
pub async fn like_of(db: &AnyPool, user: &str, post_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar(
            "SELECT event_id FROM timeline_likes WHERE post_id = $1 AND sender = $2",
        )
        .bind(post_id)
        .bind(user)
        .fetch_optional(db)
        .await?,
    )
}
