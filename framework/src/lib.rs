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
//!
//! # Examples
//!
//! Complete programs in `framework/examples/` (their `README.md` says how to run each against a
//! homeserver), read in this order:
//!
//! - `command_bot.rs`: commands with typed arguments, shared [`State`](router::State), `!help`,
//!   answering with a [`Reply`](router::Reply);
//! - `ghost_bot.rs`: acting as ghost users through [`Intent`]s, and the user query;
//! - `web_and_service.rs`: a web route ([`Router::web`]) and a background task
//!   ([`Router::service`]) that stops when asked;
//! - `custom_event.rs`: reading and sending an event type of your own, typed with ruma's derive;
//! - `bridges/kit/examples/parrot_bridge.rs`: a toy bridge on the bridge kit (`trestle-bridge`).
//!
//! `cargo run -p trestle --example command_bot` runs the first.
//!
//! The core's modules, each importing only those below it: `intent` (and `media`) →
//! `appservice` (with `http`, and `router`, which know each other) → `queues` (receive, lanes,
//! inbox, outbox, writeback around one `Core`; up only through `queues::Upstream`) → `store`
//! (whose `Mode` is the one place SQLite and PostgreSQL differ) → `transaction`, `client`,
//! `metrics`.

mod appservice;
pub mod client;
pub mod encryption;
mod error;
pub mod fetch;
pub mod http;
pub mod intent;
pub mod media;
pub mod metrics;
/// What the outbox tells of a request: its outcome, or its failure for good.
pub mod outbox {
    pub use crate::queues::{Delivery, SendFailure};
}
pub mod plugin;
mod queues;
mod role;
pub mod router;
pub mod runtime;
mod service;
pub mod store;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod thirdparty;
pub mod transaction;

pub use appservice::{
    AliasQuery, Appservice, AppserviceBuilder, SendFailureHook, Standalone, UserQuery,
    WeakAppservice,
};
pub use error::{Error, Result};
pub use intent::Intent;
pub use plugin::Plugin;
pub use queues::DEFAULT_MAX_IN_FLIGHT;
pub use role::Role;
pub use router::Router;
pub use service::Started;
pub use store::Store;
pub use trestle_registration as registration;
pub use trestle_registration::Registration;

/// Re-exported so plugins' web routes use the same axum as the host.
pub use axum;
/// Re-exported so plugins use the same ruma as the framework.
pub use ruma;
