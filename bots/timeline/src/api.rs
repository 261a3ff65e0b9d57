//! The JSON API behind the page (documented in `docs/timeline.md`). Callers authenticate with
//! their own Matrix access token (`Authorization: Bearer …`), which the API uses to act on the
//! homeserver as them; reads come from the index.

mod follow;
mod live;
mod login_sso;
mod media;
mod people;
mod posts;
mod users;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use trestle::sync::MutexExt;

use serde::Deserialize;
use serde_json::{Value, json};
use trestle::{
    Appservice,
    axum::{
        Json, Router,
        extract::{Path, Query, State, rejection::JsonRejection},
        http::{HeaderMap, Method, StatusCode, header},
        response::{IntoResponse, Response},
        routing::{get, post},
    },
    ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId},
};

use crate::{
    Settings,
    content::{self, Draft, LIKE_KEY, POST_TYPE, Refusal},
    index,
    matrix::UserApi,
    query,
};

/// How long a token's owner is remembered before asking the homeserver again.
const SESSION_TTL: Duration = Duration::from_secs(60);

/// What the web routes share.
#[derive(Clone)]
pub(crate) struct Web {
    pub(crate) app: Appservice,
    pub(crate) settings: Arc<Settings>,
    pub(crate) users: UserApi,
    /// Where the index's changes go out to open pages.
    pub(crate) live: crate::live::Hub,
    sessions: Arc<Mutex<HashMap<String, (OwnedUserId, Instant)>>>,
    /// Single sign-ons in flight.
    sso: Arc<login_sso::Pending>,
    /// Held while a timeline room is created, so one user never gets two.
    creating: Arc<tokio::sync::Mutex<()>>,
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

/// An error answer: a status and a Matrix-style `errcode` with a message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    errcode: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, errcode: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errcode: errcode.to_owned(),
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "errcode": self.errcode, "error": self.message })),
        )
            .into_response()
    }
}

impl From<trestle::Error> for ApiError {
    fn from(error: trestle::Error) -> Self {
        // The homeserver's refusals (a wrong password, a forbidden join) go to the caller as
        // they are; everything else is ours, logged and not leaked.
        if let (Some(status), Some(kind)) = (error.status(), error.kind()) {
            let message = match &error {
                trestle::Error::Matrix(e) => match &e.body {
                    trestle::ruma::api::error::ErrorBody::Standard(body) => body.message.clone(),
                    _ => error.to_string(),
                },
                _ => error.to_string(),
            };
            return ApiError::new(status, kind.errcode().as_str(), message);
        }
        tracing::error!(%error, "timeline API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "internal error; see the server's log",
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooLong { .. } | Refusal::HtmlTooLong { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                refusal.to_string(),
            ),
            _ => ApiError::bad(refusal.to_string()),
        }
    }
}

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// A JSON body, or a clear `M_BAD_JSON` / `M_NOT_JSON`.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::MissingJsonContentType(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            e.body_text(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            e.body_text(),
        )),
    }
}

/// The user a request acts for.
pub(crate) struct Caller {
    pub(crate) user_id: OwnedUserId,
    token: String,
}

impl Web {
    pub(crate) fn new(
        app: Appservice,
        settings: Arc<Settings>,
        live: crate::live::Hub,
    ) -> trestle::Result<Self> {
        let users = UserApi::new(app.client().base_url())?;
        Ok(Web {
            app,
            settings,
            users,
            live,
            sessions: Arc::default(),
            sso: Arc::default(),
            creating: Arc::default(),
            migrated: Arc::default(),
        })
    }

    pub(crate) fn db(&self) -> &sqlx::AnyPool {
        self.app.store().pool()
    }

    /// The index's tables exist.
    pub(crate) async fn ready(&self) -> ApiResult<()> {
        self.migrated
            .get_or_try_init(|| index::migrate(&self.app))
            .await?;
        Ok(())
    }

    /// The caller, from their access token; `None` without one.
    async fn maybe_caller(&self, headers: &HeaderMap) -> ApiResult<Option<Caller>> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "M_MISSING_TOKEN",
                    "the Authorization header must be `Bearer <access token>`",
                )
            })?
            .to_owned();
        let cached = {
            let sessions = self.sessions.lock_unpoisoned();
            sessions
                .get(&token)
                .filter(|(_, at)| at.elapsed() < SESSION_TTL)
                .map(|(user, _)| user.clone())
        };
        let user_id = match cached {
            Some(user) => user,
            None => {
                let user = self.users.whoami(&token).await?;
                let mut sessions = self.sessions.lock_unpoisoned();
                if sessions.len() > 10_000 {
                    sessions.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
                }
                sessions.insert(token.clone(), (user.clone(), Instant::now()));
                user
            }
        };
        Ok(Some(Caller { user_id, token }))
    }

    async fn caller(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        self.ready().await?;
        self.maybe_caller(headers).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "log in first: send `Authorization: Bearer <access token>`",
            )
        })
    }

    /// The caller's timeline room, created (with the bot in it) the first time they post.
    async fn own_room(&self, caller: &Caller) -> ApiResult<OwnedRoomId> {
        let _creating = self.creating.lock().await;
        if let Some(room) = index::room_of(self.db(), caller.user_id.as_str()).await? {
            let room = OwnedRoomId::try_from(room).map_err(trestle::Error::from)?;
            // Should the bot's join have failed when the room was made, it joins now (the
            // store remembers its memberships, so this costs nothing once it is in).
            self.app.bot().ensure_joined(&room).await?;
            return Ok(room);
        }
        let name = format!("{}'s timeline", caller.user_id.localpart());
        let room_id = self
            .users
            .create_timeline_room(&caller.token, &name, self.settings.room_version.as_deref())
            .await?;
        // Recorded before anything else can fail, so a second post finds this room and never
        // makes another; the catch-up below fills in the rest.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        index::add_room(self.db(), room_id.as_str(), caller.user_id.as_str(), now).await?;
        index::add_member(self.db(), room_id.as_str(), caller.user_id.as_str(), None).await?;
        self.app.bot().join(&room_id).await?;
        // The room's first events came before the bot: read them now.
        crate::reindex::room(&self.app, &room_id).await?;
        if let Some(alias) = self
            .settings
            .alias_for(caller.user_id.localpart(), self.app.server_name().as_str())
        {
            crate::set_alias(&self.app, &alias, &room_id).await;
        }
        tracing::info!(user = %caller.user_id, %room_id, "created a timeline room");
        Ok(room_id)
    }

    /// Joins the caller to a timeline room unless they are in it.
    async fn ensure_member(&self, caller: &Caller, room_id: &str) -> ApiResult<OwnedRoomId> {
        let room = OwnedRoomId::try_from(room_id).map_err(trestle::Error::from)?;
        let member: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM timeline_follows WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(caller.user_id.as_str())
        .fetch_optional(self.db())
        .await
        .map_err(trestle::Error::from)?;
        if member.is_none() {
            self.users.join(&caller.token, &room).await?;
            index::add_member(self.db(), room_id, caller.user_id.as_str(), None).await?;
        }
        Ok(room)
    }

    /// Sends an event as the caller and indexes it at once, so the answer shows it (the
    /// homeserver pushes it to the bot too; indexing twice changes nothing).
    async fn send(
        &self,
        caller: &Caller,
        room: &OwnedRoomId,
        event_type: &str,
        content: &Value,
    ) -> ApiResult<OwnedEventId> {
        let event_id = self
            .users
            .send_event(&caller.token, room, event_type, content)
            .await?;
        let event = self.users.event(&caller.token, room, &event_id).await?;
        self.live.publish(index::apply(&self.app, &event).await?);
        Ok(event_id)
    }

    /// Sends a post and answers with it as indexed.
    async fn publish(
        &self,
        caller: &Caller,
        room: &OwnedRoomId,
        content: &Value,
    ) -> ApiResult<(StatusCode, Json<Value>)> {
        let event_id = self.send(caller, room, POST_TYPE, content).await?;
        let post = self
            .post_or_404(caller.user_id.as_str(), event_id.as_str())
            .await?;
        Ok((StatusCode::CREATED, Json(json!(post))))
    }

    /// Redacts an event as the caller and indexes the redaction at once.
    async fn redact(&self, caller: &Caller, room_id: &str, event_id: &str) -> ApiResult<()> {
        let room = OwnedRoomId::try_from(room_id).map_err(trestle::Error::from)?;
        let event_id = OwnedEventId::try_from(event_id).map_err(trestle::Error::from)?;
        let redaction = self.users.redact(&caller.token, &room, &event_id).await?;
        let event = self.users.event(&caller.token, &room, &redaction).await?;
        self.live.publish(index::apply(&self.app, &event).await?);
        Ok(())
    }

    async fn post_or_404(&self, viewer: &str, event_id: &str) -> ApiResult<query::Post> {
        query::post_by_id(self.db(), viewer, event_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no post {event_id}")))
    }

    fn limit(&self, asked: Option<i64>) -> i64 {
        asked.unwrap_or(self.settings.page_size).clamp(1, 100)
    }
}

/// The API's routes, under `/api`.
pub(crate) fn routes(web: Web) -> Router {
    Router::new()
        .merge(users::routes())
        .merge(login_sso::routes())
        .merge(posts::routes())
        .merge(media::routes())
        .merge(live::routes())
        .merge(people::routes())
        .with_state(web)
}
