//! Sending an Olm machine's requests as its device, and handing back the answers.

use matrix_sdk_crypto::{
    OlmMachine,
    types::requests::{AnyOutgoingRequest, ToDeviceRequest},
};
use trestle::{
    Error, Result,
    client::HomeserverClient,
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
    client: &HomeserverClient,
    machine: &OlmMachine,
    id: &TransactionId,
    request: &AnyOutgoingRequest,
) -> Result<()> {
    let identity = as_device(machine);
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
            return send_to_device(client, machine, r).await;
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

/// Sends a to-device request (room keys, Olm messages) as `machine`'s device, with `client`
/// (the appservice's, or a user's own: identity assertion is ignored for a user's token).
pub async fn send_to_device(
    client: &HomeserverClient,
    machine: &OlmMachine,
    request: &ToDeviceRequest,
) -> Result<()> {
    let identity = as_device(machine);
    let to_device = send_event_to_device::v3::Request::new_raw(
        request.event_type.clone(),
        request.txn_id.clone(),
        request.messages.clone(),
    );
    let response = client.send(to_device, identity).await?;
    machine
        .mark_request_as_sent(&request.txn_id, &response)
        .await
        .map_err(error)
}

/// Sends every request `machine` has waiting (key uploads, queries, to-device messages) as its
/// device, with `client` (the appservice's, or a user's own).
pub async fn send_outgoing(client: &HomeserverClient, machine: &OlmMachine) -> Result<()> {
    for request in machine.outgoing_requests().await.map_err(error)? {
        send(client, machine, request.request_id(), request.request()).await?;
    }
    Ok(())
}
