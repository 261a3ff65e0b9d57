//! `GET /api/live`: the index's changes as server-sent events, for the caller's open page.
//!
//! The page reads the stream with `fetch` (an `EventSource` cannot send the token). Each
//! event is one [`Change`](crate::index::Change) in a timeline room the caller is in, named by
//! its kind (`post`, `reply`, `like`, `edit`, `delete`); the page fetches what it needs of it
//! through the ordinary API, so the stream carries ids, never text. A stream lasts
//! [`LIFETIME`] at most (the page reconnects, and its token is checked again), ends when the
//! page goes, and one that fell behind gets `resync`.

use std::{convert::Infallible, time::Duration};

use futures_util::{Stream, stream};
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use trestle::axum::response::sse::{Event, KeepAlive, Sse};

use super::*;
use crate::live::{Full, Subscription};

/// The longest a stream stays open before the page has to reconnect.
const LIFETIME: Duration = Duration::from_secs(10 * 60);

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/api/live", get(live))
}

async fn live(
    State(web): State<Web>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let caller = web.caller(&headers).await?;
    let subscription = web
        .live
        .subscribe(caller.user_id.as_str())
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
    let state = Listening {
        web,
        user: caller.user_id.to_string(),
        subscription,
        until: Instant::now() + LIFETIME,
        greeted: false,
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
}

/// The stream's next event: `ready` first, then the changes the caller may see.
async fn next(mut state: Listening) -> Option<(Result<Event, Infallible>, Listening)> {
    if !state.greeted {
        state.greeted = true;
        let ready = Event::default().event("ready").data("{}");
        return Some((Ok(ready), state));
    }
    loop {
        let received = tokio::select! {
            received = state.subscription.changes.recv() => received,
            () = tokio::time::sleep_until(state.until) => return None,
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
        match shown_to(&state.web, &state.user, &change.room_id).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "live page: could not check a membership");
                continue;
            }
        }
        let kind = match change.kind {
            index::ChangeKind::Post => "post",
            index::ChangeKind::Reply => "reply",
            index::ChangeKind::Like => "like",
            index::ChangeKind::Edit => "edit",
            index::ChangeKind::Delete => "delete",
        };
        let event = Event::default().event(kind).data(json!(change).to_string());
        return Some((Ok(event), state));
    }
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
