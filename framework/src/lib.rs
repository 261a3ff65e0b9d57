//! Trestle: a framework for Matrix application services.
//!
//! An application service is an HTTP service the homeserver pushes events to, and that acts on
//! the homeserver as many users at once. Trestle gives it:
//!
//! - the whole [Application Service API](https://spec.matrix.org/v1.16/application-service-api/)
//!   ([`http`]), with transactions answered fast and handled in order per room;
//! - a [`Router`] of handler functions with extractors, in the style of axum;
//! - [`Intent`]s that act as the bot or as ghost users;
//! - a durable [`Store`] (SQLite).
//!
//! See `ARCHITECTURE.md` in the repository for the path of one event through these parts.

mod appservice;
pub mod client;
pub mod encryption;
mod error;
pub mod fetch;
pub mod http;
mod inbox;
pub mod intent;
mod lanes;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod router;
mod service;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod thirdparty;
pub mod transaction;
mod writeback;

pub use appservice::{
    AliasQuery, Appservice, AppserviceBuilder, SendFailureHook, Standalone, UserQuery,
    WeakAppservice,
};
pub use error::{Error, Result};
pub use intent::Intent;
pub use plugin::Plugin;
pub use router::Router;
pub use service::Started;
pub use store::Store;
pub use trestle_registration as registration;
pub use trestle_registration::Registration;

/// Re-exported so plugins' web routes use the same axum as the host.
pub use axum;
/// Re-exported so plugins use the same ruma as the framework.
pub use ruma;
