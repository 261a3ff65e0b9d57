//! `/_matrix/app/v1/thirdparty/…`: lookups in the bridged network, answered by the plugin's
//! [`ThirdPartyLookup`](crate::thirdparty::ThirdPartyLookup). Without one, every lookup is
//! `404 M_NOT_FOUND`, as the spec says for an unknown protocol or no mapping.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#third-party-networks>

use axum::{extract::State, response::Response};
use ruma::api::appservice::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_user_for_protocol,
    get_user_for_user_id,
};

use super::{ApiError, Ruma, error::ruma_response};
use crate::Appservice;

fn lookup(app: &Appservice) -> Result<&dyn crate::thirdparty::ThirdPartyLookup, ApiError> {
    app.inner
        .thirdparty
        .as_deref()
        .ok_or_else(|| ApiError::not_found("no third-party protocols"))
}

async fn known_protocol(app: &Appservice, protocol: &str) -> Result<(), ApiError> {
    match lookup(app)?.protocol(protocol).await {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("unknown protocol")),
    }
}

pub(super) async fn protocol(
    State(app): State<Appservice>,
    Ruma(request): Ruma<get_protocol::v1::Request>,
) -> Result<Response, ApiError> {
    let protocol = lookup(&app)?
        .protocol(&request.protocol)
        .await
        .ok_or_else(|| ApiError::not_found("unknown protocol"))?;
    Ok(ruma_response(get_protocol::v1::Response::new(protocol)))
}

pub(super) async fn users_for_protocol(
    State(app): State<Appservice>,
    Ruma(request): Ruma<get_user_for_protocol::v1::Request>,
) -> Result<Response, ApiError> {
    known_protocol(&app, &request.protocol).await?;
    let users = lookup(&app)?
        .users(&request.protocol, &request.fields)
        .await;
    Ok(ruma_response(get_user_for_protocol::v1::Response::new(
        users,
    )))
}

pub(super) async fn locations_for_protocol(
    State(app): State<Appservice>,
    Ruma(request): Ruma<get_location_for_protocol::v1::Request>,
) -> Result<Response, ApiError> {
    known_protocol(&app, &request.protocol).await?;
    let locations = lookup(&app)?
        .locations(&request.protocol, &request.fields)
        .await;
    Ok(ruma_response(get_location_for_protocol::v1::Response::new(
        locations,
    )))
}

pub(super) async fn users_for_id(
    State(app): State<Appservice>,
    Ruma(request): Ruma<get_user_for_user_id::v1::Request>,
) -> Result<Response, ApiError> {
    let users = lookup(&app)?.users_for_id(&request.userid).await;
    if users.is_empty() {
        return Err(ApiError::not_found("no mapping for that user"));
    }
    Ok(ruma_response(get_user_for_user_id::v1::Response::new(
        users,
    )))
}

pub(super) async fn locations_for_alias(
    State(app): State<Appservice>,
    Ruma(request): Ruma<get_location_for_room_alias::v1::Request>,
) -> Result<Response, ApiError> {
    let locations = lookup(&app)?.locations_for_alias(&request.alias).await;
    if locations.is_empty() {
        return Err(ApiError::not_found("no mapping for that alias"));
    }
    Ok(ruma_response(
        get_location_for_room_alias::v1::Response::new(locations),
    ))
}
