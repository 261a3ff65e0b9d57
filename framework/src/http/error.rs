use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    error::{ErrorBody, ErrorKind, StandardErrorBody},
};

/// An error answer of the Application Service API: a status and a Matrix `errcode`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
}

impl ApiError {
    /// An error with the given status, kind and message.
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// `401 M_UNAUTHORIZED`: no credentials were sent.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "missing hs_token",
        )
    }

    /// `403 M_FORBIDDEN`: the credentials were wrong.
    pub fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    /// `404 M_UNRECOGNIZED`: no such endpoint.
    pub fn unrecognized(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::Unrecognized, message)
    }

    /// `405 M_UNRECOGNIZED`: the endpoint exists with another method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Unrecognized,
            "method not allowed",
        )
    }

    /// `404 M_NOT_FOUND`.
    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    /// `400 M_NOT_JSON`.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message)
    }

    /// `400 M_BAD_JSON`.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    /// `400 M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    /// `413 M_TOO_LARGE`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("request body over {limit} bytes"),
        )
    }

    /// `500 M_UNKNOWN`. The cause is logged here and not sent: it may name internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error answering the homeserver");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unknown,
            "internal error",
        )
    }
}

impl From<crate::Error> for ApiError {
    fn from(error: crate::Error) -> Self {
        ApiError::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::Standard(StandardErrorBody::new(self.kind, self.message));
        match ruma::api::error::Error::new(self.status, body).try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from).into_response(),
            Err(_) => self.status.into_response(),
        }
    }
}

/// Turns a ruma response into an axum one.
pub(crate) fn ruma_response(response: impl OutgoingResponse) -> Response {
    match response.try_into_http_response::<Vec<u8>>() {
        Ok(response) => response.map(axum::body::Body::from).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
