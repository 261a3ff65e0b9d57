//! The notification bot's errors, and how the webhook endpoint answers them.

use trestle::axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// Everything that can go wrong in the notification bot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The framework failed: the homeserver, the store, an identifier.
    #[error(transparent)]
    Trestle(#[from] trestle::Error),
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// JSON could not be read or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A remote server (a feed, a forwarding target) could not be used.
    #[error("{0}")]
    Fetch(String),
    /// A feed could not be read.
    #[error("not a feed I can read: {0}")]
    Feed(String),
    /// A template did not compile or render.
    #[error("template: {0}")]
    Template(String),
    /// A user's request made no sense; the message says why.
    #[error("{0}")]
    Invalid(String),
}

/// Result with the notification bot's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An answer of the webhook endpoint that is not a success: a status and a Matrix-style
/// `errcode`, so callers get the same shape of error as from the homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `M_*` code.
    pub errcode: &'static str,
    /// Words for a human.
    pub error: String,
    /// For `M_LIMIT_EXCEEDED`: when to try again.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            errcode,
            error: error.into(),
            retry_after_ms: None,
        }
    }

    /// The answer to an unknown or removed webhook token.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such webhook")
    }

    /// The answer when the bot itself failed; the cause is logged, not shown.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "webhook could not be handled");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "the message could not be stored; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "errcode": self.errcode, "error": self.error });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        (self.status, Json(body)).into_response()
    }
}
