//! Calls: Matrix carries VoIP signalling as `m.call.*` events. They go to a network that
//! carries calls ([`Network::matrix_call`]); elsewhere they are never bridged, and the caller
//! is told once per call (at its `m.call.invite`) that calls do not cross: by the ghost the
//! invite names as `invitee`, else by the bot (which is not in a direct chat's portal: a call
//! there that names no callee goes untold).
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#voice-over-ip>

use std::collections::{HashSet, VecDeque};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, UserId,
    events::{
        Mentions,
        relation::{InReplyTo, Reply},
        room::message::{Relation, RoomMessageEventContent},
    },
};
use serde_json::Value;
use trestle::{sync::MutexExt, transaction::TimelineEvent};

use super::{BridgeError, BridgeHandle, Network, NetworkResult, PortalRef, Via};

/// Calls whose caller was told, remembered so that a repeated invite (a client that rings
/// again) tells them once; the oldest are forgotten past this many.
const REMEMBERED_CALLS: usize = 1024;

/// A Matrix call event in a portal, for [`Network::matrix_call`].
#[non_exhaustive]
pub struct MatrixCall<'a, N: Network> {
    /// Where.
    pub portal: &'a PortalRef<N>,
    /// Who, through what.
    pub via: Via<'a, N>,
    /// The Matrix caller (or callee answering).
    pub sender: &'a OwnedUserId,
    /// The Matrix event.
    pub event_id: &'a OwnedEventId,
    /// `m.call.invite`, `m.call.answer`, `m.call.candidates`, `m.call.hangup`, ….
    pub event_type: &'a str,
    /// The call the event belongs to (`call_id`).
    pub call_id: String,
    /// The event's content, as sent (an SDP offer or answer, candidates, a reason).
    pub content: &'a Value,
}

/// A call: its room and its `call_id`.
type CallKey = (OwnedRoomId, String);

/// The calls whose caller was told already, oldest first.
#[derive(Default)]
pub(crate) struct Told {
    calls: std::sync::Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    seen: HashSet<CallKey>,
    order: VecDeque<CallKey>,
}

impl Told {
    /// Records a call; `false` if it was recorded already.
    fn first(&self, room_id: &OwnedRoomId, call_id: &str) -> bool {
        let mut calls = self.calls.lock_unpoisoned();
        let key = (room_id.clone(), call_id.to_owned());
        if !calls.seen.insert(key.clone()) {
            return false;
        }
        calls.order.push_back(key);
        if calls.order.len() > REMEMBERED_CALLS
            && let Some(oldest) = calls.order.pop_front()
        {
            calls.seen.remove(&oldest);
        }
        true
    }
}

impl<N: Network> BridgeHandle<N> {
    /// An `m.call.*` event in a room: in a portal, it goes to the network if the network
    /// carries calls and someone speaks for the sender; otherwise a call's invite gets the
    /// caller one notice that the call does not cross.
    pub(crate) async fn on_call(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<()> {
        let Some(portal) = self.portal_for_room(&event.room_id).await? else {
            return Ok(());
        };
        let content = &json["content"];
        let call_id = content["call_id"].as_str().unwrap_or_default().to_owned();
        // Calls are live: nothing waits for a connection that is not there yet.
        let crossed = match self.speaker_now(&portal, &event.sender, true).await? {
            Some(speaker) => {
                let call = MatrixCall {
                    portal: &portal,
                    via: speaker.via(),
                    sender: &event.sender,
                    event_id: &event.event_id,
                    event_type: &event.event_type,
                    call_id: call_id.clone(),
                    content,
                };
                match self.network().matrix_call(call).await {
                    Ok(()) => true,
                    Err(BridgeError::Unsupported(_)) => false,
                    Err(error) => return Err(error),
                }
            }
            None => false,
        };
        if crossed
            || event.event_type != "m.call.invite"
            || !self.shared.calls.first(&event.room_id, &call_id)
        {
            return Ok(());
        }
        let protocol = self.network().protocol().displayname;
        let mut notice = RoomMessageEventContent::notice_plain(format!(
            "Calls do not cross to {protocol}: nobody there hears this call."
        ));
        notice.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(
            event.event_id.clone(),
        ))));
        notice.mentions = Some(Mentions::with_user_ids([event.sender.clone()]));
        // Calls happen in rooms of two (the spec asks it; Synapse refuses invites in public
        // rooms), most often a direct chat's portal, where the bot is not: the ghost called
        // answers when the invite names it.
        let app = self.app()?;
        let teller = content["invitee"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .filter(|u| app.is_own_user(u))
            .map_or_else(|| app.bot(), |ghost| app.intent(&ghost));
        if let Err(error) = teller.send(&event.room_id, &notice).await {
            tracing::warn!(room_id = %event.room_id, %error, "could not say that calls do not cross");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ruma::owned_room_id;

    use super::*;

    #[test]
    fn a_call_is_told_once_and_the_oldest_calls_are_forgotten() {
        let told = Told::default();
        let room = owned_room_id!("!room:example.org");
        assert!(told.first(&room, "c0"));
        assert!(!told.first(&room, "c0"), "the same call ringing again");
        assert!(told.first(&owned_room_id!("!other:example.org"), "c0"));
        for n in 1..=REMEMBERED_CALLS {
            assert!(told.first(&room, &format!("c{n}")));
        }
        assert!(told.first(&room, "c0"), "forgotten past the limit");
        assert!(!told.first(&room, &format!("c{REMEMBERED_CALLS}")));
    }
}
