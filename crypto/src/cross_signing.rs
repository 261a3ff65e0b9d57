//! Cross-signing for each user that sends (the bot and every ghost with a device): a master,
//! self-signing and user-signing key, the device signed by the self-signing key, so that clients
//! which show or decrypt only cross-signed devices (MSC4153) accept the user's messages.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#cross-signing>. The first upload needs
//! no interactive auth (MSC3967, spec v1.11). The private keys stay in the user's crypto store.
//!
//! A store that is lost (a new device, without the private keys) gets a new identity that
//! replaces the old one: Synapse (1.163) asks for interactive auth to replace cross-signing keys
//! except from an appservice asserting the user's identity (MSC4190), which is how these
//! requests are sent.

use matrix_sdk_crypto::{CrossSigningBootstrapRequests, OlmMachine};
use trestle::{
    Result,
    client::HomeserverClient,
    ruma::api::{AppserviceUserIdentity, client::keys::upload_signing_keys},
};

use crate::requests::{self, error};

/// Key of the crypto store's custom value saying the identity is on the homeserver.
const UPLOADED: &str = "trestle.cross_signing_uploaded";

/// Makes sure `machine`'s user has a cross-signing identity on the homeserver that signs its
/// device: created and uploaded the first time, nothing to do afterwards. Keys created but not
/// uploaded (the upload failed) are uploaded again rather than replaced. `client` is the
/// appservice's (identity assertion as the machine's user) or the user's own.
pub async fn cross_sign(client: &HomeserverClient, machine: &OlmMachine) -> Result<()> {
    let store = machine.store();
    if store
        .get_custom_value(UPLOADED)
        .await
        .map_err(error)?
        .is_some()
    {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let CrossSigningBootstrapRequests {
        upload_keys_req,
        upload_signing_keys_req,
        upload_signatures_req,
    } = machine
        .bootstrap_cross_signing(false)
        .await
        .map_err(error)?;
    // The device's keys go first: the signature is over them.
    if let Some(request) = upload_keys_req {
        requests::send(client, machine, request.request_id(), request.request()).await?;
    }
    let mut keys = upload_signing_keys::v3::Request::new();
    keys.master_key = upload_signing_keys_req.master_key.map(|k| k.to_raw());
    keys.self_signing_key = upload_signing_keys_req.self_signing_key.map(|k| k.to_raw());
    keys.user_signing_key = upload_signing_keys_req.user_signing_key.map(|k| k.to_raw());
    let user = machine.user_id();
    client.send(keys, AppserviceUserIdentity::new(user)).await?;
    let signed = client
        .send(upload_signatures_req, AppserviceUserIdentity::new(user))
        .await?;
    if !signed.failures.is_empty() {
        return Err(error(format!(
            "the homeserver refused the device's signature: {:?}",
            signed.failures
        )));
    }
    store
        .set_custom_value(UPLOADED, vec![1])
        .await
        .map_err(error)?;
    tracing::info!(%user, elapsed_ms = started.elapsed().as_millis(),
        "cross-signing keys uploaded");
    Ok(())
}
