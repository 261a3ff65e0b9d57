//! What can go wrong between the kit and a network.

/// An error of the bridge kit or of a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The network does not have this capability (edits, reactions, …); the default answer
    /// of every optional [`super::Network`] method. Not an error worth logging loudly.
    #[error("the network does not support {0}")]
    Unsupported(&'static str),
    /// The Matrix user has no login that can do this.
    #[error("not logged in")]
    NotLoggedIn,
    /// No portal for this chat or room.
    #[error("no portal for {0}")]
    NoPortal(String),
    /// The request is wrong (a missing login field, a bad id); the message is shown to the
    /// user as it is.
    #[error("{0}")]
    BadRequest(String),
    /// The user may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The remote network failed or refused; the message is shown to the user.
    #[error("{0}")]
    Remote(String),
    /// The remote network could not take it now (its connection is down) but may later: a
    /// message sent again may go through, or the network may still deliver it when it is back
    /// (the message, shown to the user, says which). Reported as `FAIL_RETRIABLE`.
    #[error("{0}")]
    Retriable(String),
    /// The homeserver or the store failed.
    #[error(transparent)]
    Trestle(#[from] trestle::Error),
}

impl From<sqlx::Error> for BridgeError {
    fn from(e: sqlx::Error) -> Self {
        BridgeError::Trestle(e.into())
    }
}

impl From<serde_json::Error> for BridgeError {
    fn from(e: serde_json::Error) -> Self {
        BridgeError::Trestle(e.into())
    }
}

impl From<ruma::IdParseError> for BridgeError {
    fn from(e: ruma::IdParseError) -> Self {
        BridgeError::Trestle(e.into())
    }
}

impl From<BridgeError> for trestle::Error {
    fn from(e: BridgeError) -> Self {
        match e {
            BridgeError::Trestle(e) => e,
            other => trestle::Error::Other(other.to_string()),
        }
    }
}
