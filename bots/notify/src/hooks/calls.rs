//! A webhook's recent calls: what the caller sent, what became of it and what the template
//! made of it, so that whoever set the hook up can see why a message looks the way it does or
//! never came (hookshot#479, open since 2022: its users debug templates blind).
//!
//! The last [`KEEP`] calls of each hook are kept, rate-limited ones aside (a flood must not
//! turn into writes). Secrets never reach the log: signature and token headers, and body
//! fields named like secrets, are replaced by `<redacted>`, as is the hook's own token or
//! secret wherever it appears. `!webhook log NAME` sends the room's admin the last calls in a
//! direct message, with a link to a page of them all that is valid for an hour.

use std::time::Duration;

use sqlx::Row;
use trestle::{
    Appservice,
    axum::{
        extract::{Path, Query, State},
        http::{HeaderMap, StatusCode, header},
        response::{IntoResponse, Response},
    },
};

use trestle::store::rfc3339;

use super::Hook;
use crate::{Result, Shared, db, sign};

/// Calls kept per hook.
pub(crate) const KEEP: i64 = 20;

/// The most of a body kept, in bytes.
const BODY_KEPT: usize = 4096;

/// How long a link to the page of calls works.
const LINK_LIFETIME: Duration = Duration::from_secs(3600);

/// What became of one call.
#[derive(Debug)]
pub(crate) struct Call {
    /// The HTTP status answered.
    pub(crate) status: u16,
    /// `posted`, or why not, or what went wrong on the way.
    pub(crate) outcome: String,
    /// The request, redacted ([`describe_request`]).
    pub(crate) request: serde_json::Value,
    /// The plain body of the message posted, if one was.
    pub(crate) message: Option<String>,
}

/// Names whose values are secrets: headers and body fields alike.
fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "cookie",
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "credential",
        "api_key",
        "apikey",
        "private",
    ]
    .iter()
    .any(|word| name.contains(word))
}

const REDACTED: &str = "<redacted>";

/// The request as it is kept: method, headers and the start of the body, secrets replaced.
pub(crate) fn describe_request(
    hook: &Hook,
    method: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> serde_json::Value {
    let scrub = |text: &str| {
        let mut text = text.replace(&hook.token, REDACTED);
        if let Some(secret) = hook.secret.as_deref().filter(|s| !s.is_empty()) {
            text = text.replace(secret, REDACTED);
        }
        text
    };
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| {
            let value = match secret_name(name.as_str()) {
                true => REDACTED.to_owned(),
                false => scrub(&String::from_utf8_lossy(value.as_bytes())),
            };
            (name.as_str().to_owned(), value.into())
        })
        .collect();
    let body = match body {
        None => serde_json::Value::from("<not read: over the size limit>"),
        Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(json) => {
                let json = redact_json(json, &scrub);
                let text = json.to_string();
                // Kept as JSON where it is whole, so that the page can lay it out.
                match text.len() <= BODY_KEPT {
                    true => json,
                    false => cut(&text),
                }
            }
            Err(_) if is_form(&headers) => cut(&scrub(&redact_form(bytes))),
            Err(_) => cut(&scrub(&String::from_utf8_lossy(bytes))),
        },
    };
    serde_json::json!({ "method": method, "headers": headers, "body": body })
}

fn is_form(headers: &serde_json::Map<String, serde_json::Value>) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.as_str())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Replaces the values of fields named like secrets, at any depth, and the hook's own token
/// and secret wherever they appear (`scrub`), keys included.
fn redact_json(value: serde_json::Value, scrub: &dyn Fn(&str) -> String) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = match secret_name(&key) && !value.is_object() && !value.is_array() {
                        true => REDACTED.into(),
                        false => redact_json(value, scrub),
                    };
                    (scrub(&key), value)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| redact_json(v, scrub)).collect())
        }
        Value::String(text) => Value::String(scrub(&text)),
        other => other,
    }
}

fn redact_form(bytes: &[u8]) -> String {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(bytes)
        .map(|(k, v)| {
            let v = if secret_name(&k) {
                REDACTED.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The first [`BODY_KEPT`] bytes of `text`, cut at a character boundary.
fn cut(text: &str) -> serde_json::Value {
    if text.len() <= BODY_KEPT {
        return text.into();
    }
    let mut end = BODY_KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len()).into()
}

/// Keeps `call` as the hook's newest, and forgets those past [`KEEP`].
pub(crate) async fn record(app: &Appservice, hook_id: &str, call: &Call) -> Result<()> {
    let pool = app.store().pool();
    sqlx::query(
        "INSERT INTO notify_hook_calls (hook_id, received_at, status, outcome, request, message)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hook_id)
    .bind(db::now_ms())
    .bind(call.status as i64)
    .bind(&call.outcome)
    .bind(call.request.to_string())
    .bind(&call.message)
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM notify_hook_calls WHERE hook_id = $1 AND seq <= (
             SELECT seq FROM notify_hook_calls WHERE hook_id = $1
             ORDER BY seq DESC LIMIT 1 OFFSET $2)",
    )
    .bind(hook_id)
    .bind(KEEP)
    .execute(pool)
    .await?;
    Ok(())
}

/// A call as kept, newest first from [`recent`].
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) received_at: i64,
    pub(crate) status: i64,
    pub(crate) outcome: String,
    pub(crate) request: String,
    pub(crate) message: Option<String>,
}

/// The hook's last `limit` calls, newest first.
pub(crate) async fn recent(app: &Appservice, hook_id: &str, limit: i64) -> Result<Vec<Kept>> {
    let rows = sqlx::query(
        "SELECT received_at, status, outcome, request, message FROM notify_hook_calls
         WHERE hook_id = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(hook_id)
    .bind(limit)
    .fetch_all(app.store().pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| Kept {
            received_at: r.get(0),
            status: r.get(1),
            outcome: r.get(2),
            request: r.get(3),
            message: r.get(4),
        })
        .collect())
}

/// The signature of a link to `hook_id`'s calls valid until `expires` (ms), keyed by the hook's
/// token: only the bot can make one, and a hook made anew (a new token) voids the old links.
/// The webhooks' own HMAC ([`crate::sign`]), its hex part only (it goes in a query string).
fn link_signature(hook: &Hook, expires: i64) -> String {
    let signed = sign::signature(&hook.token, link_message(hook, expires).as_bytes());
    signed.trim_start_matches("sha256=").to_owned()
}

fn link_message(hook: &Hook, expires: i64) -> String {
    format!("calls:{}:{expires}", hook.id)
}

/// A link to the page of the hook's calls, valid for an hour.
pub(crate) fn link(app: &Appservice, shared: &Shared, hook: &Hook) -> String {
    let expires = db::now_ms() + LINK_LIFETIME.as_millis() as i64;
    let base = super::base_url(app, shared);
    format!(
        "{base}/hook-calls/{}?expires={expires}&sig={}",
        hook.id,
        link_signature(hook, expires)
    )
}

/// The query of a link to the page of calls.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct LinkQuery {
    expires: i64,
    sig: String,
}

/// `GET /hook-calls/{id}?expires&sig`: the hook's kept calls as a page, for a signed link that
/// has not expired. Anything else is a 404 that tells nothing.
pub(crate) async fn page(
    State((app, shared)): State<(Appservice, Shared)>,
    Path(id): Path<String>,
    Query(query): Query<LinkQuery>,
) -> Response {
    if shared.ready(&app).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let hook = match super::by_id(&app, &id).await {
        Ok(Some(hook)) => hook,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let message = link_message(&hook, query.expires);
    let signed = sign::verify(
        &hook.token,
        message.as_bytes(),
        &format!("sha256={}", query.sig),
    );
    if !signed || query.expires < db::now_ms() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let calls = match recent(&app, &hook.id, KEEP).await {
        Ok(calls) => calls,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>Calls of {name}</title>\
         <h1>The last calls of webhook {name}</h1><p>Newest first; secrets are shown as \
         {redacted}.</p>",
        name = escape(&hook.name),
        redacted = escape(REDACTED),
    );
    if calls.is_empty() {
        html.push_str("<p>No calls yet.</p>");
    }
    for call in &calls {
        let request: serde_json::Value =
            serde_json::from_str(&call.request).unwrap_or(serde_json::Value::Null);
        let pretty = serde_json::to_string_pretty(&request).unwrap_or_default();
        html.push_str(&format!(
            "<section><h2>{at} — {status}: {outcome}</h2><h3>Message</h3><pre>{message}</pre>\
             <h3>Request</h3><pre>{request}</pre></section>",
            at = escape(&rfc3339(call.received_at)),
            status = call.status,
            outcome = escape(&call.outcome),
            message = escape(call.message.as_deref().unwrap_or("(none posted)")),
            request = escape(&pretty),
        ));
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Text only: nothing on the page may load or run anything.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn hook() -> Hook {
        Hook {
            id: "h1".into(),
            token: "tok123tok".into(),
            room_id: "!r:x".into(),
            name: "CI".into(),
            template: None,
            secret: Some("shh-secret".into()),
        }
    }

    #[test]
    fn secrets_never_reach_the_log() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-hub-signature-256", "sha256=abc".parse().unwrap());
        headers.insert("authorization", "Bearer xyz".parse().unwrap());
        headers.insert("x-gitlab-token", "shh-secret".parse().unwrap());
        headers.insert("referer", "https://x/hook/tok123tok".parse().unwrap());
        let body = br#"{"text": "hi", "api_key": "k1", "nested": {"password": "p1", "list": [{"token": "t1"}]}, "echo": "shh-secret"}"#;
        let kept = describe_request(&hook(), "POST", &headers, Some(body)).to_string();
        for secret in ["abc", "xyz", "k1", "p1", "t1", "shh-secret", "tok123tok"] {
            assert!(!kept.contains(secret), "{secret} in {kept}");
        }
        assert!(kept.contains("hi") && kept.contains("<redacted>"), "{kept}");

        let mut form = HeaderMap::new();
        form.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let kept = describe_request(&hook(), "POST", &form, Some(b"text=hi&secret=s2"));
        assert!(!kept.to_string().contains("s2"), "{kept}");
        assert!(kept.to_string().contains("text=hi"), "{kept}");
    }

    #[test]
    fn long_bodies_are_cut_at_a_character() {
        let body = "é".repeat(3000);
        let kept = describe_request(&hook(), "POST", &HeaderMap::new(), Some(body.as_bytes()));
        let text = kept["body"].as_str().unwrap();
        assert!(text.ends_with("(6000 bytes in all)"), "{text}");
        assert!(text.len() < 4200);
    }

    #[test]
    fn links_are_signed_per_hook_and_expire() {
        let hook = hook();
        let sig = link_signature(&hook, 1000);
        assert_eq!(sig, link_signature(&hook, 1000));
        assert_ne!(sig, link_signature(&hook, 1001));
        let other = Hook {
            token: "other".into(),
            ..hook
        };
        assert_ne!(sig, link_signature(&other, 1000));
    }
}
