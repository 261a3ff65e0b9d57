//! Private messages from the bot to one user: secrets (webhook URLs, signing keys) must not be
//! posted where the whole room reads them.

use sqlx::Row;
use trestle::{
    Appservice,
    ruma::{
        OwnedRoomId, RoomId, UserId,
        api::{
            AppserviceUserIdentity,
            client::room::{Visibility, create_room},
        },
    },
};

use crate::{Result, db, render::Message};

/// Sends `message` to `user` in the bot's direct-message room with them, created (and the user
/// invited) the first time, or again when the old one can no longer be used.
pub async fn send_private(app: &Appservice, user: &UserId, message: &Message) -> Result<()> {
    db::ready(app).await?;
    if let Some(room) = known_room(app, user).await? {
        match crate::reply(app, &room, message).await {
            Ok(()) => return Ok(()),
            Err(crate::Error::Trestle(e)) if e.is_forbidden() => {
                tracing::info!(%user, %room, "direct-message room unusable; making a new one");
            }
            Err(e) => return Err(e),
        }
    }
    let room = create(app, user).await?;
    sqlx::query(
        "INSERT INTO notify_dms (user_id, room_id) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
    )
    .bind(user.as_str())
    .bind(room.as_str())
    .execute(app.store().pool())
    .await?;
    crate::reply(app, &room, message).await
}

async fn known_room(app: &Appservice, user: &UserId) -> Result<Option<OwnedRoomId>> {
    let row = sqlx::query("SELECT room_id FROM notify_dms WHERE user_id = $1")
        .bind(user.as_str())
        .fetch_optional(app.store().pool())
        .await?;
    Ok(row.and_then(|r| RoomId::parse(r.get::<String, _>(0)).ok()))
}

async fn create(app: &Appservice, user: &UserId) -> Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.invite = vec![user.to_owned()];
    request.is_direct = true;
    request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
    request.visibility = Visibility::Private;
    let response = app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await?;
    Ok(response.room_id)
}
