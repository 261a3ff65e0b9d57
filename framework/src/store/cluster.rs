//! What the processes sharing a PostgreSQL store tell of themselves: who runs, in which role,
//! since when, and what each holds (`trestle status`, `/metrics`, `docs/scaling.md`).

use sqlx::Row;

use super::{Backend, Store, now_ms};
use crate::Result;

/// One process of those sharing a store, as its last heartbeat wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// What its leases name ([`LeaseInfo::owner`]).
    pub owner: String,
    /// Its [`Role`](crate::Role), as written.
    pub role: String,
    /// The machine it runs on, and its process id there.
    pub host: String,
    /// Its process id on `host`.
    pub pid: i64,
    /// When it started, in ms since the epoch.
    pub started_at: i64,
    /// When it last said it was alive, in ms since the epoch: older than the takeover time
    /// means it died without stopping.
    pub heartbeat_at: i64,
}

/// One lease: a room's queue (`in:` or `out:` scopes) or a singleton service (`service:`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// What kind of lease, and whose: `in:<appservice>`, `out:<appservice>`,
    /// `service:<appservice>`.
    pub scope: String,
    /// The room (or the service's name).
    pub key: String,
    /// The process holding it ([`ProcessInfo::owner`]).
    pub owner: String,
    /// When it runs out unless renewed, in ms since the epoch.
    pub expires_at: i64,
}

/// The processes sharing a store and the leases they hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cluster {
    /// The processes that said they run (oldest first).
    pub processes: Vec<ProcessInfo>,
    /// Every lease, held or run out and not yet taken.
    pub leases: Vec<LeaseInfo>,
}

/// A process read from `SELECT owner, role, host, pid, started_at, heartbeat_at`.
fn process_info(row: &sqlx::any::AnyRow) -> ProcessInfo {
    ProcessInfo {
        owner: row.get(0),
        role: row.get(1),
        host: row.get(2),
        pid: row.get(3),
        started_at: row.get(4),
        heartbeat_at: row.get(5),
    }
}

impl Store {
    /// Records that the process `owner` of `appservice_id` is alive, in `role`.
    pub(crate) async fn heartbeat(
        &self,
        appservice_id: &str,
        owner: &str,
        role: &str,
        started_at: i64,
        encryption: bool,
    ) -> Result<()> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "?".to_owned());
        sqlx::query(
            "INSERT INTO processes
                 (appservice_id, owner, role, host, pid, started_at, heartbeat_at, encryption)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (appservice_id, owner) DO UPDATE
             SET role = excluded.role, heartbeat_at = excluded.heartbeat_at,
                 encryption = excluded.encryption",
        )
        .bind(appservice_id)
        .bind(owner)
        .bind(role)
        .bind(host)
        .bind(i64::from(std::process::id()))
        .bind(started_at)
        .bind(now_ms())
        .bind(encryption)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A process of `appservice_id` other than `owner` that runs end-to-end encryption and
    /// said it was alive within the lease's life, if there is one.
    pub(crate) async fn live_encrypted_process(
        &self,
        appservice_id: &str,
        owner: &str,
    ) -> Result<Option<ProcessInfo>> {
        let row = sqlx::query(
            "SELECT owner, role, host, pid, started_at, heartbeat_at FROM processes
             WHERE appservice_id = $1 AND owner <> $2 AND encryption AND heartbeat_at >= $3
             ORDER BY started_at LIMIT 1",
        )
        .bind(appservice_id)
        .bind(owner)
        .bind(now_ms() - self.leases.ttl.as_millis() as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(process_info))
    }

    /// How many leases `owner` holds now.
    pub(crate) async fn leases_held(&self, owner: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM queue_leases WHERE owner = $1 AND expires_at >= $2")
                .bind(owner)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }

    /// Removes the record of `owner`, a process that stops cleanly, and of processes of
    /// `appservice_id` silent for a day (killed long ago).
    pub(crate) async fn forget_process(&self, appservice_id: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM processes WHERE appservice_id = $1 AND (owner = $2 OR heartbeat_at < $3)",
        )
        .bind(appservice_id)
        .bind(owner)
        .bind(now_ms() - 24 * 3600 * 1000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The processes of `appservice_id` sharing this store, and the leases in it. Empty on
    /// SQLite, where one process owns the store and takes no leases.
    pub async fn cluster(&self, appservice_id: &str) -> Result<Cluster> {
        if self.backend == Backend::Sqlite {
            return Ok(Cluster::default());
        }
        let processes = sqlx::query(
            "SELECT owner, role, host, pid, started_at, heartbeat_at FROM processes
             WHERE appservice_id = $1 ORDER BY started_at, owner",
        )
        .bind(appservice_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(process_info)
        .collect();
        let suffix = format!(":{appservice_id}");
        let leases = sqlx::query(
            "SELECT appservice_id, queue_key, owner, expires_at FROM queue_leases
             ORDER BY appservice_id, queue_key",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| LeaseInfo {
            scope: row.get(0),
            key: row.get(1),
            owner: row.get(2),
            expires_at: row.get(3),
        })
        .filter(|lease| lease.scope.ends_with(&suffix))
        .collect();
        Ok(Cluster { processes, leases })
    }
}
