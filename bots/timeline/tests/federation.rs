//! Following a user of another homeserver by their Matrix id: two Synapses federating on
//! loopback, Trestle's timeline on A, Bob's timeline on B (made by a plain client, as B runs no
//! Trestle). Alice follows `@bob:B` through A's API; Bob's post from before and his post after
//! the follow both reach her feed through the index. Frank of B invites the bot instead, and
//! his timeline is indexed from its start. In Chromium, Dave follows Erin of B from her profile
//! page, which the index had never seen.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::{Synapse, UserClient, free_port},
};
use trestle_timeline::{PLUGIN, Settings, content::POST_TYPE};

#[path = "support/api.rs"]
mod api;
// Shared with browser.rs, which uses all of it.
#[allow(dead_code)]
#[path = "support/cdp.rs"]
mod cdp;

use api::{Api, texts};

fn post(text: &str) -> Value {
    json!({ "body": text, "org.trestle.timeline.text": text })
}

/// A timeline on B, made by a plain client: the room type, public, world-readable, and the
/// alias a timeline has.
async fn timeline_on_b(owner: &UserClient) -> String {
    let localpart = owner.user_id[1..].split(':').next().unwrap();
    owner
        .create_room(json!({
            "preset": "public_chat",
            "room_alias_name": format!("timeline_{localpart}"),
            "creation_content": { "type": "org.trestle.timeline" },
            "initial_state": [{
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": { "history_visibility": "world_readable" },
            }],
        }))
        .await
}

#[tokio::test]
async fn following_a_user_on_another_homeserver_by_matrix_id() {
    let (port_a, port_b) = (free_port(), free_port());
    let mut registration =
        PLUGIN.generate_registration(None, &Synapse::federating_server_name(port_a));
    let (harness, b) = tokio::join!(
        Harness::start_federating(
            &mut registration,
            port_a,
            trestle_timeline::router(Settings::default()).unwrap(),
            "",
        ),
        Synapse::start_federating(port_b, &[], ""),
    );
    let alice = harness
        .synapse
        .register_user("alice", "password-alice")
        .await;
    let bob = b.register_user("bob", "password-bob").await;
    let bob_id = bob.user_id.clone();
    assert!(
        bob_id.ends_with(&format!(":localhost:{port_b}")),
        "{bob_id}"
    );

    let room = timeline_on_b(&bob).await;
    let before = bob
        .send_event(&room, POST_TYPE, post("posted on B before anyone followed"))
        .await;

    let a = Api::new(&harness.url, Some(&alice.access_token));
    assert_eq!(texts(&a.ok(Method::GET, "/api/feed", None).await).len(), 0);

    // Someone on B with no timeline: nothing to follow, said plainly.
    let (status, error) = a
        .call(
            Method::POST,
            &format!("/api/users/@nobody:localhost:{port_b}/follow"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains(&format!("#timeline_nobody:localhost:{port_b}")),
        "{error}"
    );

    // Alice follows Bob by his Matrix id: she joins his room on B with her own token, over
    // federation, and the bot follows her in.
    let followed = a
        .ok(Method::POST, &format!("/api/users/{bob_id}/follow"), None)
        .await;
    assert_eq!(followed["room_id"], room.as_str(), "{followed}");
    let members = bob.joined_members(&room).await;
    assert!(members.contains(&alice.user_id), "{members:?}");
    assert!(
        members.contains(&harness.app.bot_user_id().to_string()),
        "{members:?}"
    );

    // The post from before the follow is in her feed at once: the bot read the room's history,
    // which A fetched from B.
    let feed = a.ok(Method::GET, "/api/feed", None).await;
    assert_eq!(texts(&feed), ["posted on B before anyone followed"]);
    assert_eq!(feed["posts"][0]["author"], bob_id.as_str());
    assert_eq!(feed["posts"][0]["event_id"], before.as_str());
    assert_eq!(feed["posts"][0]["room_id"], room.as_str());

    // Her own posts mix with his. A new post on B reaches A over federation, the appservice
    // through its push, and her feed.
    a.post("posted on A by alice").await;
    bob.send_event(&room, POST_TYPE, post("posted on B after the follow"))
        .await;
    a.poll(
        "/api/feed",
        "Bob's new post did not reach Alice's feed",
        WAIT,
        |feed| {
            texts(feed)
                == [
                    "posted on B after the follow",
                    "posted on A by alice",
                    "posted on B before anyone followed",
                ]
        },
    )
    .await;

    // His profile on A counts her as a follower; following again changes nothing.
    let profile = a
        .ok(Method::GET, &format!("/api/users/{bob_id}"), None)
        .await;
    assert_eq!(profile["room_id"], room.as_str());
    assert_eq!(profile["followers"], 1, "{profile}");
    assert_eq!(profile["followed"], true, "{profile}");
    a.ok(Method::POST, &format!("/api/users/{bob_id}/follow"), None)
        .await;

    // Unfollowing leaves the room on both servers' view.
    a.ok(Method::DELETE, &format!("/api/users/{bob_id}/follow"), None)
        .await;
    let started = std::time::Instant::now();
    while bob.joined_members(&room).await.contains(&alice.user_id) {
        assert!(started.elapsed() < WAIT, "Alice's leave did not reach B");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        texts(&a.ok(Method::GET, "/api/feed", None).await),
        ["posted on A by alice"]
    );

    // Frank on B invites the bot to his timeline instead: the bot joins over federation and
    // reads the room's start from B (here it holds only what came after its join), so the
    // room is known as a timeline and not left as none, and his earlier post is indexed.
    let frank = b.register_user("frank", "password-frank").await;
    let franks = timeline_on_b(&frank).await;
    frank
        .send_event(&franks, POST_TYPE, post("frank's post on B"))
        .await;
    frank
        .invite(&franks, harness.app.bot_user_id().as_str())
        .await;
    let nobody = Api::new(&harness.url, None);
    let profile = nobody
        .poll(
            &format!("/api/users/{}", frank.user_id),
            "Frank's invited timeline was not indexed",
            WAIT,
            |profile| texts(profile) == ["frank's post on B"],
        )
        .await;
    assert_eq!(profile["room_id"], franks.as_str());
    assert!(
        frank
            .joined_members(&franks)
            .await
            .contains(&harness.app.bot_user_id().to_string())
    );

    // On the page: Dave, on A, opens the profile of Erin, on B, whom the index has never seen,
    // and follows her from it; her post shows in his feed.
    let erin = b.register_user("erin", "password-erin").await;
    let erins = timeline_on_b(&erin).await;
    erin.send_event(&erins, POST_TYPE, post("erin's post on B"))
        .await;
    harness.synapse.register_user("dave", "password-dave").await;
    let mut browser = cdp::Browser::start().await;
    browser.navigate(&format!("{}/", harness.url)).await;
    browser
        .wait_for(
            "the login form",
            "!document.getElementById('login-form').hidden",
        )
        .await;
    browser.fill("#login-user", "dave").await;
    browser.fill("#login-password", "password-dave").await;
    browser.click("#login-button").await;
    browser
        .wait_for(
            "Dave's feed",
            "document.getElementById('view').dataset.ready !== undefined",
        )
        .await;
    browser
        .eval(&format!(
            "location.hash = '#/user/' + encodeURIComponent({}); true",
            json!(erin.user_id)
        ))
        .await;
    browser
        .wait_for(
            "the Follow button on Erin's profile",
            "document.getElementById('follow-button')",
        )
        .await;
    browser.click("#follow-button").await;
    browser
        .wait_for(
            "the Unfollow button",
            "document.getElementById('follow-button')?.textContent === 'Unfollow'",
        )
        .await;
    browser.eval("location.hash = '#/'; true").await;
    browser
        .wait_for(
            "Erin's post in Dave's feed",
            "[...document.querySelectorAll('#view .post .body')].some(e => e.textContent === \"erin's post on B\")",
        )
        .await;
    let members = erin.joined_members(&erins).await;
    assert!(
        members.contains(&harness.synapse.user_id("dave")),
        "{members:?}"
    );
    browser.close().await;
}
