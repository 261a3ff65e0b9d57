//! Sessions, feeds and people: login, the home feed, profiles, follows, and the admins' reindex.

use super::*;
use trestle::sync::MutexExt;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/feed", get(feed))
        .route("/api/reindex", post(reindex))
        .route("/api/users/{user_id}", get(profile))
        .route("/api/users/{user_id}/follow", post(follow).delete(follow))
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
    web.sessions.lock_unpoisoned().remove(&caller.token);
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

pub(super) fn cursor(before: Option<&str>) -> ApiResult<Option<(i64, String)>> {
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
    if method != Method::DELETE {
        // A timeline the index does not know (most often on another homeserver) is looked
        // for by its alias on the user's server.
        let room = match index::room_of(web.db(), user.as_str()).await? {
            Some(room) => web.ensure_member(&caller, &room).await?.to_string(),
            None => super::follow::discover(&web, &caller, &user).await?,
        };
        return Ok(Json(json!({ "following": user, "room_id": room })));
    }
    let room = room_of(&web, &user).await?;
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
