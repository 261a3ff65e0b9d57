//! What the end-to-end tests share: a real Prosody and an XMPP client written on the xmpp-rs
//! crates (not on the bridge's code). Each test file takes what it uses.

#![allow(dead_code)]

pub mod client;
pub mod gate;
pub mod prosody;
pub mod room;
