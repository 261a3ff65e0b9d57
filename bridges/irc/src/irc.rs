//! The IRC protocol, independent of Matrix: messages, formatting, line splitting, names, and a
//! client connection that survives network trouble.

pub mod connection;
pub mod format;
pub mod message;
pub mod naming;
pub mod split;
