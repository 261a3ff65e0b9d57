//! What one process of several sharing a PostgreSQL store does: [`Role`].

use serde::Deserialize;

/// What a process does where several share one PostgreSQL store (`docs/scaling.md`): take
/// the homeserver's transactions and run the handlers, run the plugins' services (pollers,
/// network connections), or both. Any number of processes of each role may share a store;
/// rooms and singleton services are held by leases either way. On SQLite one process does
/// everything: only [`Role::All`] is allowed there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Both of the others: the default, and the only role on SQLite.
    #[default]
    All,
    /// Receives transactions and runs the handlers; runs no services.
    Matrix,
    /// Runs the services, singletons included, and sends what they ask; takes no transactions
    /// (one pushed to it is refused with an error that says so) and runs no handlers.
    Connections,
}

impl Role {
    /// Whether this process takes transactions and runs the handlers.
    pub fn handles_events(self) -> bool {
        self != Role::Connections
    }

    /// Whether this process runs the router's services.
    pub fn runs_services(self) -> bool {
        self != Role::Matrix
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Matrix => "matrix",
            Role::Connections => "connections",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Role::All),
            "matrix" => Ok(Role::Matrix),
            "connections" => Ok(Role::Connections),
            _ => Err(format!(
                "unknown role `{s}`; expected all, matrix or connections"
            )),
        }
    }
}
