//! The timeline's page in Chromium, as a test drives it: logging in through the API, reading
//! what the page shows, searching, keys, the viewport, screenshots.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{api::Api, cdp};

pub async fn token(url: &str, user: &str, password: &str) -> String {
    Api::new(url, None)
        .ok(
            Method::POST,
            "/api/login",
            Some(json!({ "user": user, "password": password })),
        )
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The texts of the posts the page shows, in order.
pub async fn shown(browser: &mut cdp::Browser) -> Value {
    browser
        .eval("[...document.querySelectorAll('#view .post .body')].map(e => e.textContent)")
        .await
}

/// Searches with the page's search box; answers the texts found, once one is shown.
pub async fn search(browser: &mut cdp::Browser, query: &str) -> Value {
    browser.fill("#search-text", query).await;
    browser.click("#search-button").await;
    browser
        .wait_for(
            &format!("the results for {query}"),
            &format!(
                "document.getElementById('view-heading').textContent === {} \
                 && document.querySelector('#view .post')",
                json!(format!("Search: {query}"))
            ),
        )
        .await;
    shown(browser).await
}

/// A JavaScript expression: the first image `selector` finds has loaded, `width` pixels wide.
pub fn loaded(selector: &str, width: u32) -> String {
    format!(
        "(() => {{ const i = document.querySelector({}); \
         return i && i.complete && i.naturalWidth === {width}; }})()",
        json!(selector)
    )
}

/// A JavaScript expression for the article of `event_id`.
pub fn article(event_id: &str) -> String {
    format!(
        "[...document.querySelectorAll('#view article.post')].find(a => a.dataset.eventId === {})",
        json!(event_id)
    )
}

pub async fn key(browser: &mut cdp::Browser, key: &str, code: u32, text: Option<&str>) {
    let mut down =
        json!({ "type": "keyDown", "key": key, "code": key, "windowsVirtualKeyCode": code });
    if let Some(text) = text {
        down["text"] = json!(text);
    }
    browser.call("Input.dispatchKeyEvent", down).await;
    browser
        .call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code }),
        )
        .await;
}

/// Presses Tab and names what has the focus then.
pub async fn tab(browser: &mut cdp::Browser) -> String {
    key(browser, "Tab", 9, None).await;
    browser
        .eval(
            "(() => { const e = document.activeElement; return e.id || e.textContent.trim(); })()",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn viewport(browser: &mut cdp::Browser, width: u32, height: u32, mobile: bool) {
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    browser
        .wait_for("the new width", &format!("window.innerWidth === {width}"))
        .await;
}

pub fn save(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Puts a PNG the page draws (`width` × `height`, one colour) in the file input `selector`, as
/// if picked from the disk.
pub async fn pick_image(browser: &mut cdp::Browser, selector: &str, width: u32, height: u32) {
    let script = format!(
        "(async () => {{ const c = document.createElement('canvas'); c.width = {width}; c.height = {height}; \
         const g = c.getContext('2d'); g.fillStyle = '#c00'; g.fillRect(0, 0, {width}, {height}); \
         const blob = await new Promise(r => c.toBlob(r, 'image/png')); \
         const files = new DataTransfer(); \
         files.items.add(new File([blob], 'picked.png', {{ type: 'image/png' }})); \
         const input = document.querySelector({}); input.files = files.files; \
         input.dispatchEvent(new Event('change')); return true; }})()",
        json!(selector)
    );
    assert_eq!(browser.eval(&script).await, json!(true), "picking an image");
}

/// Where the page's parts are: whether it is no wider than the window, and the boxes of the
/// header, the main part, the search form and the first post's image (null without one).
pub async fn layout(browser: &mut cdp::Browser) -> Value {
    browser
        .eval(
            "(() => { const box = (e) => e && e.getBoundingClientRect().toJSON(); return { \
             fits: document.documentElement.scrollWidth <= window.innerWidth, width: window.innerWidth, \
             header: box(document.querySelector('header')), main: box(document.querySelector('main')), \
             search: box(document.getElementById('search-form')), \
             image: box(document.querySelector('#view .post img.post-image')) }; })()",
        )
        .await
}

/// Goes to the home feed and waits until it is shown.
pub async fn home(browser: &mut cdp::Browser) {
    browser.eval("location.hash = '#/'; true").await;
    browser
        .wait_for(
            "the home feed",
            "document.getElementById('view').dataset.ready === '#/'",
        )
        .await;
}

/// Loads the page afresh at `url` (the session stays) and waits until its feed is shown.
pub async fn reload(browser: &mut cdp::Browser, url: &str) {
    browser.navigate(&format!("{url}/")).await;
    browser
        .wait_for(
            "the reloaded feed",
            "document.getElementById('view').dataset.ready === ''",
        )
        .await;
}
