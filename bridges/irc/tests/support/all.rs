//! What the end-to-end tests share: a real ngircd, a plain IRC client, the test network's
//! settings. Each test file takes what it uses.

#![allow(dead_code)]

pub mod matrix;
pub mod network;
pub mod ngircd;
pub mod raw;
