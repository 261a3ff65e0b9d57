//! What a user says of themselves: their display name and avatar, which are their Matrix
//! profile's, and their bio, which is their timeline room's topic; so any Matrix client shows
//! and edits them too.

use trestle::axum::routing::put;

use super::*;

/// The longest bio, in characters.
pub(crate) const MAX_BIO_CHARS: usize = 300;
/// The longest display name set through the page, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 100;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/bio", put(set_bio))
        .route("/api/profile", put(set_profile))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bio {
    bio: String,
}

/// `PUT /api/bio`: sets the caller's bio (their timeline room's `m.room.topic`, sent with
/// their own token; the room is made first if they have none yet). Answers `{"bio"}`.
async fn set_bio(
    State(web): State<Web>,
    headers: HeaderMap,
    bio: Result<Json<Bio>, JsonRejection>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let bio = body(bio)?.bio.trim().to_owned();
    let length = bio.chars().count();
    if length > MAX_BIO_CHARS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("the bio has {length} characters; at most {MAX_BIO_CHARS} are allowed"),
        ));
    }
    let room = web.own_room(&caller).await?;
    let event_id = web
        .users
        .send_state(
            &caller.token,
            &room,
            "m.room.topic",
            "",
            &json!({ "topic": bio }),
        )
        .await?;
    // Indexed at once, so the profile shows it on the next read.
    let event = web.users.event(&caller.token, &room, &event_id).await?;
    index::apply(&web.app, &event).await?;
    Ok(Json(json!({ "bio": bio })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileChange {
    display_name: Option<String>,
    avatar_url: Option<String>,
}

/// `PUT /api/profile`: sets the caller's display name or avatar (an image uploaded with
/// `POST /api/media`) in their Matrix profile, with their own token. The homeserver passes the
/// change on to every room they are in; the index takes it at once too. Answers
/// `{"display_name", "avatar_url"}` as the index now has them.
async fn set_profile(
    State(web): State<Web>,
    headers: HeaderMap,
    change: Result<Json<ProfileChange>, JsonRejection>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let change = body(change)?;
    if change.display_name.is_none() && change.avatar_url.is_none() {
        return Err(ApiError::bad(
            "nothing to change: give `display_name`, `avatar_url` or both",
        ));
    }
    let name = change.display_name.as_deref().map(str::trim);
    if let Some(name) = name {
        let length = name.chars().count();
        if length == 0 {
            return Err(ApiError::bad("the display name is empty"));
        }
        if length > MAX_NAME_CHARS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                format!(
                    "the display name has {length} characters; at most {MAX_NAME_CHARS} are allowed"
                ),
            ));
        }
    }
    let avatar = change
        .avatar_url
        .as_deref()
        .map(|url| {
            let uri = trestle::ruma::OwnedMxcUri::from(url);
            uri.validate()
                .map(|_| uri.clone())
                .map_err(|_| ApiError::bad(format!("`avatar_url` {url:?} is not an mxc:// URI")))
        })
        .transpose()?;
    let me = caller.user_id.as_str();
    if let Some(name) = name {
        web.users
            .set_display_name(&caller.token, &caller.user_id, name)
            .await?;
        index::set_display_name(web.db(), me, name).await?;
    }
    if let Some(avatar) = avatar {
        web.users
            .set_avatar_url(&caller.token, &caller.user_id, avatar.clone())
            .await?;
        index::set_avatar(web.db(), me, Some(avatar.as_str())).await?;
    }
    let profile = query::profile(web.db(), me, me, None, 1).await?;
    Ok(Json(json!({
        "display_name": profile.display_name,
        "avatar_url": profile.avatar_url,
    })))
}
