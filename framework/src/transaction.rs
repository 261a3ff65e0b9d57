//! The body of `PUT /_matrix/app/v1/transactions/{txnId}` and the items it carries.
//!
//! ruma's `push_events::v1::Request` does not read the unstable ephemeral key that Synapse before
//! 1.156 sends, so Trestle reads the body with its own type. Every item stays a `Raw` JSON value
//! until it is taken apart one by one: a single malformed event is logged and skipped, and never
//! fails the transaction it came in.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#put_matrixappv1transactionstxnid>

use std::{collections::BTreeMap, ops::Range, sync::Arc};

use ruma::{
    OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId,
    api::appservice::event::push_events::v1::DeviceLists,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A transaction as Synapse sends it.
#[derive(Debug, Default, Deserialize)]
pub struct TransactionBody {
    /// Timeline events (messages and state).
    #[serde(default)]
    pub events: Vec<Box<RawValue>>,
    /// Ephemeral events (typing, receipts, presence), stable key.
    #[serde(default)]
    pub ephemeral: Option<Vec<Box<RawValue>>>,
    /// Ephemeral events, MSC2409's unstable key.
    #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
    pub ephemeral_unstable: Option<Vec<Box<RawValue>>>,
    /// To-device events (MSC2409/MSC4203).
    #[serde(default, rename = "de.sorunome.msc2409.to_device")]
    pub to_device: Vec<Box<RawValue>>,
    /// Device list changes (MSC3202). Kept raw so a malformed value fails only itself.
    #[serde(default, rename = "org.matrix.msc3202.device_lists")]
    pub device_lists: Option<Box<RawValue>>,
    /// One-time-key counts per user and device (MSC3202).
    #[serde(default, rename = "org.matrix.msc3202.device_one_time_keys_count")]
    pub one_time_keys_count: Option<Box<RawValue>>,
    /// Unused fallback key types per user and device (MSC3202).
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_unused_fallback_key_types"
    )]
    pub unused_fallback_key_types: Option<Box<RawValue>>,
}

/// One thing a transaction delivered, ready to route to handlers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A room event: a message or a state event.
    Timeline(TimelineEvent),
    /// An ephemeral event: typing, receipt or presence.
    Ephemeral(EphemeralEvent),
    /// A to-device event for one of the appservice's users.
    ToDevice(ToDeviceEvent),
    /// MSC3202 end-to-end encryption bookkeeping for the appservice's users.
    DeviceLists(DeviceListUpdate),
}

/// A timeline event with its routing fields read; the rest stays raw.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TimelineEvent {
    /// `type`.
    pub event_type: String,
    /// `room_id`.
    pub room_id: OwnedRoomId,
    /// `sender`.
    pub sender: OwnedUserId,
    /// `event_id`.
    pub event_id: OwnedEventId,
    /// `state_key`, present exactly for state events.
    pub state_key: Option<String>,
    /// The whole event.
    pub json: Arc<RawValue>,
    /// Where `content` is in `json`, found as the routing fields were read, so that a command
    /// is read from the content alone (`router/command.rs`).
    pub(crate) content: Option<ContentAt>,
    /// `origin_server_ts` where it is an integer, else 0: with the id, what the inbox knows the
    /// event by (`NewInboxItem::event_ts`).
    pub(crate) origin_ts: i64,
}

/// The place of an event's `content` in the JSON it was found in. It holds that JSON, so a
/// `json` replaced since (the fields are public) is told apart and the place not used.
#[derive(Clone)]
pub(crate) struct ContentAt {
    of: Arc<RawValue>,
    range: Range<usize>,
}

impl std::fmt::Debug for ContentAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ContentAt").field(&self.range).finish()
    }
}

impl TimelineEvent {
    /// The event's `content`, as received, where its place is known.
    pub(crate) fn content_json(&self) -> Option<&str> {
        let at = self.content.as_ref()?;
        if !Arc::ptr_eq(&at.of, &self.json) {
            return None;
        }
        self.json.get().get(at.range.clone())
    }
}

/// An ephemeral event.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EphemeralEvent {
    /// `type`, such as `m.typing`.
    pub event_type: String,
    /// `room_id`, for typing and receipts.
    pub room_id: Option<OwnedRoomId>,
    /// `sender`, for presence.
    pub sender: Option<OwnedUserId>,
    /// The whole event.
    pub json: Arc<RawValue>,
}

/// A to-device event, addressed to one of the appservice's users and devices.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ToDeviceEvent {
    /// `type`.
    pub event_type: String,
    /// `sender`.
    pub sender: OwnedUserId,
    /// `to_user_id`.
    pub to_user_id: OwnedUserId,
    /// `to_device_id`.
    pub to_device_id: OwnedDeviceId,
    /// The whole event.
    pub json: Arc<RawValue>,
}

/// One-time-key counts: user → device → algorithm → count.
pub type OneTimeKeyCounts = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, u64>>>;
/// Unused fallback key types: user → device → algorithms.
pub type FallbackKeyTypes = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Vec<String>>>;

/// MSC3202 data of one transaction.
#[derive(Clone, Debug, Default, serde::Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeviceListUpdate {
    /// Users whose devices changed or who no longer share a room.
    pub device_lists: DeviceLists,
    /// One-time-key counts.
    pub one_time_keys_count: OneTimeKeyCounts,
    /// Unused fallback key types.
    pub unused_fallback_key_types: FallbackKeyTypes,
}

#[derive(Deserialize)]
struct TimelineHead {
    #[serde(rename = "type")]
    event_type: String,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    event_id: OwnedEventId,
    state_key: Option<String>,
}

/// [`TimelineHead`] with the content's place: the content is passed over either way, and
/// borrowed it costs no more. Read first; an event it refuses (two `content` keys) is read
/// again as a [`TimelineHead`], which takes it as before.
#[derive(Deserialize)]
struct TimelineHeadAndContent<'a> {
    #[serde(rename = "type")]
    event_type: String,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    event_id: OwnedEventId,
    state_key: Option<String>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(rename = "origin_server_ts", default, deserialize_with = "origin_ts")]
    origin_ts: i64,
}

/// An `origin_server_ts` as the inbox keys events by it: the integer, or 0 for any other value,
/// which is accepted all the same (the event is the homeserver's to vouch for, not ours). The
/// same JSON always gives the same key, which is all the inbox needs of it.
fn origin_ts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Ts;
    impl<'de> Visitor<'de> for Ts {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_i64<E>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E>(self, v: u64) -> Result<i64, E> {
            Ok(i64::try_from(v).unwrap_or(0))
        }
        fn visit_f64<E>(self, _: f64) -> Result<i64, E> {
            Ok(0)
        }
        fn visit_bool<E>(self, _: bool) -> Result<i64, E> {
            Ok(0)
        }
        fn visit_str<E>(self, _: &str) -> Result<i64, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<i64, E> {
            Ok(0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<i64, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(0)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<i64, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(0)
        }
    }
    deserializer.deserialize_any(Ts)
}

#[derive(Deserialize)]
struct EphemeralHead {
    #[serde(rename = "type")]
    event_type: String,
    room_id: Option<OwnedRoomId>,
    sender: Option<OwnedUserId>,
}

#[derive(Deserialize)]
struct ToDeviceHead {
    #[serde(rename = "type")]
    event_type: String,
    sender: OwnedUserId,
    to_user_id: OwnedUserId,
    to_device_id: OwnedDeviceId,
}

/// What taking a transaction apart produced: the items in order, and how many were skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The items, timeline events first in stream order.
    pub items: Vec<Incoming>,
    /// How many items were malformed and skipped.
    pub skipped: usize,
}

impl TransactionBody {
    /// Takes the transaction apart. Malformed items are logged (with the transaction id and,
    /// where readable, the event id) and skipped.
    pub fn into_items(self, txn_id: &str) -> Parsed {
        let mut parsed = Parsed::default();
        for raw in self.events {
            match parse_timeline(raw) {
                Ok(item) => parsed.items.push(item),
                Err((raw, e)) => skip(&mut parsed, txn_id, "event", &raw, &e),
            }
        }
        // Synapse ≥ 1.156 may send both keys with the same content: prefer the stable one.
        for raw in self
            .ephemeral
            .or(self.ephemeral_unstable)
            .unwrap_or_default()
        {
            match parse_ephemeral(raw) {
                Ok(item) => parsed.items.push(item),
                Err((raw, e)) => skip(&mut parsed, txn_id, "ephemeral event", &raw, &e),
            }
        }
        for raw in self.to_device {
            match parse_to_device(raw) {
                Ok(item) => parsed.items.push(item),
                Err((raw, e)) => skip(&mut parsed, txn_id, "to-device event", &raw, &e),
            }
        }
        let mut update = DeviceListUpdate::default();
        let mut any = false;
        if let Some(raw) = self.device_lists {
            match serde_json::from_str(raw.get()) {
                Ok(lists) => {
                    update.device_lists = lists;
                    any = true;
                }
                Err(e) => skip(&mut parsed, txn_id, "device_lists", &raw, &e),
            }
        }
        if let Some(raw) = self.one_time_keys_count {
            match serde_json::from_str(raw.get()) {
                Ok(counts) => {
                    update.one_time_keys_count = counts;
                    any = true;
                }
                Err(e) => skip(&mut parsed, txn_id, "device_one_time_keys_count", &raw, &e),
            }
        }
        if let Some(raw) = self.unused_fallback_key_types {
            match serde_json::from_str(raw.get()) {
                Ok(types) => {
                    update.unused_fallback_key_types = types;
                    any = true;
                }
                Err(e) => skip(
                    &mut parsed,
                    txn_id,
                    "device_unused_fallback_key_types",
                    &raw,
                    &e,
                ),
            }
        }
        if any {
            parsed.items.push(Incoming::DeviceLists(update));
        }
        parsed
    }
}

type ParseResult = Result<Incoming, (Box<RawValue>, serde_json::Error)>;

fn parse_timeline(raw: Box<RawValue>) -> ParseResult {
    if let Ok(h) = serde_json::from_str::<TimelineHeadAndContent>(raw.get()) {
        // Offsets into `raw`, which the Arc holds a copy of.
        let start = raw.get().as_ptr() as usize;
        let TimelineHeadAndContent {
            event_type,
            room_id,
            sender,
            event_id,
            state_key,
            content,
            origin_ts,
        } = h;
        let range = content.map(|content| {
            let at = content.get().as_ptr() as usize - start;
            at..at + content.get().len()
        });
        let json: Arc<RawValue> = Arc::from(raw);
        return Ok(Incoming::Timeline(TimelineEvent {
            event_type,
            room_id,
            sender,
            event_id,
            state_key,
            content: range.map(|range| ContentAt {
                of: Arc::clone(&json),
                range,
            }),
            json,
            origin_ts,
        }));
    }
    match serde_json::from_str::<TimelineHead>(raw.get()) {
        Ok(h) => Ok(Incoming::Timeline(TimelineEvent {
            event_type: h.event_type,
            room_id: h.room_id,
            sender: h.sender,
            event_id: h.event_id,
            state_key: h.state_key,
            json: Arc::from(raw),
            content: None,
            // Not read here: a key twice, which this fallback is for, would refuse the event.
            origin_ts: 0,
        })),
        Err(e) => Err((raw, e)),
    }
}

/// The `origin_server_ts` of a stored timeline event as [`TimelineEvent::origin_ts`] read it
/// when the event came: the same JSON, the same parse. 0 if it does not read.
pub(crate) fn stored_origin_ts(payload: &str) -> i64 {
    match Incoming::from_stored("timeline", payload) {
        Ok(Incoming::Timeline(event)) => event.origin_ts,
        _ => 0,
    }
}

fn parse_ephemeral(raw: Box<RawValue>) -> ParseResult {
    match serde_json::from_str::<EphemeralHead>(raw.get()) {
        Ok(h) => Ok(Incoming::Ephemeral(EphemeralEvent {
            event_type: h.event_type,
            room_id: h.room_id,
            sender: h.sender,
            json: Arc::from(raw),
        })),
        Err(e) => Err((raw, e)),
    }
}

fn parse_to_device(raw: Box<RawValue>) -> ParseResult {
    match serde_json::from_str::<ToDeviceHead>(raw.get()) {
        Ok(h) => Ok(Incoming::ToDevice(ToDeviceEvent {
            event_type: h.event_type,
            sender: h.sender,
            to_user_id: h.to_user_id,
            to_device_id: h.to_device_id,
            json: Arc::from(raw),
        })),
        Err(e) => Err((raw, e)),
    }
}

fn skip(parsed: &mut Parsed, txn_id: &str, what: &str, raw: &RawValue, error: &serde_json::Error) {
    #[derive(Deserialize)]
    struct MaybeId {
        event_id: Option<String>,
    }
    let event_id = serde_json::from_str::<MaybeId>(raw.get())
        .ok()
        .and_then(|m| m.event_id)
        .unwrap_or_else(|| "<none>".to_owned());
    tracing::warn!(txn_id, event_id, %error, "skipping a malformed {what}");
    parsed.skipped += 1;
}

impl Incoming {
    /// The ordering key: items with the same key are handled one after another, in order;
    /// different keys run concurrently. Room items are keyed by room, the rest share one queue.
    pub fn queue_key(&self) -> Option<&OwnedRoomId> {
        match self {
            Incoming::Timeline(e) => Some(&e.room_id),
            Incoming::Ephemeral(e) => e.room_id.as_ref(),
            Incoming::ToDevice(_) | Incoming::DeviceLists(_) => None,
        }
    }

    /// The event type, where there is one.
    pub fn event_type(&self) -> Option<&str> {
        match self {
            Incoming::Timeline(e) => Some(&e.event_type),
            Incoming::Ephemeral(e) => Some(&e.event_type),
            Incoming::ToDevice(e) => Some(&e.event_type),
            Incoming::DeviceLists(_) => None,
        }
    }

    /// The raw JSON of the event, where there is one.
    pub fn json(&self) -> Option<&Arc<RawValue>> {
        match self {
            Incoming::Timeline(e) => Some(&e.json),
            Incoming::Ephemeral(e) => Some(&e.json),
            Incoming::ToDevice(e) => Some(&e.json),
            Incoming::DeviceLists(_) => None,
        }
    }
}

impl Incoming {
    /// What kind of item this is, as stored: `timeline`, `ephemeral`, `to_device` or
    /// `device_lists`; [`Incoming::from_stored`] reads it back with its JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Incoming::Timeline(_) => "timeline",
            Incoming::Ephemeral(_) => "ephemeral",
            Incoming::ToDevice(_) => "to_device",
            Incoming::DeviceLists(_) => "device_lists",
        }
    }

    /// Reads a stored item back from its [`Incoming::kind`] and JSON (an inbox row, or an item
    /// a plugin stored). Failure means a damaged row.
    pub fn from_stored(kind: &str, payload: &str) -> Result<Incoming, serde_json::Error> {
        let raw = RawValue::from_string(payload.to_owned())?;
        let unwrap = |r: ParseResult| r.map_err(|(_, e)| e);
        match kind {
            "timeline" => unwrap(parse_timeline(raw)),
            "ephemeral" => unwrap(parse_ephemeral(raw)),
            "to_device" => unwrap(parse_to_device(raw)),
            "device_lists" => serde_json::from_str(payload).map(Incoming::DeviceLists),
            other => Err(serde::de::Error::custom(format!(
                "unknown inbox item kind `{other}`"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
