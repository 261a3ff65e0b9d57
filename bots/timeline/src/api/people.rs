//! What a user says of themselves: their bio, which is their timeline room's topic, so any
//! Matrix client shows and edits it too.

use trestle::axum::routing::put;

use super::*;

/// The longest bio, in characters.
pub(crate) const MAX_BIO_CHARS: usize = 300;

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/api/bio", put(set_bio))
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
