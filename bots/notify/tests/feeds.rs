//! Feeds against a real Synapse and a local feed server whose feeds change between polls:
//! each new entry is posted exactly once, across reorders, edits, an entry that disappears
//! and comes back, and a restart of the appservice.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{BOT, bodies, settings, start, wait_for_text};
use tokio::{net::TcpListener, task::JoinHandle};
use trestle::axum::{
    self,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use trestle_tests::appservice::WAIT;

/// The feeds the server serves, and what it answered.
#[derive(Default)]
struct Feeds {
    /// RSS items, newest first: (guid, title).
    rss: Vec<(String, String)>,
    rss_version: u32,
    /// Atom entries, newest first: (id, title, updated).
    atom: Vec<(String, String, String)>,
    atom_version: u32,
    /// The RSS version last answered with 200.
    rss_served: u32,
    /// How many conditional requests were answered 304.
    not_modified: usize,
    /// Whether `/flaky` answers 503.
    flaky_down: bool,
    /// JSON Feed items, newest first: (id, title).
    json: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Feeds>>;

fn rss_etag(version: u32) -> String {
    format!("\"rss-{version}\"")
}

fn atom_date(version: u32) -> String {
    format!("Mon, 01 Jan 2024 00:{:02}:00 GMT", version % 60)
}

async fn rss(State(feeds): State<Shared>, headers: HeaderMap) -> Response {
    let mut feeds = feeds.lock().unwrap();
    let etag = rss_etag(feeds.rss_version);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(&etag)
    {
        feeds.not_modified += 1;
        return StatusCode::NOT_MODIFIED.into_response();
    }
    feeds.rss_served = feeds.rss_version;
    let items: String = feeds
        .rss
        .iter()
        .map(|(guid, title)| {
            format!(
                "<item><title>{title}</title><link>https://news.example/{guid}</link><guid isPermaLink=\"false\">{guid}</guid></item>"
            )
        })
        .collect();
    let body = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>News</title><link>https://news.example/</link><description>d</description>{items}</channel></rss>"
    );
    (
        [
            (header::CONTENT_TYPE, "application/rss+xml".to_owned()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

async fn atom(State(feeds): State<Shared>, headers: HeaderMap) -> Response {
    let mut feeds = feeds.lock().unwrap();
    let modified = atom_date(feeds.atom_version);
    if headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        == Some(&modified)
    {
        feeds.not_modified += 1;
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let entries: String = feeds
        .atom
        .iter()
        .map(|(id, title, updated)| {
            format!(
                "<entry><id>{id}</id><title>{title}</title><updated>{updated}</updated><link href=\"https://blog.example/{id}\"/></entry>"
            )
        })
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>Blog</title><id>urn:blog</id><updated>2024-01-01T00:00:00Z</updated>{entries}</feed>"
    );
    (
        [
            (header::CONTENT_TYPE, "application/atom+xml".to_owned()),
            (header::LAST_MODIFIED, modified),
        ],
        body,
    )
        .into_response()
}

/// A JSON Feed, without validators: every poll reads it whole.
async fn json_feed(State(feeds): State<Shared>) -> Response {
    let items: Vec<serde_json::Value> = feeds
        .lock()
        .unwrap()
        .json
        .iter()
        .map(|(id, title)| {
            serde_json::json!({"id": id, "title": title, "url": format!("https://j.example/{id}")})
        })
        .collect();
    let feed = serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1", "title": "Jay", "items": items,
    });
    (
        [(header::CONTENT_TYPE, "application/feed+json")],
        feed.to_string(),
    )
        .into_response()
}

/// A feed that can be made to fail.
async fn flaky(State(feeds): State<Shared>) -> Response {
    if feeds.lock().unwrap().flaky_down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = "<rss version=\"2.0\"><channel><title>Flaky</title><item><title>F</title><guid>f1</guid></item></channel></rss>";
    ([(header::CONTENT_TYPE, "application/rss+xml")], body).into_response()
}

async fn feed_server(feeds: Shared) -> (String, JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/rss", get(rss))
        .route("/atom", get(atom))
        .route("/flaky", get(flaky))
        .route("/json", get(json_feed))
        .with_state(feeds);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

fn item(key: &str, title: &str) -> (String, String) {
    (key.to_owned(), title.to_owned())
}

fn change_rss(feeds: &Shared, change: impl FnOnce(&mut Vec<(String, String)>)) -> u32 {
    let mut feeds = feeds.lock().unwrap();
    change(&mut feeds.rss);
    feeds.rss_version += 1;
    feeds.rss_version
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn new_entries_are_posted_exactly_once_across_changes_and_a_restart() {
    let feeds: Shared = Arc::default();
    {
        let mut f = feeds.lock().unwrap();
        f.rss = vec![item("a2", "Alpha two"), item("a1", "Alpha one")];
        f.json = vec![item("j1", "Jay one")];
        f.atom = vec![(
            "urn:b1".into(),
            "Beta one".into(),
            "2024-01-01T00:00:00Z".into(),
        )];
    }
    let (base, server) = feed_server(feeds.clone()).await;
    let mut harness = start(settings()).await;
    let (user, room) = harness.user_in_room_with_bot("dave").await;

    // Adding reads the feed once; what is there already is remembered, not posted.
    user.send_text(&room, &format!("!feed add {base}/rss 1s"))
        .await;
    wait_for_text(
        &user,
        &room,
        BOT,
        "Following **News**, read every 1 s. The 2 entries",
    )
    .await;
    user.send_text(&room, &format!("!feed add {base}/atom 1s"))
        .await;
    wait_for_text(
        &user,
        &room,
        BOT,
        "Following **Blog**, read every 1 s. The 1 entries",
    )
    .await;
    user.send_text(&room, &format!("!feed add {base}/json 1s"))
        .await;
    wait_for_text(&user, &room, BOT, "Following **Jay**").await;
    // Later polls are conditional, and an unchanged feed answers 304.
    until("conditional requests", || {
        feeds.lock().unwrap().not_modified >= 4
    })
    .await;

    // New entries, an edit of an old one, and a reorder.
    change_rss(&feeds, |rss| {
        *rss = vec![
            item("a3", "Alpha three"),
            item("a1", "Alpha one (edited)"),
            item("a2", "Alpha two"),
        ]
    });
    {
        let mut f = feeds.lock().unwrap();
        f.atom.insert(
            0,
            (
                "urn:b2".into(),
                "Beta two".into(),
                "2024-01-02T00:00:00Z".into(),
            ),
        );
        f.atom_version += 1;
        f.json.insert(0, item("j2", "Jay two"));
    }
    wait_for_text(
        &user,
        &room,
        BOT,
        "News: Alpha three https://news.example/a3",
    )
    .await;
    wait_for_text(
        &user,
        &room,
        BOT,
        "Blog: Beta two https://blog.example/urn:b2",
    )
    .await;

    // An entry that disappears and comes back is not new.
    let version = change_rss(&feeds, |rss| rss.retain(|(key, _)| key != "a3"));
    until("the poll without a3", || {
        feeds.lock().unwrap().rss_served == version
    })
    .await;
    change_rss(&feeds, |rss| {
        rss.insert(0, item("a3", "Alpha three"));
        rss.insert(0, item("a4", "Alpha four"));
    });
    wait_for_text(&user, &room, BOT, "News: Alpha four").await;

    // A feed that keeps failing is reported once, and its recovery too.
    user.send_text(&room, &format!("!feed add {base}/flaky 1s"))
        .await;
    wait_for_text(&user, &room, BOT, "Following **Flaky**").await;
    feeds.lock().unwrap().flaky_down = true;
    let failing = wait_for_text(&user, &room, BOT, "**Flaky** has failed 2 times in a row").await;
    assert!(
        failing["content"]["body"]
            .as_str()
            .unwrap()
            .contains("503 Service Unavailable"),
        "{failing}"
    );
    feeds.lock().unwrap().flaky_down = false;
    wait_for_text(&user, &room, BOT, "**Flaky** can be read again").await;
    user.send_text(&room, &format!("!feed remove {base}/flaky"))
        .await;
    wait_for_text(&user, &room, BOT, "No longer following **Flaky**").await;

    // Trestle stops; the feed changes meanwhile; after the restart only the new entry comes.
    harness.stop().await;
    change_rss(&feeds, |rss| rss.insert(0, item("a5", "Alpha five")));
    let router = trestle_notify::router_with(settings()).unwrap();
    harness.restart(router).await;
    wait_for_text(&user, &room, BOT, "News: Alpha five").await;
    // A few more polls after the restart post nothing again.
    let polled = feeds.lock().unwrap().not_modified;
    until("polls after the restart", || {
        feeds.lock().unwrap().not_modified >= polled + 4
    })
    .await;
    harness.app.idle().await;

    let posted = bodies(&user, &room, |sender| sender == BOT).await;
    let count = |prefix: &str| posted.iter().filter(|b| b.starts_with(prefix)).count();
    for once in [
        "News: Alpha three ",
        "News: Alpha four ",
        "News: Alpha five ",
        "Blog: Beta two ",
        "Jay: Jay two ",
    ] {
        assert_eq!(count(once), 1, "{once}: {posted:#?}");
    }
    for never in [
        "News: Alpha one",
        "News: Alpha two",
        "Blog: Beta one",
        "Jay: Jay one",
    ] {
        assert_eq!(count(never), 0, "{never}: {posted:#?}");
    }
    // Entries arrive in feed order.
    let order: Vec<&String> = posted.iter().filter(|b| b.starts_with("News:")).collect();
    assert!(order[0].contains("three") && order[1].contains("four") && order[2].contains("five"));

    // Listing and removing.
    user.send_text(&room, "!feed list").await;
    wait_for_text(&user, &room, BOT, "Feeds followed here").await;
    user.send_text(&room, &format!("!feed remove {base}/rss"))
        .await;
    wait_for_text(&user, &room, BOT, "No longer following **News**").await;

    harness.stop().await;
    server.abort();
}

#[tokio::test]
async fn unreadable_and_private_feeds_are_refused() {
    let mut strict = settings();
    strict.allow_private_addresses = false;
    strict.feed_min_interval_secs = 60;
    let harness = start(strict).await;
    let (user, room) = harness.user_in_room_with_bot("erin").await;
    user.send_text(&room, "!feed add http://127.0.0.1:9/rss")
        .await;
    wait_for_text(&user, &room, BOT, "private or local address").await;
    user.send_text(&room, "!forward add http://localhost:9/in")
        .await;
    wait_for_text(&user, &room, BOT, "I cannot send there").await;
    user.send_text(&room, "!feed add https://example.org/rss 1s")
        .await;
    wait_for_text(&user, &room, BOT, "Feeds are polled at most every 1 min").await;
}

/// An entry whose title changes after it was posted: its message is edited (`m.replace`), once
/// per change, never posted again; after a restart too. An entry never posted changes nothing.
#[tokio::test]
async fn an_entry_changed_after_it_was_posted_edits_its_message() {
    let feeds: Shared = Arc::default();
    feeds.lock().unwrap().rss = vec![item("a1", "Alpha one")];
    let (base, server) = feed_server(feeds.clone()).await;
    let mut harness = start(settings()).await;
    let (user, room) = harness.user_in_room_with_bot("fay").await;
    user.send_text(&room, &format!("!feed add {base}/rss 1s"))
        .await;
    wait_for_text(&user, &room, BOT, "Following **News**").await;

    change_rss(&feeds, |rss| rss.insert(0, item("a2", "Alpha two")));
    let original =
        wait_for_text(&user, &room, BOT, "News: Alpha two https://news.example/a2").await;
    let original_id = original["event_id"].as_str().unwrap().to_owned();

    let is_edit = |e: &serde_json::Value| {
        e["sender"] == BOT && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
    };
    let edit_to = |text: &'static str| {
        let original_id = original_id.clone();
        move |e: &serde_json::Value| {
            is_edit(e)
                && e["content"]["m.relates_to"]["event_id"] == original_id.as_str()
                && e["content"]["m.new_content"]["body"] == text
        }
    };
    change_rss(&feeds, |rss| rss[0].1 = "Alpha two, corrected".into());
    let edit = user
        .wait_for_event(
            &room,
            WAIT,
            edit_to("News: Alpha two, corrected https://news.example/a2"),
        )
        .await;
    assert_eq!(
        edit["content"]["body"], "* News: Alpha two, corrected https://news.example/a2",
        "{edit}"
    );

    // Trestle stops, the entry changes again: the edit comes after the restart.
    harness.stop().await;
    change_rss(&feeds, |rss| rss[0].1 = "Alpha two, final".into());
    harness
        .restart(trestle_notify::router_with(settings()).unwrap())
        .await;
    user.wait_for_event(
        &room,
        WAIT,
        edit_to("News: Alpha two, final https://news.example/a2"),
    )
    .await;

    // An entry that was there before the feed was added was never posted: nothing to edit.
    let version = change_rss(&feeds, |rss| rss[1].1 = "Alpha one (edited)".into());
    until("the poll with a1 changed", || {
        feeds.lock().unwrap().rss_served == version
    })
    .await;
    let polled = feeds.lock().unwrap().not_modified;
    until("more polls", || {
        feeds.lock().unwrap().not_modified >= polled + 3
    })
    .await;
    harness.app.idle().await;

    let events = user.messages(&room).await;
    let edits: Vec<_> = events.iter().filter(|e| is_edit(e)).collect();
    assert_eq!(edits.len(), 2, "one edit per change: {edits:#?}");
    let posted = bodies(&user, &room, |sender| sender == BOT).await;
    let starting = |prefix: &str| posted.iter().filter(|b| b.starts_with(prefix)).count();
    assert_eq!(starting("News: Alpha two"), 1, "posted once: {posted:#?}");
    assert_eq!(starting("News: Alpha one"), 0, "{posted:#?}");
    assert_eq!(starting("* News: Alpha one"), 0, "{posted:#?}");

    harness.stop().await;
    server.abort();
}
