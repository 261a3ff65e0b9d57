//! Search on a PostgreSQL store: the `LIKE` side of the search's seam, over the same index
//! the SQLite side reads with FTS5 (its unit tests run both matchers on SQLite).

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use trestle::{Appservice, Store, store::Backend};
use trestle_timeline::{
    PLUGIN,
    content::{POST_TYPE, ROOM_TYPE, TEXT_KEY},
    index,
    search::{self, Matcher},
};

fn event(id: &str, ts: i64, kind: &str, content: Value) -> Value {
    json!({ "event_id": id, "type": kind, "room_id": "!bob:localhost",
        "sender": "@bob:localhost", "origin_server_ts": ts, "content": content })
}

fn post(id: &str, ts: i64, text: &str) -> Value {
    event(id, ts, POST_TYPE, json!({ TEXT_KEY: text, "body": text }))
}

#[tokio::test]
async fn postgres_searches_with_like_case_and_wildcards_taken_literally() {
    let store = Store::connect(&trestle_tests::postgres::fresh_database().await)
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    let registration = PLUGIN.generate_registration(None, "localhost");
    let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
        .store(store)
        .build()
        .await
        .unwrap();
    index::migrate(&app).await.unwrap();
    for e in [
        event("$c", 1, "m.room.create", json!({ "type": ROOM_TYPE })),
        post("$1", 2, "Building a #Trestle today"),
        post("$2", 3, "trestles are bridges"),
        post("$3", 4, "100% done_now"),
        post("$4", 5, "Ünïcode ÉTÉ"),
    ] {
        index::apply(&app, &e).await.unwrap();
    }
    let matcher = Matcher::of(app.store().backend());
    assert_eq!(matcher, Matcher::Like);
    let db = app.store().pool();
    let texts = |query: &'static str| async move {
        search::posts(db, matcher, "", query, None, 10)
            .await
            .unwrap()
            .posts
            .into_iter()
            .map(|p| p.text)
            .collect::<Vec<_>>()
    };
    assert_eq!(texts("#trestle").await, ["Building a #Trestle today"]);
    assert_eq!(
        texts("TRESTLE").await,
        ["trestles are bridges", "Building a #Trestle today"]
    );
    assert_eq!(texts("100%").await, ["100% done_now"]);
    assert!(texts("o_e").await.is_empty());
    // Letters beyond ASCII fold as the database's locale folds them; as written they always match.
    assert_eq!(texts("Ünïcode").await, ["Ünïcode ÉTÉ"]);
    assert!(texts("  ").await.is_empty());
    // One post a page, with a cursor.
    let first = search::posts(db, matcher, "", "trestle", None, 1)
        .await
        .unwrap();
    assert_eq!(first.posts.len(), 1);
    let before = trestle_timeline::query::parse_cursor(first.next.as_deref().unwrap());
    let second = search::posts(db, matcher, "", "trestle", before, 1)
        .await
        .unwrap();
    assert_eq!(second.posts[0].text, "Building a #Trestle today");
    assert_eq!(second.next, None);
}
