//! The timeline as people use it, in a real headless Chromium against a real Synapse: avatars
//! and display names through the bot's authenticated-media proxy, mentions and hashtags as
//! links, relative times, a new post, a like and a reply arriving on an open page without a
//! reload, posting an image uploaded with the user's own token, search, a bio, keyboard use
//! and landmarks, and the layout at a phone's and a desktop's width (screenshots kept under
//! `$CARGO_TARGET_TMPDIR/timeline-screenshots/`). The live stream's own bounds are tested in
//! `live.rs`.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/api.rs"]
mod api;
#[path = "support/cdp.rs"]
mod cdp;
#[path = "support/page.rs"]
mod page;

use api::Api;
use base64::Engine;
use page::{
    article, home, key, layout, loaded, pick_image, reload, save, search, shown, tab, token,
    viewport,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trestle_tests::{appservice::Harness, synapse::encode};
use trestle_timeline::{
    PLUGIN, Settings,
    content::{IMAGE_KEY, POST_TYPE},
};

/// A 1×1 PNG: Bob's avatar.
const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

const HELLO: &str = "Hello #trestle, says @alice:localhost";
const EVIL: &str = "evil <img src=x onerror=\"window.pwned=1\"> text";

#[tokio::test]
async fn images_live_updates_search_and_layout_in_chromium() {
    let registration = PLUGIN.generate_registration(None, "localhost");
    let harness = Harness::start(
        registration,
        trestle_timeline::router(Settings::default()).unwrap(),
    )
    .await;
    let url = harness.url.clone();
    let bob_matrix = harness.synapse.register_user("bob", "password-bob").await;
    let alice_matrix = harness
        .synapse
        .register_user("alice", "password-alice")
        .await;
    harness
        .synapse
        .register_user("carol", "password-carol")
        .await;

    // Bob's name and avatar, set in Matrix as any client sets them.
    let pixel = base64::engine::general_purpose::STANDARD
        .decode(PIXEL)
        .unwrap();
    let avatar = bob_matrix
        .upload_media(&pixel, "image/png", "bob.png")
        .await;
    let profile = format!("/_matrix/client/v3/profile/{}", encode("@bob:localhost"));
    bob_matrix
        .call_ok(
            Method::PUT,
            &format!("{profile}/avatar_url"),
            Some(&json!({ "avatar_url": avatar })),
        )
        .await;
    bob_matrix
        .call_ok(
            Method::PUT,
            &format!("{profile}/displayname"),
            Some(&json!({ "displayname": "Bob Builder" })),
        )
        .await;

    let bob = Api::new(&url, Some(&token(&url, "bob", "password-bob").await));
    let alice = Api::new(&url, Some(&token(&url, "alice", "password-alice").await));
    let hello = bob.post(HELLO).await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(EVIL).await;
    // The mention is an intentional one: Matrix clients notify Alice.
    let bob_room = bob.ok(Method::GET, "/api/me", None).await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = bob_matrix.messages(&bob_room).await;
    let hello_event = sent
        .iter()
        .find(|e| e["event_id"] == hello.as_str())
        .unwrap();
    assert_eq!(
        hello_event["content"]["m.mentions"],
        json!({ "user_ids": ["@alice:localhost"] })
    );
    alice
        .ok(
            Method::POST,
            &format!("/api/users/{}/follow", encode("@bob:localhost")),
            None,
        )
        .await;

    // The proxy serves Bob's avatar, as an image that can do nothing on its own; it serves
    // no media the timeline does not use, and takes no file that is not what it says.
    let http = reqwest::Client::new();
    let media = |mxc: &str| format!("{url}/media/{}", mxc.strip_prefix("mxc://").unwrap());
    let response = http.get(media(&avatar)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), pixel);
    let unused = bob_matrix
        .upload_media(&pixel, "image/png", "unused.png")
        .await;
    let response = http.get(media(&unused)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = http
        .post(format!("{url}/api/media"))
        .bearer_auth(&alice_matrix.access_token)
        .header("content-type", "image/png")
        .body("<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["errcode"], "M_INVALID_PARAM", "{error}");
    let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
    huge.resize(9 << 20, 0);
    let response = http
        .post(format!("{url}/api/media"))
        .bearer_auth(&alice_matrix.access_token)
        .header("content-type", "image/png")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["errcode"], "M_TOO_LARGE", "{error}");
    let (status, error) = alice
        .call(
            Method::POST,
            "/api/posts",
            Some(json!({ "text": "x", "image": { "url": "https://example.org/x.png", "mimetype": "image/png" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = alice
        .call(
            Method::POST,
            "/api/posts",
            Some(json!({ "text": "x", "image": { "url": avatar, "mimetype": "image/svg+xml" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    for (change, why) in [
        (json!({}), "nothing to change"),
        (
            json!({ "avatar_url": "https://example.org/a.png" }),
            "not an mxc",
        ),
        (json!({ "display_name": "  " }), "empty"),
    ] {
        let (status, error) = alice.call(Method::PUT, "/api/profile", Some(change)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert!(error["error"].as_str().unwrap().contains(why), "{error}");
    }

    let mut browser = cdp::Browser::start().await;
    browser.navigate(&format!("{url}/")).await;
    browser
        .wait_for("the login form", "!document.getElementById('login').hidden")
        .await;
    browser.fill("#login-user", "alice").await;
    browser.fill("#login-password", "password-alice").await;
    browser.click("#login-button").await;
    browser
        .wait_for(
            "Bob's posts in Alice's feed",
            "document.querySelectorAll('#view .post').length === 2",
        )
        .await;

    // His display name, and his avatar loaded through the proxy.
    browser
        .wait_for("Bob's avatar", &loaded("#view .post img.avatar", 1))
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('#view .post .author .name').textContent")
            .await,
        json!("Bob Builder")
    );
    // Markup in a post stays text.
    assert_eq!(shown(&mut browser).await, json!([EVIL, HELLO]));
    assert_eq!(
        browser
            .eval("[document.querySelectorAll('#view .post .body img').length, window.pwned === undefined]")
            .await,
        json!([0, true])
    );
    // Mentions and hashtags are links; the text reads as written.
    let hello_article = article(&hello);
    assert_eq!(
        browser
            .eval(&format!(
                "[...{hello_article}.querySelectorAll('.body a')].map(a => [a.className, a.getAttribute('href'), a.textContent])"
            ))
            .await,
        json!([
            ["hashtag", "#/search/%23trestle", "#trestle"],
            ["mention", "#/user/%40alice%3Alocalhost", "@alice:localhost"]
        ])
    );
    // Times are relative, the absolute time in the element.
    let time = browser
        .eval(&format!(
            "(() => {{ const t = {hello_article}.querySelector('time'); \
             return [t.textContent, Math.abs(Date.parse(t.dateTime) - Date.now()) < 600000, t.title.length > 0]; }})()"
        ))
        .await;
    assert!(
        time[0] == "just now" || time[0].as_str().unwrap().ends_with(" min ago"),
        "{time}"
    );
    assert_eq!((&time[1], &time[2]), (&json!(true), &json!(true)), "{time}");

    // Live: a new post, a like and a reply appear on the open page, which never reloads.
    browser.eval("window.notReloaded = true; true").await;
    browser
        .wait_for("the live stream", "document.body.dataset.live === 'open'")
        .await;
    bob.post("Live from Bob").await;
    browser
        .wait_for(
            "the live post",
            "document.querySelector('#view .post .body').textContent === 'Live from Bob'",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('live-status').textContent")
            .await,
        json!("New post by Bob Builder")
    );
    bob.ok(
        Method::POST,
        &format!("/api/posts/{}/like", encode(&hello)),
        None,
    )
    .await;
    browser
        .wait_for(
            "the live like",
            &format!("{hello_article}.querySelector('.like').textContent === '♡ 1'"),
        )
        .await;
    bob.ok(
        Method::POST,
        "/api/posts",
        Some(json!({ "text": "And a reply", "reply_to": hello })),
    )
    .await;
    browser
        .wait_for(
            "the live reply count",
            &format!("{hello_article}.querySelector('.replies').textContent === '↩ 1 reply'"),
        )
        .await;
    // In the open thread, a reply appears together with the new count.
    browser
        .eval(&format!(
            "{hello_article}.querySelector('.replies').click(); true"
        ))
        .await;
    browser
        .wait_for(
            "the thread",
            "document.getElementById('reply-form') && document.querySelectorAll('#view .post.reply').length === 1",
        )
        .await;
    bob.ok(
        Method::POST,
        "/api/posts",
        Some(json!({ "text": "A second reply", "reply_to": hello })),
    )
    .await;
    browser
        .wait_for(
            "the live reply in the thread",
            "document.querySelectorAll('#view .post.reply').length === 2",
        )
        .await;
    assert_eq!(
        browser
            .eval(
                "[document.querySelector('#view .post .replies').textContent, \
                    document.querySelectorAll('#view .post.reply .body')[1].textContent, \
                    document.getElementById('live-status').textContent]"
            )
            .await,
        json!(["↩ 2 replies", "A second reply", "New reply by Bob Builder"])
    );
    home(&mut browser).await;
    assert_eq!(browser.eval("window.notReloaded").await, json!(true));

    // Alice posts an image from the page: uploaded with her token, shown through the proxy.
    pick_image(&mut browser, "#compose-image", 120, 80).await;
    let picked = browser
        .eval("!document.getElementById('compose-alt-label').hidden")
        .await;
    assert_eq!(picked, json!(true), "the description field shows");
    browser.fill("#compose-alt", "A red square").await;
    browser.fill("#compose-text", "Look #trestle").await;
    browser.click("#compose-button").await;
    browser
        .wait_for(
            "Alice's image",
            "(() => { const i = document.querySelector('#view .post img.post-image'); \
             return i && i.alt === 'A red square' && i.complete && i.naturalWidth === 120; })()",
        )
        .await;
    assert_eq!(
        shown(&mut browser).await[0],
        json!("Look #trestle"),
        "her post is on top, once"
    );
    assert_eq!(browser.eval("window.notReloaded").await, json!(true));
    // In Matrix: her post names the image, which she uploaded to the content repository.
    let me = alice.ok(Method::GET, "/api/me", None).await;
    let posts: Vec<Value> = alice_matrix
        .messages(me["room_id"].as_str().unwrap())
        .await
        .into_iter()
        .filter(|e| e["type"] == POST_TYPE)
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let image = &posts[0]["content"][IMAGE_KEY];
    assert_eq!(posts[0]["sender"], "@alice:localhost");
    assert_eq!(image["info"]["mimetype"], "image/png", "{image}");
    assert_eq!(
        (&image["info"]["w"], &image["info"]["h"]),
        (&json!(120), &json!(80))
    );
    assert_eq!(image["alt"], "A red square");
    let bytes = alice_matrix
        .download_media(image["url"].as_str().unwrap())
        .await;
    assert!(bytes.starts_with(b"\x89PNG"));
    assert_eq!(json!(bytes.len()), image["info"]["size"]);

    // Search: a hashtag's link lists its posts; the search box finds words; markup found by
    // a search is still text.
    browser.click("#view .post .hashtag").await;
    browser
        .wait_for(
            "the hashtag's posts",
            "document.getElementById('view-heading') \
             && document.getElementById('view-heading').textContent === 'Search: #trestle'",
        )
        .await;
    assert_eq!(shown(&mut browser).await, json!(["Look #trestle", HELLO]));
    assert_eq!(search(&mut browser, "live").await, json!(["Live from Bob"]));
    assert_eq!(search(&mut browser, "onerror").await, json!([EVIL]));
    assert_eq!(
        browser
            .eval("[document.querySelectorAll('#view .post .body img').length, window.pwned === undefined]")
            .await,
        json!([0, true])
    );

    // Profiles: Alice sets her name, avatar and bio; Bob's shows his avatar, name and counts.
    browser.click("#nav-profile").await;
    browser
        .wait_for("Alice's profile", "document.getElementById('bio-text')")
        .await;
    browser.fill("#name-text", "Alice Liddell").await;
    pick_image(&mut browser, "#avatar-image", 40, 40).await;
    browser.fill("#bio-text", "I build <b>bridges</b>").await;
    browser.click("#profile-button").await;
    browser
        .wait_for(
            "her bio",
            "document.getElementById('profile-bio') \
             && document.getElementById('profile-bio').textContent === 'I build <b>bridges</b>'",
        )
        .await;
    let profile = alice
        .ok(
            Method::GET,
            &format!("/api/users/{}", encode("@alice:localhost")),
            None,
        )
        .await;
    assert_eq!(profile["bio"], "I build <b>bridges</b>");
    // Her name and avatar are her Matrix profile's, set with her token, and shown at once.
    assert_eq!(
        browser
            .eval("document.getElementById('profile-name').textContent")
            .await,
        json!("Alice Liddell")
    );
    browser
        .wait_for(
            "her new avatar",
            &loaded(".profile-head img.avatar.large", 40),
        )
        .await;
    let matrix_profile = alice_matrix
        .call_ok(
            Method::GET,
            &format!("/_matrix/client/v3/profile/{}", encode("@alice:localhost")),
            None,
        )
        .await;
    assert_eq!(matrix_profile["displayname"], "Alice Liddell");
    assert_eq!(
        matrix_profile["avatar_url"], profile["avatar_url"],
        "{profile}"
    );
    assert!(
        browser
            .eval("document.querySelector('#view .post .author .name').textContent")
            .await
            == json!("Alice Liddell"),
        "her posts show her new name"
    );
    browser
        .eval("location.hash = '#/user/' + encodeURIComponent('@bob:localhost'); true")
        .await;
    browser
        .wait_for(
            "Bob's profile",
            "document.getElementById('profile-name') \
             && document.getElementById('profile-name').textContent === 'Bob Builder'",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('profile-counts').textContent")
            .await,
        json!("1 follower · 0 following")
    );
    browser
        .wait_for(
            "his large avatar",
            &loaded(".profile-head img.avatar.large", 1),
        )
        .await;
    // The tab's title names the view.
    assert_eq!(
        browser.eval("document.title").await,
        json!("Bob Builder · Timeline")
    );
    // A new view's heading takes the focus, for screen readers.
    assert_eq!(
        browser.eval("document.activeElement.id").await,
        json!("profile-name")
    );

    // Every control has a name; the page has its landmarks.
    home(&mut browser).await;
    assert_eq!(
        browser
            .eval(
                "[...document.querySelectorAll('input, textarea, button, select')] \
                 .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') \
                   && !(c.tagName === 'BUTTON' && c.textContent.trim())) \
                 .map(c => c.id || c.outerHTML)",
            )
            .await,
        json!([])
    );
    assert_eq!(
        browser
            .eval("['header', 'nav[aria-label]', 'main', '[role=search]', '[role=status]', 'article[aria-label]'].filter(s => !document.querySelector(s))")
            .await,
        json!([])
    );
    // The keyboard's order: the skip link first, then the navigation, then writing a post.
    reload(&mut browser, &url).await;
    let mut order = Vec::new();
    for _ in 0..9 {
        order.push(tab(&mut browser).await);
    }
    assert_eq!(
        order,
        [
            "skip-link",
            "Timeline",
            "Home",
            "nav-profile",
            "search-text",
            "search-button",
            "logout-button",
            "compose-text",
            "compose-image"
        ]
    );
    // The skip link takes the focus to the posts' heading.
    reload(&mut browser, &url).await;
    assert_eq!(tab(&mut browser).await, "skip-link");
    key(&mut browser, "Enter", 13, Some("\r")).await;
    browser
        .wait_for(
            "the focus on the heading",
            "document.activeElement.id === 'view-heading'",
        )
        .await;

    // A phone: one column, nothing wider than the screen, the image within it.
    viewport(&mut browser, 390, 844, true).await;
    let phone = layout(&mut browser).await;
    // Kept before the checks, to look at when they fail.
    save("phone-feed.png", &browser.screenshot().await);
    let edge = |rect: &Value, side: &str| rect[side].as_f64().unwrap();
    assert_eq!(phone["fits"], true, "{phone}");
    assert!(
        edge(&phone["header"], "bottom") <= edge(&phone["main"], "top") + 1.0,
        "{phone}"
    );
    assert!(edge(&phone["image"], "right") <= 390.0, "{phone}");
    // Her profile on the phone, with its form, no wider than the screen either.
    browser.click("#nav-profile").await;
    browser
        .wait_for("her profile", "document.getElementById('profile-form')")
        .await;
    save("phone-profile.png", &browser.screenshot().await);
    assert_eq!(layout(&mut browser).await["fits"], true);
    home(&mut browser).await;
    // A desktop: the navigation beside the posts.
    viewport(&mut browser, 1280, 900, false).await;
    let desktop = layout(&mut browser).await;
    save("desktop-feed.png", &browser.screenshot().await);
    assert_eq!(desktop["fits"], true, "{desktop}");
    assert!(
        edge(&desktop["header"], "right") <= edge(&desktop["main"], "left"),
        "{desktop}"
    );
    assert!(
        edge(&desktop["search"], "right") <= edge(&desktop["header"], "right"),
        "{desktop}"
    );
    browser.close().await;
}
