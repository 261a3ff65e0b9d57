use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    api::appservice::event::push_events::v1::EphemeralData, events::StaticEventContent,
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use super::EventContext;
use crate::{
    Appservice,
    encryption::SenderTrust,
    transaction::{DeviceListUpdate, Incoming, ToDeviceEvent},
};

/// Why an extractor did not produce a value.
#[derive(Debug)]
#[non_exhaustive]
pub enum Rejection {
    /// The event is not for this handler (another type, not a command, …). Silent.
    Skip,
    /// The event should be for this handler but is malformed. Logged.
    Invalid(String),
}

/// Something a handler can take as an argument, drawn from the event and the router's state.
pub trait FromEventContext<S>: Sized {
    /// Extracts the value, or says why not.
    fn from_event_context(ctx: &EventContext, state: &S) -> Result<Self, Rejection>;
}

/// Picks a part out of the router's state; any `Clone` state is a part of itself. Implement it
/// for each part of a larger state struct that handlers ask for.
pub trait FromRef<T> {
    /// Takes the part.
    fn from_ref(input: &T) -> Self;
}

impl<T: Clone> FromRef<T> for T {
    fn from_ref(input: &T) -> Self {
        input.clone()
    }
}

/// Shared state given with [`Router::with_state`](super::Router::with_state).
#[derive(Clone, Debug, Default)]
pub struct State<T>(pub T);

impl<S, T: FromRef<S>> FromEventContext<S> for State<T> {
    fn from_event_context(_: &EventContext, state: &S) -> Result<Self, Rejection> {
        Ok(State(T::from_ref(state)))
    }
}

/// The room the event belongs to. Skips items that belong to no room.
#[derive(Clone, Debug)]
pub struct Room(pub OwnedRoomId);

impl<S> FromEventContext<S> for Room {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        ctx.room_id()
            .map(|r| Room(r.to_owned()))
            .ok_or(Rejection::Skip)
    }
}

/// Who sent the event.
#[derive(Clone, Debug)]
pub struct Sender(pub OwnedUserId);

impl<S> FromEventContext<S> for Sender {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        ctx.sender()
            .map(|u| Sender(u.to_owned()))
            .ok_or(Rejection::Skip)
    }
}

impl<S> FromEventContext<S> for Appservice {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        Ok(ctx.app.clone())
    }
}

impl<S> FromEventContext<S> for EventContext {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        Ok(ctx.clone())
    }
}

/// A timeline event whose content is the ruma type `C`; only events of `C`'s type reach the
/// handler. For state events `state_key` is set.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Event<C> {
    /// The typed content.
    pub content: C,
    /// `event_id`.
    pub event_id: OwnedEventId,
    /// `sender`.
    pub sender: OwnedUserId,
    /// `room_id`.
    pub room_id: OwnedRoomId,
    /// `origin_server_ts`.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// `state_key`, for state events.
    pub state_key: Option<String>,
    /// The whole event as received.
    pub json: Arc<RawValue>,
}

#[derive(Deserialize)]
#[serde(bound = "C: DeserializeOwned")]
struct EventBody<C> {
    content: C,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
}

fn type_matches<C: StaticEventContent>(event_type: &str) -> bool {
    // A type ending in `.` is a prefix (e.g. `m.secret_storage.key.`).
    if C::TYPE.ends_with('.') {
        event_type.starts_with(C::TYPE)
    } else {
        event_type == C::TYPE
    }
}

impl<S, C> FromEventContext<S> for Event<C>
where
    C: StaticEventContent + DeserializeOwned,
{
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        let Incoming::Timeline(event) = ctx.incoming() else {
            return Err(Rejection::Skip);
        };
        if !type_matches::<C>(&event.event_type) {
            return Err(Rejection::Skip);
        }
        let body: EventBody<C> = serde_json::from_str(event.json.get())
            .map_err(|e| Rejection::Invalid(format!("{} content: {e}", event.event_type)))?;
        Ok(Event {
            content: body.content,
            event_id: event.event_id.clone(),
            sender: event.sender.clone(),
            room_id: event.room_id.clone(),
            origin_server_ts: body.origin_server_ts,
            state_key: event.state_key.clone(),
            json: event.json.clone(),
        })
    }
}

/// Any event as raw JSON with its type: for custom event types that ruma does not know.
/// Deserialize it into a type of your own with [`RawEvent::deserialize`].
#[derive(Clone, Debug)]
pub struct RawEvent {
    /// `type`.
    pub event_type: String,
    /// The whole event.
    pub json: Arc<RawValue>,
}

impl RawEvent {
    /// Deserializes the whole event.
    pub fn deserialize<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.json.get())
    }

    /// Deserializes the event's `content`.
    pub fn content<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        #[derive(Deserialize)]
        #[serde(bound = "T: DeserializeOwned")]
        struct Content<T> {
            content: T,
        }
        self.deserialize::<Content<T>>().map(|c| c.content)
    }
}

impl<S> FromEventContext<S> for RawEvent {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        match (ctx.incoming().event_type(), ctx.incoming().json()) {
            (Some(t), Some(json)) => Ok(RawEvent {
                event_type: t.to_owned(),
                json: json.clone(),
            }),
            _ => Err(Rejection::Skip),
        }
    }
}

/// An ephemeral event (typing, receipt, presence), parsed by ruma. Needs `receive_ephemeral`
/// in the registration.
#[derive(Clone, Debug)]
pub struct Ephemeral(pub EphemeralData);

impl<S> FromEventContext<S> for Ephemeral {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        let Incoming::Ephemeral(event) = ctx.incoming() else {
            return Err(Rejection::Skip);
        };
        serde_json::from_str(event.json.get())
            .map(Ephemeral)
            .map_err(|e| Rejection::Invalid(format!("{}: {e}", event.event_type)))
    }
}

/// A to-device event for one of the appservice's users.
#[derive(Clone, Debug)]
pub struct ToDevice(pub ToDeviceEvent);

impl<S> FromEventContext<S> for ToDevice {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        match ctx.incoming() {
            Incoming::ToDevice(e) => Ok(ToDevice(e.clone())),
            _ => Err(Rejection::Skip),
        }
    }
}

/// MSC3202 device list changes and key counts of one transaction.
#[derive(Clone, Debug)]
pub struct DeviceLists(pub DeviceListUpdate);

impl<S> FromEventContext<S> for DeviceLists {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        match ctx.incoming() {
            Incoming::DeviceLists(d) => Ok(DeviceLists(d.clone())),
            _ => Err(Rejection::Skip),
        }
    }
}

/// The item's idempotency key: the same each time this item is handled (after a crash it may
/// be handled again), different for every other item. Use it to make effects outside Matrix
/// happen once; what a handler sends through intents is already deduplicated with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl<S> FromEventContext<S> for IdempotencyKey {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        Ok(IdempotencyKey(ctx.idempotency_key().to_owned()))
    }
}

/// How far the sender's device of an event that arrived encrypted is trusted (see
/// [`SenderTrust`]); skips events that were not encrypted, so take `Option<SenderTrust>` to see
/// those too. Spec: <https://spec.matrix.org/v1.16/client-server-api/#cross-signing>.
impl<S> FromEventContext<S> for SenderTrust {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        ctx.sender_trust().ok_or(Rejection::Skip)
    }
}

/// `Option<T>` never rejects: it is `None` where `T` would skip or reject.
impl<S, T: FromEventContext<S>> FromEventContext<S> for Option<T> {
    fn from_event_context(ctx: &EventContext, state: &S) -> Result<Self, Rejection> {
        Ok(T::from_event_context(ctx, state).ok())
    }
}
