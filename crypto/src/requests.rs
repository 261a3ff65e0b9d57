//! Sending the Olm machine's requests as the bot's device, and handing back the answers.

use matrix_sdk_crypto::{
    OlmMachine,
    types::requests::{AnyOutgoingRequest, ToDeviceRequest},
};
use trestle::{
    Appservice, Error, Result,
    ruma::{
        TransactionId,
        api::{
            AppserviceUserIdentity,
            client::{keys::get_keys, to_device::send_event_to_device},
        },
    },
};

pub(crate) fn error(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("end-to-end encryption: {e}"))
}

/// Identity assertion as the machine's user and device (`?user_id=…&device_id=…`).
fn as_device(machine: &OlmMachine) -> AppserviceUserIdentity<'_> {
    let mut identity = AppserviceUserIdentity::new(machine.user_id());
    identity.device_id = Some(machine.device_id());
    identity
}

/// Sends one request of `machine` as its device, and tells the machine the answer.
pub(crate) async fn send(
    app: &Appservice,
    machine: &OlmMachine,
    id: &TransactionId,
    request: &AnyOutgoingRequest,
) -> Result<()> {
    let identity = as_device(machine);
    let client = app.client();
    match request {
        AnyOutgoingRequest::KeysUpload(r) => {
            let response = client.send(r.clone(), identity).await?;
            machine.mark_request_as_sent(id, &response).await
        }
        AnyOutgoingRequest::KeysQuery(r) => {
            let mut query = get_keys::v3::Request::new();
            query.device_keys = r.device_keys.clone();
            query.timeout = r.timeout;
            let response = client.send(query, identity).await?;
            machine.mark_request_as_sent(id, &response).await
        }
        AnyOutgoingRequest::KeysClaim(r) => {
            let response = client.send(r.clone(), identity).await?;
            machine.mark_request_as_sent(id, &response).await
        }
        AnyOutgoingRequest::ToDeviceRequest(r) => {
            return send_to_device(app, machine, r).await;
        }
        AnyOutgoingRequest::SignatureUpload(r) => {
            let response = client.send(r.clone(), identity).await?;
            machine.mark_request_as_sent(id, &response).await
        }
        // In-room verification is not offered: the bot's device is trusted on first use.
        AnyOutgoingRequest::RoomMessage(_) => return Ok(()),
    }
    .map_err(error)
}

/// Sends a to-device request (room keys, Olm messages) as the machine's device.
pub(crate) async fn send_to_device(
    app: &Appservice,
    machine: &OlmMachine,
    request: &ToDeviceRequest,
) -> Result<()> {
    let identity = as_device(machine);
    let to_device = send_event_to_device::v3::Request::new_raw(
        request.event_type.clone(),
        request.txn_id.clone(),
        request.messages.clone(),
    );
    let response = app.client().send(to_device, identity).await?;
    machine
        .mark_request_as_sent(&request.txn_id, &response)
        .await
        .map_err(error)
}

/// Sends every request the machine has waiting.
pub(crate) async fn send_all(app: &Appservice, machine: &OlmMachine) -> Result<()> {
    for request in machine.outgoing_requests().await.map_err(error)? {
        send(app, machine, request.request_id(), request.request()).await?;
    }
    Ok(())
}
