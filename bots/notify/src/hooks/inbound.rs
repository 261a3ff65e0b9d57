//! `POST /hook/{token}`: a webhook call becomes a message in the hook's room.
//!
//! The answer is 200 only once the message is in the durable outbox, so a caller that got 200
//! can forget the call: the message is sent even if Trestle or the homeserver stop now. Every
//! refusal is a 4xx with a Matrix `errcode` and posts nothing.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};
use trestle::sync::MutexExt;

use subtle::ConstantTimeEq;
use trestle::{
    Appservice,
    axum::{
        Json, Router,
        body::{Body, to_bytes},
        extract::{Path, State},
        http::{HeaderMap, Request, StatusCode},
        routing,
    },
    intent::SendOptions,
    ruma::RoomId,
};

use super::{
    calls,
    payload::{Origin, Payload, render},
};
use crate::{Shared, error::ApiError, sign};

/// The routes, served under the plugin's path.
pub fn routes(app: Appservice, shared: Shared) -> Router {
    Router::new()
        .route("/hook/{token}", routing::post(receive).put(receive))
        .route("/hook-calls/{id}", routing::get(calls::page))
        .with_state((app, shared))
}

async fn receive(
    State((app, shared)): State<(Appservice, Shared)>,
    Path(token): Path<String>,
    request: Request<Body>,
) -> Result<Json<serde_json::Value>, ApiError> {
    shared
        .ready(&app)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let hook = super::by_token(&app, &token)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(ApiError::not_found)?;
    // Refused before anything is read or kept: a flood must not become writes.
    shared.limiter.check(&hook.id)?;
    let (parts, body) = request.into_parts();
    let limit = shared.settings.max_body_bytes;
    let body = to_bytes(body, limit).await.ok();
    let request = calls::describe_request(
        &hook,
        parts.method.as_str(),
        &parts.headers,
        body.as_deref(),
    );
    let outcome = match body {
        Some(body) => post(&app, &hook, &parts.headers, &body).await,
        None => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("the body is over {limit} bytes"),
        )),
    };
    let call = match &outcome {
        Ok(posted) => calls::Call {
            status: 200,
            outcome: posted.outcome.clone(),
            request,
            message: Some(posted.message.clone()),
        },
        Err(error) => calls::Call {
            status: error.status.as_u16(),
            outcome: format!("refused: {} {}", error.errcode, error.error),
            request,
            message: None,
        },
    };
    if let Err(error) = calls::record(&app, &hook.id, &call).await {
        tracing::warn!(hook = %hook.id, %error, "could not keep a webhook call in its log");
    }
    outcome.map(|_| Json(serde_json::json!({ "ok": true })))
}

/// A call that became a message.
struct Posted {
    /// `posted`, with what went wrong on the way if anything did.
    outcome: String,
    /// The message's plain body.
    message: String,
}

/// Checks a call's signature, renders its payload and stores the message in the outbox.
async fn post(
    app: &Appservice,
    hook: &super::Hook,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Posted, ApiError> {
    if let Some(secret) = &hook.secret {
        check_signature(secret, headers, body)?;
    }
    let content_type = header(headers, "content-type");
    let payload = Payload::read(content_type.as_deref(), body)
        .map_err(|bad| ApiError::new(StatusCode::BAD_REQUEST, bad.errcode, bad.error))?;
    let origin = Origin {
        github_event: header(headers, "x-github-event"),
        gitlab_event: header(headers, "x-gitlab-event"),
    };
    let (message, outcome) = match render(&payload, &origin, hook.template.as_deref()) {
        Ok(message) => (message, "posted".to_owned()),
        Err(error) => {
            // A broken template must not lose the call: it is posted as if there were none.
            tracing::warn!(hook = %hook.id, %error, "webhook template failed");
            let message = render(&payload, &origin, None).map_err(|e| ApiError::internal(&e))?;
            (
                message,
                format!("posted without the template, which failed: {error}"),
            )
        }
    };
    let room = RoomId::parse(&hook.room_id).map_err(|e| ApiError::internal(&e))?;
    let ghost = super::ghost(app, &hook.id).map_err(|e| ApiError::internal(&e))?;
    let mut options = SendOptions::default();
    if let Some(key) = delivery_key(headers) {
        // A caller that repeats a call (it timed out, it crashed) sends the same key; the same
        // transaction id makes the homeserver keep one message.
        let digest = crate::db::digest(&key);
        options = options.txn_id(format!("notify.hook.{}.{}", hook.id, &digest[..32]));
    }
    // Stored in the outbox is what the caller needs: from there it is sent, whatever happens.
    let stored = ghost
        .send_json(&room, "m.room.message", message.content(), options)
        .queue()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    drop(stored);
    Ok(Posted {
        outcome,
        message: message.body,
    })
}

/// What identifies one call across the caller's retries: `Idempotency-Key`, or the delivery
/// ids GitHub and GitLab send.
fn delivery_key(headers: &HeaderMap) -> Option<String> {
    [
        "idempotency-key",
        "x-github-delivery",
        "x-gitlab-event-uuid",
    ]
    .iter()
    .find_map(|name| header(headers, name).map(|value| format!("{name}:{value}")))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A hook with a secret takes GitHub's `X-Hub-Signature-256` HMAC or GitLab's `X-Gitlab-Token`.
fn check_signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let signed = header(headers, sign::SIGNATURE_HEADER)
        .is_some_and(|signature| sign::verify(secret, body, &signature));
    let token = header(headers, "x-gitlab-token")
        .is_some_and(|token| bool::from(token.as_bytes().ct_eq(secret.as_bytes())));
    if signed || token {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "missing or wrong signature (X-Hub-Signature-256)",
        ))
    }
}

/// A token bucket per webhook: `burst` calls at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct Limiter {
    per_minute: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    /// A limiter; a `per_minute` of 0 turns it off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Limiter {
            per_minute: per_minute as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until there is one.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), ApiError> {
        if self.per_minute <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock_unpoisoned();
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - *tokens) * 60.0 / self.per_minute);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "too many calls to this webhook",
        );
        error.retry_after_ms = Some(wait.as_millis() as u64 + 1);
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_refills() {
        let limiter = Limiter::new(60, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", start).is_ok());
        }
        let refused = limiter.check_at("a", start).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.errcode, "M_LIMIT_EXCEEDED");
        assert!(refused.retry_after_ms.unwrap() <= 1001);
        // Another hook has its own bucket.
        assert!(limiter.check_at("b", start).is_ok());
        // One token a second comes back.
        assert!(
            limiter
                .check_at("a", start + Duration::from_millis(1001))
                .is_ok()
        );
        assert!(
            limiter
                .check_at("a", start + Duration::from_millis(1002))
                .is_err()
        );
        assert!(Limiter::new(0, 0).check_at("a", start).is_ok());
    }

    #[test]
    fn signatures_and_gitlab_tokens_are_checked() {
        let mut headers = HeaderMap::new();
        assert!(check_signature("s", &headers, b"x").is_err());
        headers.insert(
            sign::SIGNATURE_HEADER,
            sign::signature("s", b"x").parse().unwrap(),
        );
        assert!(check_signature("s", &headers, b"x").is_ok());
        assert_eq!(
            check_signature("s", &headers, b"y").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let mut gitlab = HeaderMap::new();
        gitlab.insert("x-gitlab-token", "s".parse().unwrap());
        assert!(check_signature("s", &gitlab, b"anything").is_ok());
        assert!(check_signature("t", &gitlab, b"anything").is_err());
    }
}
