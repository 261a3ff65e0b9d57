//! The JSON API behind the page (documented in `docs/timeline.md`). Callers authenticate with
//! their own Matrix access token (`Authorization: Bearer …`), which the API uses to act on the
//! homeserver as them; reads come from the index.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

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
    sessions: Arc<Mutex<HashMap<String, (OwnedUserId, Instant)>>>,
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
            Refusal::TooLong { .. } => ApiError::new(
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
    pub(crate) fn new(app: Appservice, settings: Arc<Settings>) -> trestle::Result<Self> {
        let users = UserApi::new(app.client().base_url())?;
        Ok(Web {
            app,
            settings,
            users,
            sessions: Arc::default(),
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
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .get(&token)
                .filter(|(_, at)| at.elapsed() < SESSION_TTL)
                .map(|(user, _)| user.clone())
        };
        let user_id = match cached {
            Some(user) => user,
            None => {
                let user = self.users.whoami(&token).await?;
                let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
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
            return Ok(OwnedRoomId::try_from(room).map_err(trestle::Error::from)?);
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
        index::apply(&self.app, &event).await?;
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
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/feed", get(feed))
        .route("/api/posts", post(create_post))
        .route("/api/posts/{event_id}", get(thread))
        .route("/api/posts/{event_id}/like", post(like).delete(like))
        .route("/api/posts/{event_id}/repost", post(repost))
        .route("/api/reindex", post(reindex))
        .route("/api/users/{user_id}", get(profile))
        .route("/api/users/{user_id}/follow", post(follow).delete(follow))
        .with_state(web)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
    password: String,
}

async fn login(State(web): State<Web>, login: Result<Json<Login>, JsonRejection>) -> ApiResult {
    let login = body(login)?;
    let (user_id, access_token) = web.users.login(&login.user, &login.password).await?;
    Ok(Json(
        json!({ "user_id": user_id, "access_token": access_token }),
    ))
}

async fn logout(State(web): State<Web>, headers: HeaderMap) -> ApiResult {
    let caller = web.caller(&headers).await?;
    web.users.logout(&caller.token).await?;
    web.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&caller.token);
    Ok(Json(json!({})))
}

async fn me(State(web): State<Web>, headers: HeaderMap) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let room = index::room_of(web.db(), caller.user_id.as_str()).await?;
    Ok(Json(json!({ "user_id": caller.user_id, "room_id": room })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    before: Option<String>,
    limit: Option<i64>,
}

fn cursor(before: Option<&str>) -> ApiResult<Option<(i64, String)>> {
    before
        .map(|c| {
            query::parse_cursor(c)
                .ok_or_else(|| ApiError::bad(format!("`before`: bad cursor {c:?}")))
        })
        .transpose()
}

async fn feed(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(page): Query<PageQuery>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let before = cursor(page.before.as_deref())?;
    let page = query::feed(
        web.db(),
        caller.user_id.as_str(),
        before,
        web.limit(page.limit),
    )
    .await?;
    Ok(Json(json!(page)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    text: String,
    html: Option<String>,
    reply_to: Option<String>,
    /// Must be the caller when given: nobody posts as someone else.
    author: Option<String>,
}

async fn create_post(
    State(web): State<Web>,
    headers: HeaderMap,
    new: Result<Json<NewPost>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = web.caller(&headers).await?;
    let new = body(new)?;
    if let Some(author) = &new.author
        && author != caller.user_id.as_str()
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            format!(
                "`author` is {author}, but you are logged in as {}: posts are always sent as yourself",
                caller.user_id
            ),
        ));
    }
    let text = content::check_text(&new.text, web.settings.max_post_chars)?;
    let html = new.html.as_deref().map(content::check_html).transpose()?;
    let me = caller.user_id.as_str();
    let (room, thread) = match &new.reply_to {
        Some(replied) => {
            let parent = web.post_or_404(me, replied).await?;
            let root = parent
                .thread_root
                .clone()
                .unwrap_or(parent.event_id.clone());
            let room = web.ensure_member(&caller, &parent.room_id).await?;
            (room, Some((root, parent.event_id)))
        }
        None => (web.own_room(&caller).await?, None),
    };
    let draft = Draft {
        text,
        html,
        thread,
        repost: None,
    };
    web.publish(&caller, &room, &content::post_content(&draft))
        .await
}

async fn repost(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = web.caller(&headers).await?;
    let me = caller.user_id.as_str();
    let original = web.post_or_404(me, &event_id).await?;
    let room = web.own_room(&caller).await?;
    let draft = Draft {
        text: original.text.clone(),
        html: original.html.clone(),
        thread: None,
        repost: Some((original.room_id.clone(), original.event_id.clone())),
    };
    let mut content = content::post_content(&draft);
    content["body"] = json!(format!("♻ {}: {}", original.author, original.text));
    web.publish(&caller, &room, &content).await
}

async fn thread(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult {
    web.ready().await?;
    let viewer = web.maybe_caller(&headers).await?;
    let viewer = viewer.as_ref().map(|c| c.user_id.as_str()).unwrap_or("");
    let thread = query::thread(web.db(), viewer, &event_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no post {event_id}")))?;
    Ok(Json(json!(thread)))
}

/// `POST` likes a post (once, however often asked), `DELETE` takes the like back.
async fn like(
    State(web): State<Web>,
    method: Method,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let me = caller.user_id.as_str();
    let post = web.post_or_404(me, &event_id).await?;
    let given = query::like_of(web.db(), me, &event_id).await?;
    match (method == Method::DELETE, given) {
        (false, None) => {
            let room = web.ensure_member(&caller, &post.room_id).await?;
            let content = json!({
                "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id, "key": LIKE_KEY }
            });
            web.send(&caller, &room, "m.reaction", &content).await?;
        }
        (true, Some(reaction)) => {
            let room =
                OwnedRoomId::try_from(post.room_id.as_str()).map_err(trestle::Error::from)?;
            let reaction = OwnedEventId::try_from(reaction).map_err(trestle::Error::from)?;
            let redaction = web.users.redact(&caller.token, &room, &reaction).await?;
            let event = web.users.event(&caller.token, &room, &redaction).await?;
            index::apply(&web.app, &event).await?;
        }
        _ => {}
    }
    Ok(Json(json!(web.post_or_404(me, &event_id).await?)))
}

fn user_param(user_id: &str) -> ApiResult<OwnedUserId> {
    UserId::parse(user_id).map_err(|e| ApiError::bad(format!("{user_id:?} is not a user id: {e}")))
}

async fn profile(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult {
    web.ready().await?;
    let user = user_param(&user_id)?;
    let viewer = web.maybe_caller(&headers).await?;
    let viewer = viewer.as_ref().map(|c| c.user_id.as_str()).unwrap_or("");
    let before = cursor(page.before.as_deref())?;
    let profile = query::profile(
        web.db(),
        viewer,
        user.as_str(),
        before,
        web.limit(page.limit),
    )
    .await?;
    Ok(Json(json!(profile)))
}

/// The timeline room of `user`, or a 404 saying they have not posted yet.
async fn room_of(web: &Web, user: &UserId) -> ApiResult<String> {
    index::room_of(web.db(), user.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{user} has no timeline yet: they have never posted"
            ))
        })
}

/// `POST` follows a user (joins their timeline room), `DELETE` unfollows (leaves it).
async fn follow(
    State(web): State<Web>,
    method: Method,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let user = user_param(&user_id)?;
    let room = room_of(&web, &user).await?;
    if method != Method::DELETE {
        web.ensure_member(&caller, &room).await?;
        return Ok(Json(json!({ "following": user, "room_id": room })));
    }
    if user == caller.user_id {
        return Err(ApiError::bad("you cannot unfollow yourself"));
    }
    let room_id = OwnedRoomId::try_from(room.as_str()).map_err(trestle::Error::from)?;
    web.users.leave(&caller.token, &room_id).await?;
    index::remove_member(web.db(), &room, caller.user_id.as_str()).await?;
    Ok(Json(json!({ "unfollowed": user, "room_id": room })))
}

/// Rebuilds the index from the rooms; for the admins named in the settings.
async fn reindex(State(web): State<Web>, headers: HeaderMap) -> ApiResult {
    let caller = web.caller(&headers).await?;
    if !web
        .settings
        .admins
        .iter()
        .any(|a| a == caller.user_id.as_str())
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            format!(
                "{} is not a timeline admin (`admins` in the settings)",
                caller.user_id
            ),
        ));
    }
    let done = crate::reindex(&web.app).await?;
    Ok(Json(json!({ "rooms": done.rooms, "events": done.events })))
}
