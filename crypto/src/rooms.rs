//! What encrypting for a room needs to know of it: its `m.room.encryption` settings, its
//! history visibility, and who gets the room key.

use std::{collections::HashMap, sync::Mutex};
use trestle::sync::MutexExt;

use serde::Deserialize;
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::{
            AppserviceUserIdentity,
            client::{membership::get_member_events, state::get_state_event_for_key},
        },
        events::{
            StateEventType,
            room::{
                encryption::RoomEncryptionEventContent, history_visibility::HistoryVisibility,
                member::MembershipState,
            },
        },
    },
    transaction::TimelineEvent,
};

/// An encrypted room's settings.
#[derive(Clone, Debug)]
pub(crate) struct RoomSettings {
    /// Algorithm and rotation.
    pub(crate) encryption: RoomEncryptionEventContent,
    /// Who may read history: with anything but `joined`, invited members get keys too.
    pub(crate) visibility: HistoryVisibility,
}

/// Each room's settings, `None` where it is not encrypted; shared by all machines.
pub(crate) type Rooms = Mutex<HashMap<OwnedRoomId, Option<RoomSettings>>>;

/// A state event's content as `user` sees it now, `None` where there is none.
async fn state<T: for<'de> Deserialize<'de>>(
    app: &Appservice,
    user: &UserId,
    room_id: &RoomId,
    event_type: StateEventType,
) -> Result<Option<T>> {
    let request =
        get_state_event_for_key::v3::Request::new(room_id.to_owned(), event_type, "".into());
    match app
        .client()
        .send(request, AppserviceUserIdentity::new(user))
        .await
    {
        Ok(response) => Ok(Some(serde_json::from_str(response.event_or_content.get())?)),
        Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The room's settings, `None` where it is not encrypted. Asked once per room (as `user`, who
/// is in it); later changes arrive as state events ([`note_state`]).
pub(crate) async fn settings(
    app: &Appservice,
    rooms: &Rooms,
    user: &UserId,
    room_id: &RoomId,
) -> Result<Option<RoomSettings>> {
    if let Some(known) = rooms.lock_unpoisoned().get(room_id) {
        return Ok(known.clone());
    }
    let settings = match state(app, user, room_id, StateEventType::RoomEncryption).await? {
        Some(encryption) => {
            #[derive(Deserialize)]
            struct Visibility {
                history_visibility: HistoryVisibility,
            }
            let visibility =
                state::<Visibility>(app, user, room_id, StateEventType::RoomHistoryVisibility)
                    .await?
                    // The spec's default where the room has none.
                    .map_or(HistoryVisibility::Shared, |v| v.history_visibility);
            Some(RoomSettings {
                encryption,
                visibility,
            })
        }
        None => None,
    };
    rooms
        .lock_unpoisoned()
        .insert(room_id.to_owned(), settings.clone());
    Ok(settings)
}

/// Notes a room turning encryption on, changing its rotation, or its history visibility.
pub(crate) fn note_state(rooms: &Rooms, event: &TimelineEvent) {
    if event.state_key.as_deref() != Some("") {
        return;
    }
    #[derive(Deserialize)]
    struct State<C> {
        content: C,
    }
    #[derive(Deserialize)]
    struct Visibility {
        history_visibility: HistoryVisibility,
    }
    let mut rooms = rooms.lock_unpoisoned();
    match event.event_type.as_str() {
        "m.room.encryption" => {
            let Ok(state) =
                serde_json::from_str::<State<RoomEncryptionEventContent>>(event.json.get())
            else {
                return;
            };
            match rooms.get_mut(&event.room_id) {
                Some(Some(known)) => known.encryption = state.content,
                // Not known yet: asked in full on the next send.
                _ => {
                    rooms.remove(&event.room_id);
                }
            }
        }
        "m.room.history_visibility" => {
            if let (Ok(state), Some(Some(known))) = (
                serde_json::from_str::<State<Visibility>>(event.json.get()),
                rooms.get_mut(&event.room_id),
            ) {
                known.visibility = state.content.history_visibility;
            }
        }
        _ => {}
    }
}

/// Who gets the room key: the joined members, and the invited ones unless history is visible
/// to joined members only.
pub(crate) async fn recipients(
    app: &Appservice,
    user: &UserId,
    room_id: &RoomId,
    visibility: &HistoryVisibility,
) -> Result<Vec<OwnedUserId>> {
    let invited_too = *visibility != HistoryVisibility::Joined;
    let members = memberships(app, AppserviceUserIdentity::new(user), room_id).await?;
    Ok(members
        .into_iter()
        .filter(|(_, membership)| {
            *membership == MembershipState::Join
                || (invited_too && *membership == MembershipState::Invite)
        })
        .map(|(user, _)| user)
        .collect())
}

/// Each member of `room_id` with their membership, as `who` sees them.
pub(crate) async fn memberships(
    app: &Appservice,
    who: AppserviceUserIdentity<'_>,
    room_id: &RoomId,
) -> Result<Vec<(OwnedUserId, MembershipState)>> {
    #[derive(Deserialize)]
    struct Member {
        state_key: OwnedUserId,
        content: Content,
    }
    #[derive(Deserialize)]
    struct Content {
        membership: MembershipState,
    }
    let request = get_member_events::v3::Request::new(room_id.to_owned());
    let response = app.client().send(request, who).await?;
    Ok(response
        .chunk
        .iter()
        .filter_map(|raw| raw.deserialize_as_unchecked::<Member>().ok())
        .map(|m| (m.state_key, m.content.membership))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trestle::transaction::{Incoming, TransactionBody};

    use super::*;

    fn state_event(room: &str, event_type: &str, content: serde_json::Value) -> TimelineEvent {
        let body: TransactionBody = serde_json::from_value(json!({"events": [{
            "type": event_type, "state_key": "", "room_id": room, "sender": "@u:x",
            "event_id": "$1", "origin_server_ts": 1, "content": content,
        }]}))
        .unwrap();
        match body.into_items("t").items.remove(0) {
            Incoming::Timeline(event) => event,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn state_events_update_known_rooms_only() {
        let rooms = Rooms::default();
        let known: OwnedRoomId = "!known:x".try_into().unwrap();
        let encryption = json!({"algorithm": "m.megolm.v1.aes-sha2"});
        rooms.lock().unwrap().insert(
            known.clone(),
            Some(RoomSettings {
                encryption: serde_json::from_value(encryption).unwrap(),
                visibility: HistoryVisibility::Shared,
            }),
        );
        let rotation = json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 5});
        note_state(
            &rooms,
            &state_event("!known:x", "m.room.encryption", rotation.clone()),
        );
        let visibility = json!({"history_visibility": "joined"});
        note_state(
            &rooms,
            &state_event("!known:x", "m.room.history_visibility", visibility),
        );
        // A room never asked about is asked in full on its first send.
        note_state(
            &rooms,
            &state_event("!new:x", "m.room.encryption", rotation),
        );

        let rooms = rooms.lock().unwrap();
        let settings = rooms[&known].as_ref().unwrap();
        assert_eq!(settings.encryption.rotation_period_msgs, Some(5u32.into()));
        assert_eq!(settings.visibility, HistoryVisibility::Joined);
        assert_eq!(rooms.len(), 1);
    }
}
