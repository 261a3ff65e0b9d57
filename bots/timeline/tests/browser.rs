//! The timeline's web page in a real headless Chromium, against a real Synapse, on the
//! older room version 10 (room ids with a server name): Bob logs in through the page and posts; Alice logs in,
//! follows him from his profile and sees the post in her home feed. A screenshot is saved.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/cdp.rs"]
mod cdp;

use serde_json::json;
use trestle_tests::appservice::Harness;
use trestle_timeline::{PLUGIN, Settings};

const POST: &str = "Hello from <Chromium> & \"friends\" <script>alert(1)</script>";

async fn log_in(browser: &mut cdp::Browser, user: &str, password: &str) {
    browser
        .wait_for("the login form", "!document.getElementById('login').hidden")
        .await;
    browser.fill("#login-user", user).await;
    browser.fill("#login-password", password).await;
    browser.click("#login-button").await;
    browser
        .wait_for(
            "the logged-in page",
            "!document.getElementById('app').hidden",
        )
        .await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('timeline.user')")
            .await,
        json!(format!("@{user}:localhost"))
    );
}

#[tokio::test]
async fn log_in_post_follow_and_read_the_feed_in_chromium() {
    let registration = PLUGIN.generate_registration(None, "localhost");
    let settings = Settings {
        room_version: Some("10".into()),
        // One post per page, to page through two.
        page_size: 1,
        ..Settings::default()
    };
    let harness = Harness::start(registration, trestle_timeline::router(settings).unwrap()).await;
    let bob = harness.synapse.register_user("bob", "password-bob").await;
    harness
        .synapse
        .register_user("alice", "password-alice")
        .await;

    let mut browser = cdp::Browser::start().await;
    browser.navigate(&format!("{}/", harness.url)).await;
    log_in(&mut browser, "bob", "password-bob").await;
    browser
        .wait_for(
            "the empty feed",
            "document.getElementById('view').dataset.ready !== undefined",
        )
        .await;
    for text in ["First!", POST] {
        browser.fill("#compose-text", text).await;
        browser.click("#compose-button").await;
        browser
            .wait_for(
                "the post in Bob's feed",
                &format!(
                    "[...document.querySelectorAll('#view .post .body')].some(e => e.textContent === {})",
                    json!(text)
                ),
            )
            .await;
    }
    // The token lives in the session only.
    assert_eq!(browser.eval("localStorage.length").await, json!(0));

    browser.click("#logout-button").await;
    log_in(&mut browser, "alice", "password-alice").await;
    browser
        .eval("location.hash = '#/user/' + encodeURIComponent('@bob:localhost'); true")
        .await;
    browser
        .wait_for("Bob's profile", "document.getElementById('follow-button')")
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('follow-button').textContent")
            .await,
        json!("Follow")
    );
    browser.click("#follow-button").await;
    browser
        .wait_for(
            "the Unfollow button",
            "document.getElementById('follow-button') && document.getElementById('follow-button').textContent === 'Unfollow'",
        )
        .await;
    browser.eval("location.hash = '#/'; true").await;
    browser
        .wait_for(
            "Bob's post in Alice's feed",
            "document.getElementById('view').dataset.ready === '#/' && document.querySelector('#view .post')",
        )
        .await;
    let shown = browser
        .eval(
            "[...document.querySelectorAll('#view .post')].map(p => ({ \
               author: p.dataset.author, \
               text: p.querySelector('.body').textContent, \
               html: p.querySelector('.body').innerHTML }))",
        )
        .await;
    assert_eq!(shown.as_array().unwrap().len(), 1, "{shown}");
    // The older post is one click away.
    browser.click("#more").await;
    browser
        .wait_for(
            "the older post",
            "document.querySelectorAll('#view .post').length === 2 && !document.getElementById('more')",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#view .post .body')[1].textContent")
            .await,
        json!("First!")
    );
    assert_eq!(shown[0]["author"], "@bob:localhost");
    assert_eq!(shown[0]["text"], POST, "the text is shown as written");
    assert!(
        shown[0]["html"]
            .as_str()
            .unwrap()
            .contains("&lt;script&gt;"),
        "the text is escaped: {shown}"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('script').length")
            .await,
        json!(1),
        "the post's script became an element"
    );

    // Alice likes the post and replies to it in its thread.
    browser.click("#view .post .like").await;
    browser
        .wait_for(
            "the like",
            "document.querySelector('#view .post .like').textContent === '♥ 1'",
        )
        .await;
    browser.click("#view .post .replies").await;
    browser
        .wait_for("the thread", "document.getElementById('reply-form')")
        .await;
    browser.fill("#reply-text", "Nice one").await;
    browser.click("#reply-button").await;
    browser
        .wait_for(
            "the reply in the thread",
            "[...document.querySelectorAll('#view .post.reply .body')].some(e => e.textContent === 'Nice one')",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('#view .post .replies').textContent")
            .await,
        json!("↩ 1 reply")
    );

    let screenshot = browser.screenshot().await;

    // She edits her reply in place.
    browser.click("#view .post.reply .edit").await;
    browser
        .fill("#view .post.reply .edit-text", "Nice one, edited")
        .await;
    browser.click("#view .post.reply .save").await;
    browser
        .wait_for(
            "the edited reply",
            "document.querySelector('#view .post.reply .body') \
             && document.querySelector('#view .post.reply .body').textContent === 'Nice one, edited' \
             && document.querySelector('#view .post.reply .meta').textContent.includes('edited')",
        )
        .await;

    // Her own reply has a Delete button, Bob's post none; deleting takes the reply away.
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('#view .post')].map(p => Boolean(p.querySelector('.delete')))")
            .await,
        json!([false, true])
    );
    browser.click("#view .post.reply .delete").await;
    browser
        .wait_for(
            "the reply gone",
            "document.getElementById('reply-form') && !document.querySelector('#view .post.reply')",
        )
        .await;
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline-browser");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("alice-thread.png");
    std::fs::write(&path, &screenshot).unwrap();
    eprintln!("screenshot: {}", path.display());
    browser.close().await;

    // Room version 10 ids name the server.
    let room = bob
        .call_ok(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                trestle_tests::synapse::encode("#timeline_bob:localhost")
            ),
            None,
        )
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(room.ends_with(":localhost"), "{room}");
}
