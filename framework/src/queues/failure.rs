//! What the plugin is told of a request the homeserver refused for good.

use std::sync::Arc;

use crate::Error;

/// A request that failed for good, as told to the plugin.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendFailure {
    /// Who tried to send.
    pub user_id: String,
    /// The room, or `user:<id>` for profile changes.
    pub queue: String,
    /// What kind of request (`message`, `join`, …).
    pub what: &'static str,
    /// Why the homeserver refused it.
    pub error: Error,
}

/// Called with each request the homeserver refused for good and nobody awaited.
pub type SendFailureHook = Arc<dyn Fn(SendFailure) + Send + Sync>;
