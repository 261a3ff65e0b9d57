//! The null appservice: the least an appservice can do, the yardstick of the benchmark.
//!
//! It checks the homeserver's token, answers `PUT /_matrix/app/v1/transactions/{txnId}` with
//! `200 {}` at once, and then — in a task per transaction, events in order — sends the echo
//! of each `!echo`/`!ghost` with one shared keep-alive HTTP client. For `!ghost` it registers
//! the ghost once and joins it to each room once (remembered in memory). Nothing is stored,
//! nothing retried, transactions are not deduplicated: what is left is the cost of HTTP and
//! JSON.
//!
//! `null-appservice --registration FILE --homeserver URL [--handler-delay-ms MS]`.

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    routing::put,
};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use trestle_bench::app_args::{AppArgs, echo_body, load, shutdown_signal};

/// Requests made once per key, by whoever comes first; the others wait for it.
type Once<K> = Mutex<HashMap<K, Arc<OnceCell<()>>>>;

struct Null {
    http: reqwest::Client,
    homeserver: String,
    hs_authorization: String,
    as_authorization: String,
    server_name: String,
    delay: Duration,
    next_txn: AtomicU64,
    /// Ghosts registered, and (room, ghost) joins made — each done once, by whoever comes first.
    registered: Once<String>,
    joined: Once<(String, String)>,
}

#[derive(Deserialize)]
struct Transaction {
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    room_id: String,
    sender: String,
    #[serde(default)]
    content: Content,
}

#[derive(Default, Deserialize)]
struct Content {
    body: Option<String>,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Null {
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request
            .header(AUTHORIZATION, &self.as_authorization)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() || body["errcode"] == "M_USER_IN_USE" {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    async fn once<K: Eq + std::hash::Hash>(
        &self,
        map: &Once<K>,
        key: K,
        request: impl AsyncFnOnce() -> Result<Value, String>,
    ) -> Result<(), String> {
        let cell = map
            .lock()
            // Poisoned or not, as the framework's locks (trestle::sync), which this baseline
            // keeps clear of.
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_try_init(|| async { request().await.map(drop) })
            .await
            .map(drop)
    }

    async fn answer(&self, event: &Event) -> Result<(), String> {
        if event.kind != "m.room.message" {
            return Ok(());
        }
        let Some(body) = &event.content.body else {
            return Ok(());
        };
        let (user, rest) = if let Some(rest) = body.strip_prefix("!echo ") {
            (None, rest)
        } else if let Some(rest) = body.strip_prefix("!ghost ") {
            let local = event
                .sender
                .strip_prefix('@')
                .and_then(|s| s.split(':').next())
                .unwrap_or_default();
            (Some(format!("bench_{local}")), rest)
        } else {
            return Ok(());
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let v3 = format!("{}/_matrix/client/v3", self.homeserver);
        let room = encode(&event.room_id);
        let mut assert = String::new();
        if let Some(localpart) = user {
            let user_id = format!("@{localpart}:{}", self.server_name);
            assert = format!("?user_id={}", encode(&user_id));
            self.once(&self.registered, user_id.clone(), async || {
                let body = json!({"type": "m.login.application_service", "username": localpart,
                                  "inhibit_login": true});
                self.call(self.http.post(format!("{v3}/register")).json(&body))
                    .await
            })
            .await?;
            self.once(&self.joined, (event.room_id.clone(), user_id), async || {
                self.call(
                    self.http
                        .post(format!("{v3}/join/{room}{assert}"))
                        .json(&json!({})),
                )
                .await
            })
            .await?;
        }
        let txn = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let content = json!({"msgtype": "m.text", "body": echo_body(rest)});
        let url = format!("{v3}/rooms/{room}/send/m.room.message/null{txn}{assert}");
        self.call(self.http.put(url).json(&content)).await.map(drop)
    }
}

async fn transaction(
    State(null): State<Arc<Null>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let token = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    if token != Some(null.hs_authorization.as_bytes()) {
        return Err((
            StatusCode::FORBIDDEN,
            Json(json!({"errcode": "M_FORBIDDEN", "error": "bad token"})),
        ));
    }
    let txn: Transaction = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"errcode": "M_NOT_JSON", "error": e.to_string()})),
        )
    })?;
    if !txn.events.is_empty() {
        tokio::spawn(async move {
            for event in &txn.events {
                if let Err(error) = null.answer(event).await {
                    eprintln!("null-appservice: could not answer: {error}");
                }
            }
        });
    }
    Ok(Json(json!({})))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = AppArgs::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("null-appservice: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: AppArgs) -> Result<(), String> {
    let (registration, addr) = load(&args)?;
    let null = Arc::new(Null {
        http: reqwest::Client::new(),
        homeserver: args.homeserver.trim_end_matches('/').to_owned(),
        hs_authorization: format!("Bearer {}", registration.hs_token),
        as_authorization: format!("Bearer {}", registration.as_token),
        server_name: "localhost".to_owned(),
        delay: Duration::from_millis(args.handler_delay_ms),
        next_txn: AtomicU64::new(0),
        registered: Mutex::default(),
        joined: Mutex::default(),
    });
    let app = Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .with_state(null);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening at {addr}: {e}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
