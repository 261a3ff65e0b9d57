//! The timeline against a real Synapse, on room version 12: follows, posts, the home feed with
//! its cursor, threads, likes, bad input, the Atom feed, and a reindex into an empty
//! PostgreSQL store that yields the same feed.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trestle::{Appservice, Store};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::UserClient,
};
use trestle_timeline::{PLUGIN, Settings, content::POST_TYPE, query};

#[path = "support/api.rs"]
mod api;

use api::{Api, texts};

fn enc(segment: &str) -> String {
    trestle_tests::synapse::encode(segment)
}

/// Posts of type `POST_TYPE` in a room, as a member sees them.
async fn posts_in(user: &UserClient, room: &str) -> usize {
    user.messages(room)
        .await
        .iter()
        .filter(|e| e["type"] == POST_TYPE)
        .count()
}

#[tokio::test]
async fn follow_post_reply_like_and_reindex_on_room_version_12() {
    let settings = Settings {
        room_version: Some("12".into()),
        admins: vec!["@bob:localhost".into()],
        ..Settings::default()
    };
    let registration = PLUGIN.generate_registration(None, "localhost");
    let harness = Harness::start(
        registration.clone(),
        trestle_timeline::router(settings).unwrap(),
    )
    .await;
    let alice = harness
        .synapse
        .register_user("alice", "password-alice")
        .await;
    let bob = harness.synapse.register_user("bob", "password-bob").await;

    // Bob logs in through the API, with his password: the token is his own.
    let nobody = Api::new(&harness.url, None);
    let (status, error) = nobody
        .call(
            Method::POST,
            "/api/login",
            Some(json!({ "user": "bob", "password": "wrong" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["errcode"], "M_FORBIDDEN");
    let login = nobody
        .ok(
            Method::POST,
            "/api/login",
            Some(json!({ "user": "bob", "password": "password-bob" })),
        )
        .await;
    assert_eq!(login["user_id"], "@bob:localhost");
    let b = Api::new(&harness.url, login["access_token"].as_str());
    let a = Api::new(&harness.url, Some(&alice.access_token));
    let (status, _) = nobody.call(Method::GET, "/api/feed", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Nobody to follow before Bob's first post.
    let (status, error) = a
        .call(Method::POST, "/api/users/@bob:localhost/follow", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    let first = b.post("first").await;
    let second = b.post("second <b>bold</b> & more").await;
    let third = b.post("third").await;
    let room = first["room_id"].as_str().unwrap().to_owned();
    assert!(
        !room.contains(':'),
        "room version 12 ids have no server name: {room}"
    );
    assert_eq!(second["room_id"], room.as_str());
    assert_eq!(first["author"], "@bob:localhost");
    // The room is Bob's: created by him, typed as a timeline, readable by anyone, with an alias.
    let create = bob
        .call_ok(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.create/",
                enc(&room)
            ),
            None,
        )
        .await;
    assert_eq!(create["type"], "org.trestle.timeline");
    assert_eq!(create["room_version"], "12");
    let alias = bob
        .call_ok(
            Method::GET,
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc("#timeline_bob:localhost")
            ),
            None,
        )
        .await;
    assert_eq!(alias["room_id"], room.as_str());

    // Alice follows Bob: she joins his room.
    a.ok(Method::POST, "/api/users/@bob:localhost/follow", None)
        .await;
    assert!(bob.joined_members(&room).await.contains(&alice.user_id));

    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(
        texts(&feed),
        ["third", "second <b>bold</b> & more", "first"]
    );
    for post in feed["posts"].as_array().unwrap() {
        assert_eq!(post["author"], "@bob:localhost", "{post}");
        assert_eq!(post["author_name"], "bob", "{post}");
    }
    assert_eq!(feed["next"], Value::Null);
    // Two at a time, with a cursor.
    let page = a.ok(Method::GET, "/api/feed?limit=2", None).await;
    assert_eq!(texts(&page), ["third", "second <b>bold</b> & more"]);
    let cursor = page["next"].as_str().unwrap();
    let page = a
        .ok(
            Method::GET,
            &format!("/api/feed?limit=2&before={}", enc(cursor)),
            None,
        )
        .await;
    assert_eq!(texts(&page), ["first"]);
    assert_eq!(page["next"], Value::Null);
    let (status, error) = a.call(Method::GET, "/api/feed?before=nonsense", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    // Alice replies in a thread and likes the post.
    let second_id = second["event_id"].as_str().unwrap();
    let reply = a
        .ok(
            Method::POST,
            "/api/posts",
            Some(json!({ "text": "a reply", "reply_to": second_id })),
        )
        .await;
    assert_eq!(reply["thread_root"], second_id);
    assert_eq!(reply["author"], "@alice:localhost");
    let liked = a
        .ok(
            Method::POST,
            &format!("/api/posts/{}/like", enc(second_id)),
            None,
        )
        .await;
    assert_eq!(liked["like_count"], 1);
    assert_eq!(liked["liked"], true);
    // Liking twice is one like.
    a.ok(
        Method::POST,
        &format!("/api/posts/{}/like", enc(second_id)),
        None,
    )
    .await;
    // The reply is an m.thread relation and the like an m.annotation, in Bob's room.
    let events = bob.messages(&room).await;
    let reply_event = events
        .iter()
        .find(|e| e["event_id"] == reply["event_id"])
        .unwrap();
    assert_eq!(
        reply_event["content"]["m.relates_to"]["rel_type"],
        "m.thread"
    );
    assert_eq!(
        reply_event["content"]["m.relates_to"]["event_id"],
        second_id
    );
    let likes: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "m.reaction" && e["sender"] == "@alice:localhost")
        .collect();
    assert_eq!(likes.len(), 1, "{likes:?}");
    assert_eq!(
        likes[0]["content"]["m.relates_to"]["rel_type"],
        "m.annotation"
    );

    let thread = b
        .ok(Method::GET, &format!("/api/posts/{}", enc(second_id)), None)
        .await;
    assert_eq!(thread["post"]["reply_count"], 1);
    assert_eq!(thread["post"]["like_count"], 1);
    assert_eq!(thread["post"]["liked"], false, "Bob did not like it");
    assert_eq!(thread["replies"].as_array().unwrap().len(), 1);
    assert_eq!(thread["replies"][0]["text"], "a reply");
    assert_eq!(thread["replies"][0]["author"], "@alice:localhost");
    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(feed["posts"][1]["event_id"], second_id);
    assert_eq!(feed["posts"][1]["reply_count"], 1);
    assert_eq!(feed["posts"][1]["like_count"], 1);
    assert_eq!(texts(&feed).len(), 3, "replies stay in their thread");

    // Bob answers Alice's reply: the answer stays in the post's thread, replying to her.
    let reply_id = reply["event_id"].as_str().unwrap();
    let answer = b
        .ok(
            Method::POST,
            "/api/posts",
            Some(json!({ "text": "thanks", "reply_to": reply_id })),
        )
        .await;
    assert_eq!(answer["thread_root"], second_id);
    let answer_event = bob.event(&room, answer["event_id"].as_str().unwrap()).await;
    let relation = &answer_event["content"]["m.relates_to"];
    assert_eq!(relation["event_id"], second_id);
    assert_eq!(relation["m.in_reply_to"]["event_id"], reply_id);
    assert_eq!(relation["is_falling_back"], false);
    let thread = a
        .ok(Method::GET, &format!("/api/posts/{}", enc(second_id)), None)
        .await;
    assert_eq!(thread["post"]["reply_count"], 2);
    let replies: Vec<_> = thread["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["author"].as_str().unwrap(), r["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        replies,
        [
            ("@alice:localhost", "a reply"),
            ("@bob:localhost", "thanks")
        ]
    );

    // Bad input: each refused with a clear error, and nothing sent.
    let before = posts_in(&bob, &room).await;
    for (body, status, errcode) in [
        (
            json!({ "text": "x".repeat(501) }),
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
        ),
        (
            json!({ "text": "hi", "author": "@bob:localhost" }),
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        ),
        (
            json!({ "text": "hi", "html": "<b>hi</b><script>alert(1)</script>" }),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            json!({ "text": "hi", "reply_to": "$doesnotexist" }),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            json!({ "text": "   " }),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            json!({ "txt": "typo" }),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
    ] {
        let (got, error) = a.call(Method::POST, "/api/posts", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["errcode"], errcode, "{body}: {error}");
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    assert_eq!(posts_in(&bob, &room).await, before, "bad posts were sent");
    let profile = a.ok(Method::GET, "/api/users/@alice:localhost", None).await;
    assert_eq!(
        profile["room_id"],
        Value::Null,
        "a refused post created a room"
    );

    // Alice reposts Bob's third post: a post in her own timeline, new now, pointing at his.
    let third_id = third["event_id"].as_str().unwrap();
    let repost = a
        .ok(
            Method::POST,
            &format!("/api/posts/{}/repost", enc(third_id)),
            None,
        )
        .await;
    assert_eq!(repost["repost_of"], third_id);
    assert_eq!(repost["author"], "@alice:localhost");
    assert_eq!(repost["text"], "third");
    assert_ne!(repost["room_id"], room.as_str());
    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(feed["posts"][0]["event_id"], repost["event_id"]);

    // Straight through Matrix: a post Alice forges in Bob's room is no post of his; her like,
    // pushed by the homeserver, is counted; redacting it (unlike) uncounts it.
    let forged = alice
        .send_event(
            &room,
            POST_TYPE,
            json!({ "body": "I am Bob", "org.trestle.timeline.text": "I am Bob" }),
        )
        .await;
    let first_id = first["event_id"].as_str().unwrap();
    alice
        .send_event(
            &room,
            "m.reaction",
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": first_id, "key": "❤️" } }),
        )
        .await;
    let started = std::time::Instant::now();
    loop {
        let thread = a
            .ok(Method::GET, &format!("/api/posts/{}", enc(first_id)), None)
            .await;
        if thread["post"]["like_count"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the like sent through Matrix was not indexed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, _) = a
        .call(Method::GET, &format!("/api/posts/{}", enc(&forged)), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the forged post was indexed");
    let unliked = a
        .ok(
            Method::DELETE,
            &format!("/api/posts/{}/like", enc(first_id)),
            None,
        )
        .await;
    assert_eq!(unliked["like_count"], 0);

    // Bob's profile and Atom feed.
    let profile = nobody
        .ok(Method::GET, "/api/users/@bob:localhost", None)
        .await;
    assert_eq!(profile["followers"], 1);
    assert_eq!(profile["room_id"], room.as_str());
    assert_eq!(
        texts(&profile),
        ["third", "second <b>bold</b> & more", "first"]
    );
    let atom = reqwest::get(format!("{}/atom/{}", harness.url, enc("@bob:localhost")))
        .await
        .unwrap();
    assert_eq!(atom.status(), StatusCode::OK);
    assert!(
        atom.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let atom = atom.text().await.unwrap();
    assert!(
        atom.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
        "{atom}"
    );
    assert!(
        atom.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"),
        "{atom}"
    );
    assert_eq!(atom.matches("<entry>").count(), 3, "{atom}");
    assert!(
        atom.contains("second &lt;b&gt;bold&lt;/b&gt; &amp; more"),
        "{atom}"
    );
    assert!(
        !atom.contains("<b>bold"),
        "unescaped HTML in the feed: {atom}"
    );
    assert!(
        atom.contains(&format!("<id>matrix:roomid/{}/e/", &room[1..])),
        "{atom}"
    );
    let (status, _) = nobody
        .call(Method::GET, "/atom/@nobody:localhost", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bob edits his third post (an m.replace); Alice may not.
    let path = format!("/api/posts/{}", enc(third_id));
    let (status, error) = a
        .call(Method::PUT, &path, Some(json!({ "text": "hijacked" })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let edited = b
        .ok(Method::PUT, &path, Some(json!({ "text": "third, edited" })))
        .await;
    assert_eq!(edited["text"], "third, edited");
    assert!(edited["edited_ts"].is_i64(), "{edited}");
    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(feed["posts"][1]["text"], "third, edited");
    assert_eq!(feed["posts"][1]["event_id"], third_id);
    assert_eq!(texts(&feed).len(), 4, "an edit is no new post");

    // The index is a cache: read from the rooms alone into an empty PostgreSQL store, the
    // feed, the thread and the profile are the same.
    harness.app.idle().await;
    let db = harness.app.store().pool();
    let feed_before = query::feed(db, "@alice:localhost", None, 100)
        .await
        .unwrap();
    let thread_before = query::thread(db, "@alice:localhost", second_id)
        .await
        .unwrap();
    let profile_before = query::profile(db, "@alice:localhost", "@bob:localhost", None, 100)
        .await
        .unwrap();
    assert_eq!(feed_before.posts.len(), 4);
    let store = Store::connect(&trestle_tests::postgres::fresh_database().await)
        .await
        .unwrap();
    let fresh = Appservice::builder(registration, harness.synapse.base_url(), "localhost")
        .store(store)
        .build()
        .await
        .unwrap();
    let read = trestle_timeline::reindex(&fresh).await.unwrap();
    assert_eq!(read.rooms, 2, "{read:?}");
    let db = fresh.store().pool();
    assert_eq!(
        query::feed(db, "@alice:localhost", None, 100)
            .await
            .unwrap(),
        feed_before
    );
    assert_eq!(
        query::thread(db, "@alice:localhost", second_id)
            .await
            .unwrap(),
        thread_before
    );
    assert_eq!(
        query::profile(db, "@alice:localhost", "@bob:localhost", None, 100)
            .await
            .unwrap(),
        profile_before
    );
    // Reindexing again changes nothing.
    trestle_timeline::reindex(&fresh).await.unwrap();
    assert_eq!(
        query::feed(db, "@alice:localhost", None, 100)
            .await
            .unwrap(),
        feed_before
    );

    // An admin rebuilds the live index through the API; nobody else may.
    let (status, error) = a.call(Method::POST, "/api/reindex", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let live = a.ok(Method::GET, "/api/feed", None).await;
    let done = b.ok(Method::POST, "/api/reindex", None).await;
    assert_eq!(done["rooms"], 2, "{done}");
    assert_eq!(a.ok(Method::GET, "/api/feed", None).await, live);

    // Only its author (or the timeline's owner) deletes a post; deleting redacts it.
    let first_id = first["event_id"].as_str().unwrap();
    let (status, error) = a
        .call(
            Method::DELETE,
            &format!("/api/posts/{}", enc(first_id)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    b.ok(
        Method::DELETE,
        &format!("/api/posts/{}", enc(first_id)),
        None,
    )
    .await;
    let (status, _) = a
        .call(Method::GET, &format!("/api/posts/{}", enc(first_id)), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let redacted = bob.event(&room, first_id).await;
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(
        texts(&feed),
        ["third", "third, edited", "second <b>bold</b> & more"]
    );

    // A timeline room made with another client: the bot, invited, joins and indexes it. A
    // room that is no timeline it leaves.
    let carol = harness
        .synapse
        .register_user("carol", "password-carol")
        .await;
    let carols = carol
        .create_room(json!({
            "preset": "public_chat",
            "creation_content": { "type": "org.trestle.timeline" },
            "invite": ["@timeline:localhost"],
        }))
        .await;
    carol
        .wait_for_event(&carols, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@timeline:localhost"
                && e["content"]["membership"] == "join"
        })
        .await;
    carol
        .send_event(
            &carols,
            POST_TYPE,
            json!({ "body": "from another client", "org.trestle.timeline.text": "from another client" }),
        )
        .await;
    let started = std::time::Instant::now();
    loop {
        let profile = nobody
            .ok(Method::GET, "/api/users/@carol:localhost", None)
            .await;
        if texts(&profile) == ["from another client"] {
            assert_eq!(profile["room_id"], carols.as_str());
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "Carol's room was not indexed: {profile}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let chat = carol
        .create_room(json!({ "preset": "private_chat", "invite": ["@timeline:localhost"] }))
        .await;
    carol
        .wait_for_event(&chat, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@timeline:localhost"
                && e["content"]["membership"] == "leave"
        })
        .await;

    // Unfollowing leaves the room, and the feed empties.
    a.ok(Method::DELETE, "/api/users/@bob:localhost/follow", None)
        .await;
    assert!(!bob.joined_members(&room).await.contains(&alice.user_id));
    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(texts(&feed), ["third"], "only her repost is left");
}
