//! A Twitter-like timeline whose data lives in Matrix rooms (work in progress).
