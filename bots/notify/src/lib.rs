//! Notifications: webhooks in and out, RSS and Atom feeds (work in progress).
