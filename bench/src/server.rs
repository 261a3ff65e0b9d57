//! What a run cost the PostgreSQL server the processes share: its CPU time, and the commits
//! and write-ahead log it wrote. The scale-out model of `docs/scaling.md` needs these apart
//! from the appservice's own CPU, since processes on more machines add the one and not the
//! other.
//!
//! The CPU is read from `/proc`, so only for a server on this machine: the postmaster (the
//! parent of the backend that answers here) and every backend it has now, plus what the
//! backends that ended used (the postmaster's `cutime` and `cstime`, as it reaps them). The
//! counters come from the server's statistics, which a backend publishes when it ends or goes
//! idle for a while: read them after the processes stopped.

use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};

use crate::{stat_fields, ticks};

/// The server's counters at one moment; subtract two for a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerUse {
    /// CPU time of the server's processes, when it runs on this machine.
    pub cpu: Option<Duration>,
    /// Transactions committed in the database.
    pub commits: i64,
    /// Write-ahead log records, in the whole server.
    pub wal_records: i64,
    /// Write-ahead log bytes, in the whole server.
    pub wal_bytes: i64,
}

impl ServerUse {
    /// Reads the counters of the server behind `database` (a `postgres://` URL).
    pub async fn read(database: &str) -> Result<ServerUse, String> {
        let mut conn = PgConnection::connect(database)
            .await
            .map_err(|e| format!("connecting to {database}: {e}"))?;
        // The statistics a backend has not published yet stay out of the view; ask for a
        // fresh snapshot of what has been.
        let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut conn)
            .await;
        let row = sqlx::query(
            "SELECT pg_backend_pid(), \
                    (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
                    wal_records, wal_bytes::bigint \
             FROM pg_stat_wal",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("reading the server's statistics: {e}"))?;
        let backend: i32 = row.get(0);
        let read = ServerUse {
            cpu: u32::try_from(backend).ok().and_then(server_cpu),
            commits: row.get(1),
            wal_records: row.get(2),
            wal_bytes: row.get(3),
        };
        let _ = conn.close().await;
        Ok(read)
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &ServerUse) -> ServerUse {
        ServerUse {
            cpu: self
                .cpu
                .zip(before.cpu)
                .map(|(after, before)| after.saturating_sub(before)),
            commits: self.commits - before.commits,
            wal_records: self.wal_records - before.wal_records,
            wal_bytes: self.wal_bytes - before.wal_bytes,
        }
    }
}

/// The CPU time of the server whose backend `backend` is: its postmaster, the postmaster's
/// live children and its reaped ones.
fn server_cpu(backend: u32) -> Option<Duration> {
    let postmaster = u32::try_from(*stat_fields(backend)?.first()?).ok()?;
    let own = stat_fields(postmaster)?;
    let mut total = ticks(own.get(10)? + own.get(11)? + own.get(12)? + own.get(13)?);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        if fields.first() == Some(&u64::from(postmaster)) {
            total += ticks(fields.get(10).unwrap_or(&0) + fields.get(11).unwrap_or(&0));
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_parent_and_times_are_read() {
        let me = stat_fields(std::process::id()).unwrap();
        assert_eq!(me[0], u64::from(std::os::unix::process::parent_id()));
        assert!(stat_fields(u32::MAX).is_none());
    }

    #[tokio::test]
    async fn a_commit_and_its_server_cpu_are_counted() {
        let database = trestle_postgres_harness::fresh_database().await;
        let before = ServerUse::read(&database).await.unwrap();
        let mut conn = PgConnection::connect(&database).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE counted (n int); INSERT INTO counted SELECT generate_series(1, 200000)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        // The ended backend's statistics and CPU reach the server's totals once it is reaped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let run = ServerUse::read(&database).await.unwrap().since(&before);
        assert!(run.commits >= 1, "{run:?}");
        assert!(
            run.wal_records >= 200_000 && run.wal_bytes > 1_000_000,
            "{run:?}"
        );
        assert!(run.cpu.is_some_and(|cpu| cpu > Duration::ZERO), "{run:?}");
    }

    #[test]
    fn a_run_is_the_difference_of_two_readings() {
        let before = ServerUse {
            cpu: Some(Duration::from_millis(100)),
            commits: 10,
            wal_records: 100,
            wal_bytes: 1000,
        };
        let after = ServerUse {
            cpu: Some(Duration::from_millis(350)),
            commits: 25,
            wal_records: 160,
            wal_bytes: 5000,
        };
        let run = after.since(&before);
        assert_eq!(run.cpu, Some(Duration::from_millis(250)));
        assert_eq!(
            (run.commits, run.wal_records, run.wal_bytes),
            (15, 60, 4000)
        );
        assert_eq!(after.since(&ServerUse::default()).cpu, None);
    }
}
