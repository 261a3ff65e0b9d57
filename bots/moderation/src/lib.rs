//! A moderation bot: policy lists, protections and commands (work in progress).
