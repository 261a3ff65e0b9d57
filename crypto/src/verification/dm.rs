//! The direct chat where the bot shows a user the emoji of a verification: one the bot
//! already shares with the user alone, else a new one.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedRoomId, RoomId, UserId,
        api::{
            AppserviceUserIdentity,
            client::{
                config::{get_global_account_data, set_global_account_data},
                membership::joined_rooms,
                room::{Visibility, create_room},
            },
        },
        events::{
            GlobalAccountDataEventType, InitialStateEvent,
            room::{encryption::RoomEncryptionEventContent, member::MembershipState},
        },
        serde::Raw,
    },
};

/// A room the bot and `user` alone are in (joined, or the user invited): the latest one the
/// bot's `m.direct` lists for the user, else the first such room among those the bot has
/// joined, else a new encrypted direct chat the user is invited to. A room found or made is
/// added to the bot's `m.direct`, so the next verification finds it at once.
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#mdirect>
pub(super) async fn room_with(app: &Appservice, user: &UserId) -> Result<OwnedRoomId> {
    let mut direct = direct_rooms(app).await?;
    let listed: Vec<OwnedRoomId> = direct
        .get(user.as_str())
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|room| room.as_str().and_then(|r| RoomId::parse(r).ok()))
        .collect();
    for room in listed.iter().rev() {
        if alone_with(app, room, user).await {
            return Ok(room.clone());
        }
    }
    let room = match shared(app, user).await? {
        Some(room) => room,
        None => create(app, user).await?,
    };
    let rooms = direct
        .entry(user.as_str())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(rooms) = rooms {
        rooms.push(Value::String(room.to_string()));
    } else {
        *rooms = Value::Array(vec![Value::String(room.to_string())]);
    }
    if let Err(error) = remember(app, direct).await {
        tracing::warn!(%error, "could not add a direct chat to the bot's m.direct");
    }
    Ok(room)
}

/// The bot's `m.direct` (user → rooms), empty when it has none.
async fn direct_rooms(app: &Appservice) -> Result<Map<String, Value>> {
    let request = get_global_account_data::v3::Request::new(
        app.bot_user_id().clone(),
        GlobalAccountDataEventType::Direct,
    );
    match app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await
    {
        Ok(response) => Ok(serde_json::from_str(response.account_data.json().get())?),
        Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => Ok(Map::new()),
        Err(e) => Err(e),
    }
}

async fn remember(app: &Appservice, direct: Map<String, Value>) -> Result<()> {
    let data = Raw::from_json(serde_json::value::to_raw_value(&direct)?);
    let request = set_global_account_data::v3::Request::new_raw(
        app.bot_user_id().clone(),
        GlobalAccountDataEventType::Direct,
        data,
    );
    app.client()
        .send(request, AppserviceUserIdentity::default())
        .await?;
    Ok(())
}

/// Whether the bot is joined to `room` and the only other member (joined or invited) is
/// `user`. A room the bot cannot read is not.
async fn alone_with(app: &Appservice, room: &RoomId, user: &UserId) -> bool {
    let bot = app.bot_user_id();
    let who = AppserviceUserIdentity::default();
    let Ok(members) = crate::rooms::memberships(app, who, room).await else {
        return false;
    };
    let mut present = BTreeSet::new();
    let mut bot_joined = false;
    for (member, membership) in members {
        match membership {
            MembershipState::Join => {
                bot_joined |= member == *bot;
                present.insert(member);
            }
            MembershipState::Invite => {
                present.insert(member);
            }
            _ => {}
        }
    }
    bot_joined && present.len() == 2 && present.contains(user)
}

/// The first room the bot has joined that it shares with `user` alone. One request per room,
/// once per user: the room found is remembered in `m.direct`.
async fn shared(app: &Appservice, user: &UserId) -> Result<Option<OwnedRoomId>> {
    let rooms = app
        .client()
        .send(
            joined_rooms::v3::Request::new(),
            AppserviceUserIdentity::default(),
        )
        .await?
        .joined_rooms;
    for room in rooms {
        if alone_with(app, &room, user).await {
            return Ok(Some(room));
        }
    }
    Ok(None)
}

/// A new encrypted direct chat with `user`, who is invited.
async fn create(app: &Appservice, user: &UserId) -> Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.invite = vec![user.to_owned()];
    request.is_direct = true;
    request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
    request.visibility = Visibility::Private;
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await?
        .room_id;
    tracing::info!(%user, %room, "made a direct chat for verification");
    Ok(room)
}
