//! `GET /api/live`: the index's changes as server-sent events, for the caller's open page.
//!
//! The page reads the stream with `fetch` (an `EventSource` cannot send the token). Each
//! event is one [`Change`](crate::index::Change) in a timeline room the caller is in, named by
//! its kind (`post`, `reply`, `like`, `edit`, `delete`); the page fetches what it needs of it
//! through the ordinary API, so the stream carries ids, never text. Each event's `id` is the
//! change's number; a page that reconnects sends the last as `Last-Event-ID` and gets what it
//! missed first (or `resync`, when that is more than the hub keeps). A stream lasts
//! [`LIFETIME`] at most (the page reconnects, and its token is checked again), ends when the
//! page goes or the appservice stops, and one that fell behind gets `resync`.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use futures_util::{Stream, stream};
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use trestle::axum::response::sse::{Event, KeepAlive, Sse};

use super::*;
use crate::live::{Full, Missed, Numbered, Subscription};

/// The longest a stream stays open before the page has to reconnect (and its token is checked
/// again). A stream also ends as soon as the appservice begins to stop, which is said before
/// the graceful shutdown waits for open connections ([`trestle::Appservice::begin_stopping`]).
const LIFETIME: Duration = Duration::from_secs(600);

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/api/live", get(live))
}

async fn live(
    State(web): State<Web>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let caller = web.caller(&headers).await?;
    // A page that reconnects says the last change it saw, as an `EventSource` would.
    let seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut subscription = web
        .live
        .subscribe(caller.user_id.as_str(), seen)
        .map_err(|full| {
            let why = match full {
                Full::User => format!(
                    "{} has {} live pages open already; close one",
                    caller.user_id,
                    crate::live::MAX_PER_USER
                ),
                Full::Server => "the server has too many live pages open; try later".to_owned(),
            };
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", why)
        })?;
    let (backlog, resync) = match subscription.take_missed() {
        Missed::Nothing => (VecDeque::new(), false),
        Missed::Changes(changes) => (changes.into(), false),
        Missed::TooMuch => (VecDeque::new(), true),
    };
    let state = Listening {
        web,
        user: caller.user_id.to_string(),
        subscription,
        until: Instant::now() + LIFETIME,
        greeted: false,
        resync,
        backlog,
    };
    Ok(Sse::new(stream::unfold(state, next)).keep_alive(KeepAlive::default()))
}

/// One open page's stream; dropping it (the page went, or the stream ended) drops the
/// subscription and frees its place.
struct Listening {
    web: Web,
    user: String,
    subscription: Subscription,
    until: Instant,
    greeted: bool,
    /// The page missed more than is kept: `resync` comes right after `ready`.
    resync: bool,
    /// What the page missed, before what comes.
    backlog: VecDeque<Numbered>,
}

/// The stream's next event: `ready` first, then the changes the caller may see.
async fn next(mut state: Listening) -> Option<(Result<Event, Infallible>, Listening)> {
    if !state.greeted {
        state.greeted = true;
        let mut ready = Event::default().event("ready").data("{}");
        // Where the page stands from now on, unless what it missed comes first (with the
        // numbers of its own).
        if state.backlog.is_empty() {
            ready = ready.id(state.subscription.position.to_string());
        }
        return Some((Ok(ready), state));
    }
    if state.resync {
        state.resync = false;
        return Some((Ok(Event::default().event("resync").data("{}")), state));
    }
    loop {
        if let Some(change) = state.backlog.pop_front() {
            if let Some(event) = shown(&state, change).await {
                return Some((Ok(event), state));
            }
            continue;
        }
        let received = tokio::select! {
            received = state.subscription.changes.recv() => received,
            () = tokio::time::sleep_until(state.until) => return None,
            () = state.web.app.stopping() => return None,
        };
        let change = match received {
            Ok(change) => change,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(user = state.user, missed, "a live page fell behind");
                let resync = Event::default().event("resync").data("{}");
                return Some((Ok(resync), state));
            }
            Err(RecvError::Closed) => return None,
        };
        if let Some(event) = shown(&state, change).await {
            return Some((Ok(event), state));
        }
    }
}

/// The event for a change, if the caller may see it; its id is the change's number.
async fn shown(state: &Listening, (number, change): Numbered) -> Option<Event> {
    match shown_to(&state.web, &state.user, &change.room_id).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(error) => {
            tracing::warn!(%error, "live page: could not check a membership");
            return None;
        }
    }
    let kind = match change.kind {
        index::ChangeKind::Post => "post",
        index::ChangeKind::Reply => "reply",
        index::ChangeKind::Like => "like",
        index::ChangeKind::Edit => "edit",
        index::ChangeKind::Delete => "delete",
    };
    Some(
        Event::default()
            .event(kind)
            .id(number.to_string())
            .data(json!(change).to_string()),
    )
}

/// Whether `user` is in the timeline room (its owner or a follower): their feed shows it.
async fn shown_to(web: &Web, user: &str, room_id: &str) -> trestle::Result<bool> {
    let member: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM timeline_follows WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room_id)
    .bind(user)
    .fetch_optional(web.db())
    .await?;
    Ok(member.is_some())
}
