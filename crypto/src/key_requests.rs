//! Asking for a missing room key with `m.room_key_request`
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#key-requests)).
//!
//! matrix-sdk-crypto keeps the request (so a forwarded key that answers it is recognised and the
//! request cancelled) and addresses it to the bot's own devices only; the copy sent here also
//! goes to the device that sent the event, which holds the key. The crate accepts a forwarded key
//! only from the bot's own verified devices (see docs/e2ee.md).
//!
//! Answering: the crate forwards a session to a device it was first shared with. Trestle also
//! asks that the device be cross-signed by its owner, the trust that clients hold every device to
//! since MSC4153: a request from any other device is dropped before the crate sees it, so a
//! device added to an account by someone who took its password cannot pull the room's keys.

use matrix_sdk_crypto::types::requests::AnyOutgoingRequest;
use serde_json::value::RawValue;
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedDeviceId, OwnedUserId, UserId,
        api::client::to_device::send_event_to_device::v3::Messages,
        events::{AnyToDeviceEvent, AnyToDeviceEventContent},
        serde::Raw,
        to_device::DeviceIdOrAllDevices,
    },
    transaction::TimelineEvent,
};

use crate::{
    machine::Machine,
    requests::{self, error},
};

impl Machine {
    /// Asks for `event`'s room key, once per session: the request is kept in the crypto store,
    /// so neither a redelivery nor a restart asks again.
    pub(crate) async fn request_key(&self, app: &Appservice, event: &TimelineEvent) -> Result<()> {
        let raw = Raw::from_json(RawValue::to_owned(&event.json));
        // Held throughout: a concurrent `send_outgoing` must not send the crate's copy (same
        // transaction id, own devices only) ahead of ours.
        let _one_at_a_time = self.sending().lock().await;
        let (cancel, request) = self
            .olm()
            .request_room_key(&raw, &event.room_id)
            .await
            .map_err(error)?;
        if cancel.is_some() {
            // Asked before (the crate would cancel and ask again).
            return Ok(());
        }
        let AnyOutgoingRequest::ToDeviceRequest(to_device) = request.request() else {
            return Ok(());
        };
        let mut to_device = to_device.clone();
        let content = to_device.messages.values().flat_map(|d| d.values()).next();
        if let Some(content) = content.cloned() {
            add_sender_device(&mut to_device.messages, &event.sender, event, content);
        }
        tracing::info!(event_id = %event.event_id, "asking for a missing room key");
        requests::send_to_device(app.client(), self.olm(), &to_device).await
    }
}

impl Machine {
    /// `events` without the room key requests from devices their owner has not cross-signed.
    /// A device not yet cross-signed as far as the machine knows has its keys fetched once
    /// first: its owner may have signed it a moment ago. Requests are rare, so that costs
    /// little.
    pub(crate) async fn answerable(
        &self,
        app: &Appservice,
        events: Vec<Raw<AnyToDeviceEvent>>,
    ) -> Vec<Raw<AnyToDeviceEvent>> {
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            let request = match event.get_field::<String>("type") {
                Ok(Some(kind)) if kind == "m.room_key_request" => {
                    event.deserialize_as_unchecked::<KeyRequest>().ok()
                }
                _ => None,
            };
            match request {
                Some(request) if !self.may_answer(app, &request).await => {
                    tracing::info!(user = %request.sender, device = ?request.content.requesting_device_id,
                        "not answering a room key request from a device its owner has not cross-signed");
                }
                _ => kept.push(event),
            }
        }
        kept
    }

    async fn may_answer(&self, app: &Appservice, request: &KeyRequest) -> bool {
        let (Some("request"), Some(device)) = (
            request.content.action.as_deref(),
            &request.content.requesting_device_id,
        ) else {
            // A cancellation, or a request the crate will find malformed itself.
            return true;
        };
        let signed = async || {
            matches!(
                self.olm().get_device(&request.sender, device, None).await,
                Ok(Some(found)) if found.is_cross_signed_by_owner()
            )
        };
        if signed().await {
            return true;
        }
        if let Err(error) = self.fetch_keys(app, &request.sender).await {
            tracing::warn!(%error, user = %request.sender, "could not fetch the keys of a user asking for a room key");
            return false;
        }
        signed().await
    }
}

/// What decides whether an `m.room_key_request` may be answered.
#[derive(serde::Deserialize)]
struct KeyRequest {
    sender: OwnedUserId,
    content: KeyRequestContent,
}

#[derive(serde::Deserialize)]
struct KeyRequestContent {
    action: Option<String>,
    requesting_device_id: Option<OwnedDeviceId>,
}

/// Adds the device that sent `event` (from its content's deprecated `device_id`, else all of
/// the sender's devices) as a recipient of `content`.
fn add_sender_device(
    messages: &mut Messages,
    sender: &UserId,
    event: &TimelineEvent,
    content: Raw<AnyToDeviceEventContent>,
) {
    #[derive(serde::Deserialize)]
    struct Event {
        content: Content,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        device_id: Option<OwnedDeviceId>,
    }
    let device = serde_json::from_str::<Event>(event.json.get())
        .ok()
        .and_then(|e| e.content.device_id)
        .map_or(DeviceIdOrAllDevices::AllDevices, |id| {
            DeviceIdOrAllDevices::DeviceId(id)
        });
    messages
        .entry(sender.to_owned())
        .or_default()
        .insert(device, content);
}
