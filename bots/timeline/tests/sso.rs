//! Logging in where the homeserver offers only single sign-on: a real Synapse whose one login
//! is CAS (a small CAS server of the test harness), password logins turned off, and the
//! timeline's URL in `sso.client_whitelist` so that Synapse hands the login token straight back.
//! Over plain HTTP: a callback carrying a login token is taken only in the browser that
//! started that sign-on. In headless Chromium: the page offers single sign-on and no password
//! form, and one click ends logged in. The same click where Synapse's single sign-on is an
//! OAuth 2.0 provider (a small one of the test harness), the kind most deployments use.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

// Shared with browser.rs, which uses all of it.
#[allow(dead_code)]
#[path = "support/cdp.rs"]
mod cdp;

use reqwest::{StatusCode, header, redirect::Policy};
use serde_json::{Value, json};
use trestle_tests::{appservice::Harness, cas::CasServer, oauth::OAuthServer, synapse::free_port};
use trestle_timeline::{PLUGIN, Settings};

/// Starts a sign-on as one browser would, following the redirects through Synapse and the CAS
/// server by hand: returns the browser's cookie and where the homeserver sends it back.
async fn sign_on(http: &reqwest::Client, timeline: &str) -> (String, String) {
    let start = http
        .get(format!("{timeline}/api/login/sso"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let cookie = start.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let mut location = start.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.contains("/_matrix/client/v3/login/sso/redirect?redirectUrl="),
        "{location}"
    );
    for _ in 0..10 {
        if location.starts_with(timeline) {
            return (cookie, location);
        }
        let hop = http.get(&location).send().await.unwrap();
        assert!(
            hop.status().is_redirection(),
            "GET {location}: {} {}",
            hop.status(),
            hop.text().await.unwrap()
        );
        location = hop.headers()[header::LOCATION].to_str().unwrap().to_owned();
    }
    panic!("never sent back to the timeline; last at {location}");
}

async fn get(http: &reqwest::Client, url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = http.get(url);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn finish(http: &reqwest::Client, timeline: &str, cookie: &str) -> (StatusCode, Value) {
    let response = http
        .post(format!("{timeline}/api/login/sso/finish"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The timeline on a Synapse whose only login is the single sign-on `provider` configures
/// (a block of `homeserver.yaml`), with the timeline's address in `sso.client_whitelist` so that
/// Synapse hands the login token straight back: the harness and the timeline's URL.
async fn start_sso_only(provider: &str) -> (Harness, String) {
    let port = free_port();
    let timeline = format!("http://127.0.0.1:{port}");
    let extra = format!(
        "{provider}password_config:\n  enabled: false\nsso:\n  client_whitelist:\n    - \"{timeline}/\"\n"
    );
    let mut registration = PLUGIN.generate_registration(None, "localhost");
    let harness = Harness::start_at(
        &mut registration,
        trestle_timeline::router(Settings::default()).unwrap(),
        &extra,
        port,
        timeline.clone(),
    )
    .await;
    (harness, timeline)
}

/// Clicks the page's sign-on link and waits until the page is back, logged in as `user`.
async fn click_sign_on(browser: &mut cdp::Browser, user: &str) {
    browser.click("#sso-button").await;
    browser
        .wait_for(
            &format!("the page logged in as {user}"),
            &format!(
                "!document.getElementById('app').hidden \
                 && sessionStorage.getItem('timeline.user') === '{user}'"
            ),
        )
        .await;
}

#[tokio::test]
async fn log_in_where_the_homeserver_offers_only_single_sign_on() {
    let cas = CasServer::start("carol", "Carol of CAS").await;
    let (harness, timeline) = start_sso_only(&cas.synapse_config()).await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();

    // What the page may offer: single sign-on only.
    let flows: Value = get(&http, &format!("{timeline}/api/login/flows"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(flows, json!({ "password": false, "sso": true }));

    // Carol signs on in her browser; the homeserver sends her back with a login token.
    let (carols_cookie, callback) = sign_on(&http, &timeline).await;
    assert!(callback.contains("loginToken="), "{callback}");
    assert_eq!((cas.logins(), cas.validated()), (1, 1));

    // That link opened in another browser (an attacker's token pushed on a victim, who would
    // then post as the attacker) is refused: without the cookie, and with the cookie of a
    // sign-on the other browser started itself.
    let response = get(&http, &callback, None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["errcode"], "M_FORBIDDEN", "{error}");
    let other = http
        .get(format!("{timeline}/api/login/sso"))
        .send()
        .await
        .unwrap();
    let others_cookie = other.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(others_cookie, carols_cookie);
    let response = get(&http, &callback, Some(&others_cookie)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, _) = finish(&http, &timeline, &others_cookie).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The refusals spent nothing: in Carol's own browser the same token logs her in.
    let response = get(&http, &callback, Some(&carols_cookie)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/?sso");
    let (status, login) = finish(&http, &timeline, &carols_cookie).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_eq!(login["user_id"], "@carol:localhost");
    let token = login["access_token"].as_str().unwrap();
    let me: Value = http
        .get(format!("{timeline}/api/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], "@carol:localhost", "{me}");
    let carol = harness.synapse.client("@carol:localhost", token);
    assert_eq!(
        carol.get_displayname("@carol:localhost").await.as_deref(),
        Some("Carol of CAS")
    );
    // Collected once; the callback cannot be replayed.
    let (status, _) = finish(&http, &timeline, &carols_cookie).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = get(&http, &callback, Some(&carols_cookie)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The page: no password form, a sign-on link, and one click through Synapse and CAS back
    // to the page, logged in.
    let mut browser = cdp::Browser::start().await;
    browser.navigate(&format!("{timeline}/")).await;
    browser
        .wait_for(
            "the sign-on link",
            "!document.getElementById('sso-login').hidden",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('login-form').hidden")
            .await,
        json!(true)
    );
    // Through Synapse and CAS and back: the page, with Carol's session in it.
    click_sign_on(&mut browser, "@carol:localhost").await;
    assert_eq!(
        browser
            .eval("document.getElementById('whoami').textContent")
            .await,
        json!("@carol:localhost")
    );
    // Nothing of the sign-on is left in the address.
    assert_eq!(browser.eval("location.search").await, json!(""));
    assert_eq!(cas.logins(), 2);
    let screenshot = browser.screenshot().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline-sso");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("carol-signed-on.png");
    std::fs::write(&path, &screenshot).unwrap();
    eprintln!("screenshot: {}", path.display());
    browser.close().await;
}

#[tokio::test]
async fn a_homeserver_without_single_sign_on_offers_only_passwords() {
    let registration = PLUGIN.generate_registration(None, "localhost");
    let harness = Harness::start(
        registration,
        trestle_timeline::router(Settings::default()).unwrap(),
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let flows: Value = get(&http, &format!("{}/api/login/flows", harness.url), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(flows, json!({ "password": true, "sso": false }));
    // Nothing started, nothing bound to the browser.
    let response = get(&http, &format!("{}/api/login/sso", harness.url), None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["errcode"], "M_NOT_FOUND", "{error}");
}

#[tokio::test]
async fn log_in_where_single_sign_on_is_an_oauth2_provider() {
    let oauth = OAuthServer::start("dave", "Dave of OAuth").await;
    let (harness, timeline) = start_sso_only(&oauth.synapse_config()).await;
    let http = reqwest::Client::new();
    let flows: Value = get(&http, &format!("{timeline}/api/login/flows"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(flows, json!({ "password": false, "sso": true }));

    // One click: the page, Synapse, the provider's authorization (Synapse's own session cookie
    // kept by the browser between its redirect and its callback), and back, logged in.
    let mut browser = cdp::Browser::start().await;
    browser.navigate(&format!("{timeline}/")).await;
    browser
        .wait_for(
            "the sign-on link",
            "!document.getElementById('sso-login').hidden",
        )
        .await;
    click_sign_on(&mut browser, "@dave:localhost").await;
    assert_eq!(browser.eval("location.search").await, json!(""));
    assert_eq!((oauth.authorizations(), oauth.userinfos()), (1, 1));
    // The session is Dave's, on the homeserver, with the name the provider gave.
    let token = browser
        .eval("sessionStorage.getItem('timeline.token')")
        .await;
    let dave = harness
        .synapse
        .client("@dave:localhost", token.as_str().unwrap());
    assert_eq!(
        dave.get_displayname("@dave:localhost").await.as_deref(),
        Some("Dave of OAuth")
    );
    browser.close().await;
}
