//! Turning a stored [`Op`] into the homeserver request it stands for.

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId, OwnedUserId, UInt,
    api::{
        AppserviceUserIdentity,
        client::{
            membership::{ban_user, invite_user, join_room_by_id, kick_user, leave_room},
            message::send_message_event,
            profile::set_profile_field,
            redact::redact_event,
            state::send_state_event,
        },
    },
    profile::ProfileFieldValue,
    serde::Raw,
};

use super::Op;
use crate::queues::core::Core;
use crate::{Result, store::Membership};

fn ts(ms: Option<u64>) -> Option<MilliSecondsSinceUnixEpoch> {
    ms.and_then(|ms| UInt::try_from(ms).ok())
        .map(MilliSecondsSinceUnixEpoch)
}

/// Sends one request, registering the user first if needed. Where the caches may be stale
/// (processes share the store, and another saw the user leave), an event the homeserver
/// refuses with `M_FORBIDDEN` is sent once more after the user joins again: the join that a
/// true cache would have queued first.
pub(super) async fn execute(
    core: &Core,
    op: &Op,
    user_id: &OwnedUserId,
    device_id: Option<&OwnedDeviceId>,
) -> Result<Option<OwnedEventId>> {
    let outcome = execute_once(core, op, user_id, device_id).await;
    let room_id = match op {
        Op::Message { room_id, .. } | Op::State { room_id, .. } | Op::Redact { room_id, .. } => {
            room_id
        }
        _ => return outcome,
    };
    match outcome {
        Err(error) if error.is_forbidden() && core.mode.stale_caches() => {
            tracing::info!(%user_id, %room_id, %error, "refused; joining again in case another process saw this user leave, then retrying once");
            core.users.forget_joined(room_id, user_id);
            let identity = AppserviceUserIdentity::new(user_id);
            if let Err(join_error) = join(core, room_id, user_id, identity).await {
                tracing::info!(%user_id, %room_id, %join_error, "could not join again");
                return Err(error);
            }
            execute_once(core, op, user_id, device_id).await
        }
        other => other,
    }
}

/// Joins `user_id` to `room_id`; a ghost the room turns away is invited by the bot first.
async fn join(
    core: &Core,
    room_id: &ruma::OwnedRoomId,
    user_id: &OwnedUserId,
    identity: AppserviceUserIdentity<'_>,
) -> Result<()> {
    let (client, users) = (&core.client, &core.users);
    let join = || client.send(join_room_by_id::v3::Request::new(room_id.clone()), identity);
    let outcome = join().await;
    users.join_settled(room_id, user_id);
    match outcome {
        // A ghost cannot join an invite-only room by itself: the bot, already there,
        // invites it. Sent directly, since this room's queue is the one running.
        Err(e) if e.is_forbidden() && user_id != users.bot_user_id() => {
            let recipient = invite_user::v3::InviteUserId::new(user_id.clone());
            let invite = invite_user::v3::Request::new(room_id.clone(), recipient.into());
            client
                .send(invite, AppserviceUserIdentity::new(users.bot_user_id()))
                .await?;
            join().await?;
        }
        other => {
            other?;
        }
    }
    users.record_membership(room_id, user_id, Membership::Join);
    Ok(())
}

async fn execute_once(
    core: &Core,
    op: &Op,
    user_id: &OwnedUserId,
    device_id: Option<&OwnedDeviceId>,
) -> Result<Option<OwnedEventId>> {
    let users = &core.users;
    users.ensure_registered(&core.client, user_id).await?;
    let mut identity = AppserviceUserIdentity::new(user_id);
    identity.device_id = device_id.map(|d| &**d);
    let client = &core.client;
    let store = &core.store;
    match op {
        Op::Message {
            room_id,
            event_type,
            content,
            txn_id,
            ts: at,
        } => {
            // End-to-end encryption (see encryption.rs): a no-op unless installed.
            let sealed = core
                .upstream
                .seal(user_id, room_id, event_type, content)
                .await?;
            let (event_type, content) = match &sealed {
                Some((event_type, content)) => (event_type, content),
                None => (event_type, content),
            };
            let body = Raw::from_json(content.clone());
            let mut request = send_message_event::v3::Request::new_raw(
                room_id.clone(),
                txn_id.clone(),
                event_type.as_str().into(),
                body,
            );
            request.timestamp = ts(*at);
            Ok(Some(client.send(request, identity).await?.event_id))
        }
        Op::State {
            room_id,
            event_type,
            state_key,
            content,
            ts: at,
        } => {
            let mut request = send_state_event::v3::Request::new_raw(
                room_id.clone(),
                event_type.as_str().into(),
                state_key.clone(),
                Raw::from_json(content.clone()),
            );
            request.timestamp = ts(*at);
            Ok(Some(client.send(request, identity).await?.event_id))
        }
        Op::Redact {
            room_id,
            event_id,
            reason,
            txn_id,
        } => {
            let mut request =
                redact_event::v3::Request::new(room_id.clone(), event_id.clone(), txn_id.clone());
            request.reason = reason.clone();
            Ok(Some(client.send(request, identity).await?.event_id))
        }
        Op::Join { room_id } => {
            join(core, room_id, user_id, identity).await?;
            Ok(None)
        }
        Op::Leave { room_id } => {
            client
                .send(leave_room::v3::Request::new(room_id.clone()), identity)
                .await?;
            users.record_membership(room_id, user_id, Membership::Leave);
            Ok(None)
        }
        Op::Invite {
            room_id,
            user_id: invitee,
        } => {
            let recipient = invite_user::v3::InviteUserId::new(invitee.clone());
            client
                .send(
                    invite_user::v3::Request::new(room_id.clone(), recipient.into()),
                    identity,
                )
                .await?;
            Ok(None)
        }
        Op::Kick {
            room_id,
            user_id: target,
            reason,
        } => {
            let mut request = kick_user::v3::Request::new(room_id.clone(), target.clone());
            request.reason = reason.clone();
            client.send(request, identity).await?;
            Ok(None)
        }
        Op::Ban {
            room_id,
            user_id: target,
            reason,
        } => {
            let mut request = ban_user::v3::Request::new(room_id.clone(), target.clone());
            request.reason = reason.clone();
            client.send(request, identity).await?;
            Ok(None)
        }
        Op::DisplayName { name } => {
            let value = ProfileFieldValue::DisplayName(name.clone());
            let request = set_profile_field::v3::Request::new(user_id.clone(), value);
            client.send(request, identity).await?;
            store
                .set_ghost_display_name(user_id.as_str(), Some(name))
                .await?;
            Ok(None)
        }
        Op::AvatarUrl { url } => {
            let value = ProfileFieldValue::AvatarUrl(url.clone());
            let request = set_profile_field::v3::Request::new(user_id.clone(), value);
            client.send(request, identity).await?;
            store
                .set_ghost_avatar_url(user_id.as_str(), Some(url.as_str()))
                .await?;
            Ok(None)
        }
    }
}
