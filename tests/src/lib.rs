//! Test support for Trestle's integration tests (`tests/tests/*.rs`).
//!
//! [`synapse`] starts real Synapse homeservers and talks to them as ordinary Matrix users;
//! [`cas`] and [`oauth`] are single sign-on providers for them.

// Test support only: a failed unwrap here is the test that called it failing.
#![allow(clippy::unwrap_used)]

pub mod appservice;
pub mod bridge_checks;
pub mod cas;
pub mod loopback;
pub mod oauth;
/// A throwaway PostgreSQL server (a crate of its own, so that the framework's store tests use it too).
pub use trestle_postgres_harness as postgres;
pub mod synapse;
pub mod toy_network;
pub mod txn_proxy;

/// The README's example plugin, compiled by the test suite so it cannot rot.
#[doc = include_str!("../../README.md")]
mod readme {}
