//! A minimal Matrix client-server API client for tests. Every helper panics with the request, the
//! status and the body when the homeserver says no; `429 M_LIMIT_EXCEEDED` is retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};

/// Percent-encodes one path segment (everything except RFC 3986 unreserved characters).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn txn_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "trestle-tests-{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A logged-in user (or an appservice acting with its `as_token`).
#[derive(Clone)]
pub struct UserClient {
    /// Whom requests are made as.
    pub user_id: String,
    /// The token sent with every request (a user's, or the appservice's `as_token`).
    pub access_token: String,
    base_url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for UserClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserClient")
            .field("user_id", &self.user_id)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl UserClient {
    /// A client of the homeserver at `base_url` acting as `user_id` with `access_token`.
    pub fn new(
        base_url: String,
        user_id: String,
        access_token: String,
        http: reqwest::Client,
    ) -> Self {
        UserClient {
            user_id,
            access_token,
            base_url,
            http,
        }
    }

    /// The base URL of the homeserver requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request to `path` (starting with `/_matrix/…`, query string allowed) and returns the
    /// status code and the JSON body (`Null` if the body is not JSON). Retries on 429.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base_url, path);
        for _ in 0..20 {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.access_token);
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path} as {}: {e}", self.user_id));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 429 {
                let ms = value["retry_after_ms"].as_u64().unwrap_or(200).min(5000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
            return (status, value);
        }
        panic!(
            "{method} {path} as {}: still rate-limited after 20 attempts",
            self.user_id
        );
    }

    /// Like [`UserClient::call`], but panics unless the status is 2xx; returns the body.
    pub async fn call_ok(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} as {} failed: {status} {value}{}",
            self.user_id,
            body.map(|b| format!("\nrequest body: {b}"))
                .unwrap_or_default()
        );
        value
    }

    /// Uploads `data` as this user
    /// ([`POST /_matrix/media/v3/upload`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav3upload))
    /// and returns its `mxc://` URI.
    pub async fn upload_media(&self, data: &[u8], content_type: &str, name: &str) -> String {
        let url = format!(
            "{}/_matrix/media/v3/upload?filename={}",
            self.base_url,
            encode(name)
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.access_token)
            .header("content-type", content_type)
            .body(data.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("uploading {name} as {}: {e}", self.user_id));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "uploading {name}: {status} {body}");
        body["content_uri"]
            .as_str()
            .unwrap_or_else(|| panic!("no content_uri in {body}"))
            .to_owned()
    }

    /// Downloads `mxc` as this user
    /// ([`GET /_matrix/client/v1/media/download`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid))
    /// and returns its bytes.
    pub async fn download_media(&self, mxc: &str) -> Vec<u8> {
        let path = mxc
            .strip_prefix("mxc://")
            .unwrap_or_else(|| panic!("{mxc} is no mxc URI"));
        let url = format!("{}/_matrix/client/v1/media/download/{path}", self.base_url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.access_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("downloading {mxc} as {}: {e}", self.user_id));
        let status = response.status();
        assert!(status.is_success(), "downloading {mxc}: {status}");
        response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("downloading {mxc}: {e}"))
            .to_vec()
    }

    fn room_path(room_id: &str, rest: &str) -> String {
        format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
    }

    /// `POST /createRoom`; returns the room id.
    pub async fn create_room(&self, body: Value) -> String {
        let v = self
            .call_ok(Method::POST, "/_matrix/client/v3/createRoom", Some(&body))
            .await;
        v["room_id"]
            .as_str()
            .expect("room_id in /createRoom response")
            .to_owned()
    }

    /// Invites `user_id` to a room.
    pub async fn invite(&self, room_id: &str, user_id: &str) {
        let path = Self::room_path(room_id, "invite");
        self.call_ok(Method::POST, &path, Some(&json!({ "user_id": user_id })))
            .await;
    }

    /// Joins by room id or alias; returns the room id.
    pub async fn join(&self, room_id_or_alias: &str) -> String {
        let path = format!("/_matrix/client/v3/join/{}", encode(room_id_or_alias));
        let v = self.call_ok(Method::POST, &path, Some(&json!({}))).await;
        v["room_id"]
            .as_str()
            .expect("room_id in /join response")
            .to_owned()
    }

    /// Leaves a room.
    pub async fn leave(&self, room_id: &str) {
        let path = Self::room_path(room_id, "leave");
        self.call_ok(Method::POST, &path, Some(&json!({}))).await;
    }

    /// Sends an `m.room.message` with `msgtype: m.text`; returns the event id.
    pub async fn send_text(&self, room_id: &str, body: &str) -> String {
        self.send_event(
            room_id,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await
    }

    /// Sends a message-like event; returns the event id.
    pub async fn send_event(&self, room_id: &str, event_type: &str, content: Value) -> String {
        let path = Self::room_path(
            room_id,
            &format!("send/{}/{}", encode(event_type), encode(&txn_id())),
        );
        let v = self.call_ok(Method::PUT, &path, Some(&content)).await;
        v["event_id"]
            .as_str()
            .expect("event_id in /send response")
            .to_owned()
    }

    /// Sends a state event; returns the event id.
    pub async fn send_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let path = Self::room_path(
            room_id,
            &format!("state/{}/{}", encode(event_type), encode(state_key)),
        );
        let v = self.call_ok(Method::PUT, &path, Some(&content)).await;
        v["event_id"]
            .as_str()
            .expect("event_id in /state response")
            .to_owned()
    }

    /// The whole timeline visible to this user, oldest first (`/messages?dir=f`, following `end`).
    pub async fn messages(&self, room_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = Self::room_path(room_id, "messages?dir=f&limit=100");
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", encode(from)));
            }
            let v = self.call_ok(Method::GET, &path, None).await;
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            let end = v["end"].as_str().map(str::to_owned);
            if chunk.is_empty() || end.is_none() || end == from {
                events.extend(chunk);
                return events;
            }
            events.extend(chunk);
            from = end;
        }
    }

    /// User ids of the room's joined members, sorted.
    pub async fn joined_members(&self, room_id: &str) -> Vec<String> {
        let v = self
            .call_ok(
                Method::GET,
                &Self::room_path(room_id, "joined_members"),
                None,
            )
            .await;
        let mut ids: Vec<String> = v["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The user's global display name, `None` if unset (404).
    pub async fn get_displayname(&self, user_id: &str) -> Option<String> {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", encode(user_id));
        let (status, v) = self.call(Method::GET, &path, None).await;
        match status {
            200 => v["displayname"].as_str().map(str::to_owned),
            404 => None,
            _ => panic!("GET {path} as {} failed: {status} {v}", self.user_id),
        }
    }

    /// Polls [`UserClient::messages`] every 200 ms until `pred` matches an event (returned); panics
    /// after `timeout` with the timeline it last saw.
    pub async fn wait_for_event(
        &self,
        room_id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let events = self.messages(room_id).await;
            if let Some(event) = events.iter().find(|e| pred(e)) {
                return event.clone();
            }
            if started.elapsed() > timeout {
                let timeline: Vec<String> = events.iter().map(summarize).collect();
                panic!(
                    "no matching event in {room_id} (as {}) within {timeout:?}; timeline ({} events, oldest first):\n{}",
                    self.user_id,
                    events.len(),
                    timeline.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub async fn event(&self, room_id: &str, event_id: &str) -> Value {
        let path = Self::room_path(room_id, &format!("event/{}", encode(event_id)));
        self.call_ok(Method::GET, &path, None).await
    }
}

/// One line per event for panic messages: sender, type, state key and content.
fn summarize(e: &Value) -> String {
    let state = e
        .get("state_key")
        .map(|k| format!(" [{}]", k.as_str().unwrap_or("?")))
        .unwrap_or_default();
    format!(
        "  {} {}{} {}",
        e["sender"].as_str().unwrap_or("?"),
        e["type"].as_str().unwrap_or("?"),
        state,
        e["content"]
    )
}
