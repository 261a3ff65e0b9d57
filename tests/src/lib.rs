//! Test support for Trestle's integration tests (`tests/tests/*.rs`).
//!
//! [`synapse`] starts real Synapse homeservers and talks to them as ordinary Matrix users.

pub mod synapse;
