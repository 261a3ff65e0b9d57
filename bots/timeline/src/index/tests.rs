//! The index, event by event: paging, events applied twice, forged posts, edits and redactions.

use serde_json::json;
use trestle::Registration;

use super::*;
use crate::query;

/// An appservice with an empty index in memory, and no homeserver.
pub(crate) async fn empty_app() -> Appservice {
    let registration =
        Registration::generate("timeline", None, "timeline", "timeline_", "localhost");
    let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
        .build()
        .await
        .unwrap();
    migrate(&app).await.unwrap();
    app
}

async fn app() -> Appservice {
    let app = empty_app().await;
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
