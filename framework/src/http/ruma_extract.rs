use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use http::{StatusCode, request::Parts};
use ruma::api::{IncomingRequest, error::FromHttpRequestError};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::Appservice;

/// A ruma request type as an axum extractor: the body is buffered (within the appservice's
/// limit) and parsed with the path parameters, the way ruma's own servers do it.
pub struct Ruma<T>(pub T);

impl<T: IncomingRequest> FromRequest<Appservice> for Ruma<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Appservice) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let params =
            <RawPathParams as axum::extract::FromRequestParts<Appservice>>::from_request_parts(
                &mut parts, app,
            )
            .await
            .map_err(|e| path_error(e.status(), e.body_text()))?;
        let args: Vec<String> = params.iter().map(|(_, v)| v.to_owned()).collect();
        let bytes = read_body(body, app.inner.body_limit).await?;
        let request = http::Request::from_parts(parts, bytes);
        T::try_from_http_request(request, &args)
            .map(Ruma)
            .map_err(|e| match e {
                FromHttpRequestError::Deserialization(e) => ApiError::invalid_param(e.to_string()),
                other => ApiError::bad_json(other.to_string()),
            })
    }
}

/// Path parameters, like axum's `Path`, refused the way the Matrix spec wants: a parameter that
/// does not decode (`%FF` is no UTF-8) or does not parse is `400 M_INVALID_PARAM` as JSON,
/// where axum would answer in plain text.
pub(super) struct MatrixPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for MatrixPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| MatrixPath(value))
            .map_err(|e| path_error(e.status(), e.body_text()))
    }
}

/// axum's path rejections as Matrix errors: the client's mistakes are `M_INVALID_PARAM`; the
/// rest (a route without the parameters its handler wants) is our bug.
fn path_error(status: StatusCode, text: String) -> ApiError {
    if status.is_client_error() {
        ApiError::invalid_param(text)
    } else {
        ApiError::internal(text)
    }
}

/// Reads a body up to `limit` bytes, answering `413 M_TOO_LARGE` past it.
pub(super) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}
