use ruma::api::error::{ErrorKind, FromHttpResponseError, IntoHttpError};

/// Everything that can go wrong in Trestle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The homeserver answered with a Matrix error (`errcode` and message).
    #[error("homeserver refused: {0}")]
    Matrix(Box<ruma::api::error::Error>),
    /// The homeserver could not be reached, or the connection broke.
    #[error("could not reach the homeserver: {0}")]
    Http(#[from] reqwest::Error),
    /// A request could not be built (a bug, or an invalid argument).
    #[error("could not build the request: {0}")]
    IntoHttp(#[from] IntoHttpError),
    /// The homeserver's answer was not what the spec says.
    #[error("unexpected answer from the homeserver: {0}")]
    Deserialization(#[from] ruma::api::error::DeserializationError),
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// The database schema could not be brought up to date.
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The registration file is unreadable or invalid.
    #[error(transparent)]
    Registration(#[from] trestle_registration::Error),
    /// A Matrix identifier did not parse.
    #[error("invalid identifier: {0}")]
    Id(#[from] ruma::IdParseError),
    /// JSON could not be read or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A file or socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A URL could not, or may not, be fetched: see [`crate::fetch`]. The message says why.
    #[error("{0}")]
    Fetch(String),
    /// The configuration is unreadable or invalid; the message names the file, line and field.
    #[error("{0}")]
    Config(String),
    /// Anything else, in words.
    #[error("{0}")]
    Other(String),
}

/// Result with Trestle's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ruma::api::error::Error> for Error {
    fn from(e: ruma::api::error::Error) -> Self {
        Error::Matrix(Box::new(e))
    }
}

impl From<FromHttpResponseError<ruma::api::error::Error>> for Error {
    fn from(e: FromHttpResponseError<ruma::api::error::Error>) -> Self {
        match e {
            FromHttpResponseError::Deserialization(d) => Error::Deserialization(d),
            FromHttpResponseError::Server(s) => s.into(),
            other => Error::Other(other.to_string()),
        }
    }
}

impl From<FromHttpResponseError<ruma::api::client::uiaa::UiaaResponse>> for Error {
    fn from(e: FromHttpResponseError<ruma::api::client::uiaa::UiaaResponse>) -> Self {
        use ruma::api::client::uiaa::UiaaResponse;
        match e {
            FromHttpResponseError::Deserialization(d) => Error::Deserialization(d),
            FromHttpResponseError::Server(UiaaResponse::MatrixError(e)) => e.into(),
            // An appservice registers with its token; a homeserver asking for interactive
            // auth means the registration was not loaded.
            FromHttpResponseError::Server(UiaaResponse::AuthResponse(_)) => Error::Other(
                "the homeserver asked for interactive auth: is the registration loaded?".into(),
            ),
            other => Error::Other(other.to_string()),
        }
    }
}

impl Error {
    /// The Matrix error kind, if the homeserver sent one.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::Matrix(e) => e.error_kind(),
            _ => None,
        }
    }

    /// The HTTP status of a homeserver error.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Error::Matrix(e) => Some(e.status_code),
            _ => None,
        }
    }

    /// Whether this is the homeserver's `M_FORBIDDEN`.
    pub fn is_forbidden(&self) -> bool {
        matches!(self.kind(), Some(ErrorKind::Forbidden))
    }
}
