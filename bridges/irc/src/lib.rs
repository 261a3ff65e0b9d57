//! The IRC bridge (work in progress).
