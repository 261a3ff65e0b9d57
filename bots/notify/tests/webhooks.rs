//! Inbound webhooks against a real Synapse: made with a command, posted to over HTTP.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use common::{BOT, accept_dm, settings, start, wait_for_text};
use serde_json::{Value, json};
use trestle_notify::Settings;
use trestle_notify::sign;
use trestle_tests::appservice::WAIT;

async fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs JSON signed with `secret`; returns the status.
async fn post_signed(url: &str, secret: &str, json: &str) -> u16 {
    let signature = sign::signature(secret, json.as_bytes());
    let headers = [(sign::SIGNATURE_HEADER, signature.as_str())];
    post(url, "application/json", json.as_bytes(), &headers)
        .await
        .0
}

#[tokio::test]
async fn a_webhook_posts_as_its_own_ghost_and_refuses_bad_calls() {
    let limited = Settings {
        rate_burst: 30,
        ..settings()
    };
    let mut harness = start(limited.clone()).await;
    let (user, room) = harness.user_in_room_with_bot("alice").await;

    user.send_text(&room, "!webhook create \"Build Bot\"").await;
    wait_for_text(&user, &room, BOT, "Created webhook Build Bot").await;
    let dm = accept_dm(&user).await;
    let secret_message = wait_for_text(&user, &dm, BOT, "/hook/").await;
    let text = secret_message["content"]["body"].as_str().unwrap();
    let url = text
        .split_whitespace()
        .find(|w| w.contains("/hook/"))
        .unwrap()
        .to_owned();
    assert!(url.starts_with(&harness.url), "{url}");
    // The URL is only in the private room, never in the shared one.
    assert!(
        !user
            .messages(&room)
            .await
            .iter()
            .any(|e| e.to_string().contains(&url)),
        "the secret URL leaked into the room"
    );

    // JSON with Markdown, msgtype and mentions becomes a message from the hook's ghost.
    let (status, body) = post(
        &url,
        "application/json",
        json!({"text": "**deploy** finished", "msgtype": "m.notice",
               "mentions": {"user_ids": [user.user_id]}})
        .to_string()
        .as_bytes(),
        &[],
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"ok": true})));
    let message = user
        .wait_for_event(&room, WAIT, |e| {
            e["content"]["body"] == "**deploy** finished"
        })
        .await;
    let ghost = message["sender"].as_str().unwrap().to_owned();
    assert!(ghost.starts_with("@notify_hook_"), "{message}");
    assert_eq!(message["content"]["msgtype"], "m.notice");
    assert_eq!(
        message["content"]["formatted_body"].as_str().map(str::trim),
        Some("<p><strong>deploy</strong> finished</p>")
    );
    assert_eq!(
        message["content"]["m.mentions"]["user_ids"],
        json!([user.user_id])
    );
    assert_eq!(
        user.get_displayname(&ghost).await.as_deref(),
        Some("Build Bot")
    );

    // Plain text and forms work too.
    assert_eq!(post(&url, "text/plain", b"plain _words_", &[]).await.0, 200);
    wait_for_text(&user, &room, &ghost, "plain _words_").await;
    assert_eq!(
        post(
            &url,
            "application/x-www-form-urlencoded",
            b"text=from+a+form",
            &[]
        )
        .await
        .0,
        200
    );
    wait_for_text(&user, &room, &ghost, "from a form").await;

    // A call repeated with the same idempotency key is posted once.
    for _ in 0..2 {
        let (status, _) = post(
            &url,
            "text/plain",
            b"once only",
            &[("idempotency-key", "deploy-42")],
        )
        .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        post(&url, "text/plain", b"after the repeat", &[]).await.0,
        200
    );
    wait_for_text(&user, &room, &ghost, "after the repeat").await;
    let repeats = common::bodies(&user, &room, |s| s == ghost)
        .await
        .iter()
        .filter(|b| *b == "once only")
        .count();
    assert_eq!(repeats, 1);

    // Bad calls get Matrix-style errors.
    let wrong = format!("{}/hook/{}", harness.url, "0".repeat(64));
    let big = vec![b'a'; 65 * 1024];
    let bad_calls: [(&str, &str, &[u8], u16, &str); 4] = [
        (&wrong, "application/json", b"{}", 404, "M_NOT_FOUND"),
        (&url, "application/json", b"{not json", 400, "M_NOT_JSON"),
        (&url, "text/plain", &big, 413, "M_TOO_LARGE"),
        (&url, "image/png", b"x", 400, "M_UNRECOGNIZED"),
    ];
    for (target, content_type, body, status, errcode) in bad_calls {
        let (got, answer) = post(target, content_type, body, &[]).await;
        assert_eq!(
            (got, answer["errcode"].as_str()),
            (status, Some(errcode)),
            "{content_type}: {answer}"
        );
    }

    // A GitHub push renders readably without a template.
    let push = json!({
        "ref": "refs/heads/main",
        "compare": "https://github.com/o/r/compare/a...b",
        "repository": {"full_name": "o/r", "html_url": "https://github.com/o/r"},
        "pusher": {"name": "ada"}, "sender": {"login": "ada"},
        "commits": [{"id": "0123456789abcdef", "message": "Fix the parser",
                     "url": "https://github.com/o/r/commit/0123456", "author": {"name": "Ada"}}],
    });
    let (status, _) = post(
        &url,
        "application/json",
        push.to_string().as_bytes(),
        &[("x-github-event", "push")],
    )
    .await;
    assert_eq!(status, 200);
    let pushed = wait_for_text(&user, &room, &ghost, "pushed").await;
    let html = pushed["content"]["formatted_body"].as_str().unwrap();
    assert!(html.contains("<strong>ada</strong> pushed"), "{html}");
    assert!(html.contains("Fix the parser (Ada)"), "{html}");

    // A template renders the JSON fields.
    user.send_text(
        &room,
        "!webhook template \"Build Bot\" Build **{{ build.status }}** on {{ branch }}",
    )
    .await;
    wait_for_text(&user, &room, BOT, "now renders payloads with that template").await;
    let (status, _) = post(
        &url,
        "application/json",
        json!({"build": {"status": "green"}, "branch": "main"})
            .to_string()
            .as_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let templated = wait_for_text(&user, &room, &ghost, "Build **green** on main").await;
    assert!(
        templated["content"]["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<strong>green</strong>")
    );

    // With a secret, unsigned and badly signed calls are refused and post nothing.
    user.send_text(&room, "!webhook secret \"Build Bot\"").await;
    wait_for_text(&user, &room, BOT, "now refuses unsigned requests").await;
    let secret_message = wait_for_text(&user, &dm, BOT, "Signing secret").await;
    let secret = secret_message["content"]["body"]
        .as_str()
        .unwrap()
        .split('`')
        .nth(1)
        .unwrap()
        .to_owned();
    let unsigned = json!({"text": "unsigned call"}).to_string();
    let (status, body) = post(&url, "application/json", unsigned.as_bytes(), &[]).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    assert_eq!(post_signed(&url, "wrong secret", &unsigned).await, 401);
    user.send_text(&room, "!webhook template \"Build Bot\"")
        .await;
    wait_for_text(&user, &room, BOT, "without a template again").await;
    let signed = json!({"text": "signed call"}).to_string();
    assert_eq!(post_signed(&url, &secret, &signed).await, 200);
    wait_for_text(&user, &room, &ghost, "signed call").await;
    harness.app.idle().await;
    let timeline = user.messages(&room).await;
    assert!(
        !timeline
            .iter()
            .any(|e| e["content"]["body"] == "unsigned call"),
        "a refused call was posted"
    );

    // Someone without power may not manage webhooks; the refusal names the level needed.
    let guest = harness
        .synapse
        .register_user("guest", "password-1234")
        .await;
    user.invite(&room, &guest.user_id).await;
    guest.join(&room).await;
    guest
        .send_text(&room, "!webhook remove \"Build Bot\"")
        .await;
    wait_for_text(&user, &room, BOT, "!webhook needs power level 50").await;
    assert_eq!(
        post_signed(&url, &secret, &signed).await,
        200,
        "still there"
    );

    // Calls answered 200 are posted even if Trestle stops at once: each exactly once, in order.
    let burst: Vec<String> = (0..15).map(|i| format!("burst {i:02}")).collect();
    for text in &burst {
        let json = serde_json::json!({ "text": text }).to_string();
        assert_eq!(post_signed(&url, &secret, &json).await, 200);
    }
    harness.stop().await;
    harness
        .restart(trestle_notify::router_with(limited).unwrap())
        .await;
    wait_for_text(&user, &room, &ghost, "burst 14").await;
    harness.app.idle().await;
    let posted: Vec<String> = common::bodies(&user, &room, |s| s == ghost)
        .await
        .into_iter()
        .filter(|b| b.starts_with("burst "))
        .collect();
    assert_eq!(posted, burst);

    // Past the burst, calls are refused with a time to wait, until the rate lets them in.
    let mut refused = None;
    for i in 0..40 {
        let json = serde_json::json!({ "text": format!("limit {i}") }).to_string();
        let signature = sign::signature(&secret, json.as_bytes());
        let (status, body) = post(
            &url,
            "application/json",
            json.as_bytes(),
            &[(sign::SIGNATURE_HEADER, &signature)],
        )
        .await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the rate limit never applied");
    assert_eq!(
        (status, body["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms <= 1001),
        "{body}"
    );

    // Renamed, the ghost's name changes; removed, the URL is dead.
    user.send_text(&room, "!webhook rename \"Build Bot\" Deployer")
        .await;
    wait_for_text(&user, &room, BOT, "Renamed webhook Build Bot to Deployer").await;
    assert_eq!(
        user.get_displayname(&ghost).await.as_deref(),
        Some("Deployer")
    );
    user.send_text(&room, "!webhook avatar Deployer mxc://localhost/avatar1")
        .await;
    wait_for_text(&user, &room, BOT, "Set the avatar of Deployer").await;
    let path = format!(
        "/_matrix/client/v3/profile/{}/avatar_url",
        trestle_tests::synapse::encode(&ghost)
    );
    let profile = user.call_ok(reqwest::Method::GET, &path, None).await;
    assert_eq!(profile["avatar_url"], "mxc://localhost/avatar1");
    user.send_text(&room, "!webhook list").await;
    wait_for_text(&user, &room, BOT, "- Deployer (signed)").await;
    user.send_text(&room, "!webhook remove Deployer").await;
    wait_for_text(&user, &room, BOT, "Removed webhook Deployer").await;
    assert_eq!(post_signed(&url, &secret, &signed).await, 404);
    harness.stop().await;
}

/// `!webhook log`: the hook's admin gets the last calls privately, what the template made of
/// each and why one was refused, and a signed link to a page of them, secrets redacted.
#[tokio::test]
async fn a_webhooks_recent_calls_are_shown_to_its_admin_with_secrets_redacted() {
    let harness = start(settings()).await;
    let (user, room) = harness.user_in_room_with_bot("gina").await;
    user.send_text(&room, "!webhook create Deploys").await;
    wait_for_text(&user, &room, BOT, "Created webhook Deploys").await;
    let dm = accept_dm(&user).await;
    let text = wait_for_text(&user, &dm, BOT, "/hook/").await["content"]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = text
        .split_whitespace()
        .find(|w| w.contains("/hook/"))
        .unwrap()
        .to_owned();
    let token = url.rsplit('/').next().unwrap().to_owned();
    user.send_text(&room, "!webhook template Deploys Deployed **{{ app }}**")
        .await;
    wait_for_text(&user, &room, BOT, "now renders payloads with that template").await;

    let good = json!({"app": "shop", "api_key": "k-12345", "auth": {"password": "p-678"}});
    let (status, _) = post(
        &url,
        "application/json",
        good.to_string().as_bytes(),
        &[("authorization", "Bearer b-999")],
    )
    .await;
    assert_eq!(status, 200);
    user.wait_for_event(&room, WAIT, |e| e["content"]["body"] == "Deployed **shop**")
        .await;
    let (status, _) = post(&url, "application/json", b"{not json", &[]).await;
    assert_eq!(status, 400);

    user.send_text(&room, "!webhook log Deploys").await;
    wait_for_text(&user, &room, BOT, "I sent you the last calls of Deploys").await;
    let log = wait_for_text(&user, &dm, BOT, "The last calls of webhook Deploys").await;
    // As rendered: the outcome and the message are escaped Markdown, shown as they were.
    let html = log["content"]["formatted_body"].as_str().unwrap();
    let refused = html.find("400: refused: M_NOT_JSON").expect(html);
    let posted = html.find("200: posted — Deployed **shop**").expect(html);
    assert!(refused < posted, "newest first: {html}");
    let body = log["content"]["body"].as_str().unwrap();
    let link = body
        .split_whitespace()
        .find(|w| w.contains("/hook-calls/"))
        .expect(body)
        .to_owned();
    for secret in ["k-12345", "p-678", "b-999", token.as_str()] {
        assert!(
            !body.contains(secret) && !html.contains(secret),
            "{secret} in {body}"
        );
    }

    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("Deployed **shop**"), "{page}");
    assert!(page.contains("&quot;app&quot;: &quot;shop&quot;"), "{page}");
    assert!(page.contains("&lt;redacted&gt;"), "{page}");
    assert!(page.contains("not valid JSON"), "{page}");
    for secret in ["k-12345", "p-678", "b-999", token.as_str()] {
        assert!(!page.contains(secret), "{secret} in the page");
    }
    // A link altered or expired shows nothing.
    let tampered = link.replace("expires=", "expires=9");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 404);
    let forged = format!("{}x", &link[..link.len() - 1]);
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 404);
}
