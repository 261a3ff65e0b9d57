//! How a store is opened: its scope on a shared database, and how durable an answer is.

use std::time::Duration;

use serde::Deserialize;

/// What has become of a received transaction when the homeserver is answered, on a SQLite file.
/// `docs/durability.md` says what each survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Durability {
    /// The transaction is written to the inbox journal, in the operating system's cache: it
    /// survives a crash of the process, not a power loss or a crash of the operating system.
    /// Like SQLite's `synchronous = NORMAL`, which the database then uses.
    #[default]
    OsCache,
    /// The journal is synced to disk (`fdatasync`) before the answer, and the database runs
    /// with `synchronous = FULL`: the transaction survives a power loss too. Transactions
    /// received meanwhile share one sync.
    Disk,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::OsCache => "os-cache",
            Durability::Disk => "disk",
        })
    }
}

/// How [`Store::connect_with`](super::Store::connect_with) opens a store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    pub(super) scope: Option<String>,
    pub(super) durability: Durability,
    pub(super) takeover: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            scope: None,
            durability: Durability::default(),
            takeover: super::DEFAULT_TAKEOVER,
        }
    }
}

impl StoreOptions {
    /// Keeps the tables apart from other plugins' on a shared PostgreSQL database, in a schema
    /// `trestle_<scope>` (a plugin's name: letters, digits and `_`). On SQLite, where each
    /// plugin has its own file, it changes nothing.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// How durable an answer to the homeserver is (on a SQLite file; PostgreSQL follows its
    /// server's `synchronous_commit`).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Where processes share a PostgreSQL store, how soon what a process that died owned (its
    /// rooms' queues, its one-process services) is taken over by the others: its leases last
    /// this long unrenewed, and are renewed every third of it. Shorter means a faster takeover
    /// and more renewals; a process that stalls longer than this (a long pause of its machine)
    /// loses its work to another. Default 15 s ([`DEFAULT_TAKEOVER`](super::DEFAULT_TAKEOVER)); at least a second.
    /// On SQLite, one process owns the store and this changes nothing.
    pub fn takeover(mut self, takeover: Duration) -> Self {
        self.takeover = takeover;
        self
    }
}
