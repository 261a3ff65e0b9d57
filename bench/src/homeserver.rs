//! The homeserver, as far as an echo appservice can tell: the client-server calls it makes,
//! answered on loopback, with the arrival of every echo recorded.
//!
//! It behaves like Synapse where that keeps the appservice honest: requests need the
//! appservice's `as_token`; a ghost must be registered before it acts and joined before it
//! sends (else `403 M_FORBIDDEN`); registering a user twice is `400 M_USER_IN_USE`. The bot
//! exists from the start and is in every room. Each appservice started gets a fresh
//! [`Session`].

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};
use trestle::sync::{MutexExt, RwLockExt};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::json;

use crate::arrivals::Arrivals;

/// Counts of what the appservice asked for.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages sent.
    pub sends: AtomicU64,
    /// Users registered.
    pub registers: AtomicU64,
    /// Joins.
    pub joins: AtomicU64,
    /// Profile and state changes, invites and the like.
    pub others: AtomicU64,
    /// Homeserver pings.
    pub pings: AtomicU64,
    /// Requests refused: wrong token, unregistered or unjoined user, second registration.
    pub refused: AtomicU64,
    /// Requests for endpoints the mock does not know.
    pub unknown: AtomicU64,
}

impl Counters {
    /// `sends=… registers=… joins=… others=… refused=… unknown=…`.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "sends={} registers={} joins={} others={} pings={} refused={} unknown={}",
            get(&self.sends),
            get(&self.registers),
            get(&self.joins),
            get(&self.others),
            get(&self.pings),
            get(&self.refused),
            get(&self.unknown)
        )
    }
}

/// What the homeserver knows about one appservice under test.
#[derive(Debug)]
pub struct Session {
    authorization: String,
    bot: String,
    server_name: String,
    users: Mutex<Users>,
    arrivals: RwLock<Arc<Arrivals>>,
    /// What was asked for.
    pub counters: Counters,
    next_event: AtomicU64,
}

#[derive(Debug, Default)]
struct Users {
    registered: HashSet<String>,
    joined: HashSet<(String, String)>,
}

impl Session {
    /// A session for the appservice with `as_token`, whose bot is `bot` on `server_name`.
    pub fn new(as_token: &str, bot: &str, server_name: &str) -> Self {
        Session {
            authorization: format!("Bearer {as_token}"),
            bot: bot.to_owned(),
            server_name: server_name.to_owned(),
            users: Mutex::default(),
            arrivals: RwLock::new(Arc::new(Arrivals::none())),
            counters: Counters::default(),
            next_event: AtomicU64::new(0),
        }
    }

    /// Records echoes in `arrivals` from now on.
    pub fn expect(&self, arrivals: Arc<Arrivals>) {
        *self.arrivals.write_unpoisoned() = arrivals;
    }

    fn arrivals(&self) -> Arc<Arrivals> {
        self.arrivals.read_unpoisoned().clone()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users.lock_unpoisoned()
    }

    /// Users registered so far.
    pub fn registered(&self) -> usize {
        self.users().registered.len()
    }
}

/// The mock homeserver: the current session, swapped for each appservice started.
#[derive(Clone, Debug, Default)]
pub struct Homeserver {
    session: Arc<RwLock<Option<Arc<Session>>>>,
}

impl Homeserver {
    /// Serves `session` from now on.
    pub fn start_session(&self, session: Arc<Session>) {
        *self.session.write_unpoisoned() = Some(session);
    }

    fn session(&self) -> Option<Arc<Session>> {
        self.session.read_unpoisoned().clone()
    }

    /// Serves the routes on a free port of 127.0.0.1, from a task of its own; returns the
    /// homeserver's URL.
    pub async fn serve_on_loopback(&self) -> Result<String, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(url)
    }

    /// The client-server API routes.
    pub fn router(&self) -> Router {
        const V3: &str = "/_matrix/client/v3";
        Router::new()
            .route("/_matrix/client/versions", get(versions))
            .route("/_matrix/client/v1/appservice/{id}/ping", post(ping))
            .route(&format!("{V3}/register"), post(register))
            .route(&format!("{V3}/join/{{room}}"), post(join))
            .route(&format!("{V3}/rooms/{{room}}/join"), post(join))
            .route(
                &format!("{V3}/rooms/{{room}}/send/{{event_type}}/{{txn_id}}"),
                put(send),
            )
            .route(
                &format!("{V3}/rooms/{{room}}/state/{{event_type}}"),
                put(state),
            )
            .route(
                &format!("{V3}/rooms/{{room}}/state/{{event_type}}/"),
                put(state),
            )
            .route(
                &format!("{V3}/rooms/{{room}}/state/{{event_type}}/{{state_key}}"),
                put(state),
            )
            .route(&format!("{V3}/rooms/{{room}}/{{action}}"), post(other))
            .route(&format!("{V3}/profile/{{user}}/{{field}}"), put(other))
            .fallback(unknown)
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
struct Identity {
    user_id: Option<String>,
}

/// A refusal with the spec's `errcode`.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, errcode, message) = self;
        (status, Json(json!({"errcode": errcode, "error": message}))).into_response()
    }
}

/// The session, if the request carries its token.
fn authorized(hs: &Homeserver, headers: &HeaderMap) -> Result<Arc<Session>, Refusal> {
    let session = hs.session().ok_or(Refusal(
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
        "no session",
    ))?;
    let given = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    if given != Some(session.authorization.as_bytes()) {
        session.counters.refused.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "unknown token",
        ));
    }
    Ok(session)
}

/// Who the request acts as: the asserted `user_id`, or the bot.
fn acting_user<'a>(session: &'a Session, identity: &'a Identity) -> &'a str {
    identity.user_id.as_deref().unwrap_or(&session.bot)
}

async fn versions() -> Json<serde_json::Value> {
    Json(json!({"versions": ["v1.11", "v1.12", "v1.13"], "unstable_features": {}}))
}

async fn ping(State(hs): State<Homeserver>, headers: HeaderMap) -> Result<Response, Refusal> {
    let session = authorized(&hs, &headers)?;
    session.counters.pings.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({"duration_ms": 1})).into_response())
}

#[derive(Deserialize)]
struct RegisterBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    username: Option<String>,
}

async fn register(
    State(hs): State<Homeserver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let session = authorized(&hs, &headers)?;
    let Ok(body) = serde_json::from_slice::<RegisterBody>(&body) else {
        return Err(Refusal(StatusCode::BAD_REQUEST, "M_NOT_JSON", "bad body"));
    };
    let (Some("m.login.application_service"), Some(username)) =
        (body.kind.as_deref(), body.username)
    else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
            "want type m.login.application_service and a username",
        ));
    };
    let user_id = format!("@{username}:{}", session.server_name);
    if !session.users().registered.insert(user_id.clone()) {
        session.counters.refused.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
            "already taken",
        ));
    }
    session.counters.registers.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({"user_id": user_id})).into_response())
}

/// Refuses a ghost that is not registered (or, with `room`, not joined to it).
fn check_ghost(session: &Session, user: &str, room: Option<&str>) -> Result<(), Refusal> {
    if user == session.bot {
        return Ok(());
    }
    let users = session.users();
    let refusal = if !users.registered.contains(user) {
        Some("user not registered")
    } else if let Some(room) = room
        && !users.joined.contains(&(room.to_owned(), user.to_owned()))
    {
        Some("user not in room")
    } else {
        None
    };
    match refusal {
        None => Ok(()),
        Some(message) => {
            session.counters.refused.fetch_add(1, Ordering::Relaxed);
            Err(Refusal(StatusCode::FORBIDDEN, "M_FORBIDDEN", message))
        }
    }
}

async fn join(
    State(hs): State<Homeserver>,
    Path(room): Path<String>,
    Query(identity): Query<Identity>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let session = authorized(&hs, &headers)?;
    let user = acting_user(&session, &identity);
    check_ghost(&session, user, None)?;
    if user != session.bot {
        session
            .users()
            .joined
            .insert((room.clone(), user.to_owned()));
    }
    session.counters.joins.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({"room_id": room})).into_response())
}

#[derive(Deserialize)]
struct Message {
    body: Option<String>,
}

async fn send(
    State(hs): State<Homeserver>,
    Path((room, _event_type, _txn_id)): Path<(String, String, String)>,
    Query(identity): Query<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let session = authorized(&hs, &headers)?;
    let user = acting_user(&session, &identity);
    check_ghost(&session, user, Some(&room))?;
    if let Ok(Message { body: Some(text) }) = serde_json::from_slice(&body) {
        session.arrivals().record(&text);
    }
    session.counters.sends.fetch_add(1, Ordering::Relaxed);
    let n = session.next_event.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({"event_id": format!("$bench{n}")})).into_response())
}

async fn state(State(hs): State<Homeserver>, headers: HeaderMap) -> Result<Response, Refusal> {
    let session = authorized(&hs, &headers)?;
    session.counters.others.fetch_add(1, Ordering::Relaxed);
    let n = session.next_event.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({"event_id": format!("$bench{n}")})).into_response())
}

/// Profile changes, invites, leaves, kicks, bans, typing and receipts: accepted.
async fn other(State(hs): State<Homeserver>, headers: HeaderMap) -> Result<Response, Refusal> {
    let session = authorized(&hs, &headers)?;
    session.counters.others.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({})).into_response())
}

async fn unknown(State(hs): State<Homeserver>, uri: axum::http::Uri) -> Response {
    if let Some(session) = hs.session() {
        session.counters.unknown.fetch_add(1, Ordering::Relaxed);
    }
    eprintln!("mock homeserver: unknown endpoint {uri}");
    Refusal(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "unknown endpoint").into_response()
}

#[cfg(test)]
mod tests;
