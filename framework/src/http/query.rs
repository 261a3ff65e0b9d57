use axum::{extract::State, response::Response};
use ruma::api::appservice::query::{query_room_alias, query_user_id};

use super::{ApiError, Ruma, error::ruma_response};
use crate::Appservice;

/// `GET /_matrix/app/v1/users/{userId}`: does this user exist? Yes only when the plugin says
/// so, and only after the user has been registered.
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1usersuserid>
pub(super) async fn query_user(
    State(app): State<Appservice>,
    Ruma(request): Ruma<query_user_id::v1::Request>,
) -> Result<Response, ApiError> {
    let user_id = request.user_id;
    let Some(query) = app.inner.user_query.clone() else {
        return Err(ApiError::not_found("no such user"));
    };
    if !app.registration().is_user_in_namespace(user_id.as_str())
        || !query(app.clone(), user_id.clone()).await?
    {
        return Err(ApiError::not_found("no such user"));
    }
    app.intent(&user_id).ensure_registered().await?;
    Ok(ruma_response(query_user_id::v1::Response::new()))
}

/// `GET /_matrix/app/v1/rooms/{roomAlias}`: does this alias exist? Yes only once the plugin
/// has created the room.
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#get_matrixappv1roomsroomalias>
pub(super) async fn query_alias(
    State(app): State<Appservice>,
    Ruma(request): Ruma<query_room_alias::v1::Request>,
) -> Result<Response, ApiError> {
    let Some(query) = app.inner.alias_query.clone() else {
        return Err(ApiError::not_found("no such room alias"));
    };
    if !query(app.clone(), request.room_alias).await? {
        return Err(ApiError::not_found("no such room alias"));
    }
    Ok(ruma_response(query_room_alias::v1::Response::new()))
}
