//! Durable state: the inbox and outbox, transaction ids, ghosts, memberships.
//!
//! One store serves SQLite (the embedded default, `sqlite://path`) and PostgreSQL
//! (`postgres://…`, for scale and for several processes sharing one database). Queries are
//! runtime queries through sqlx's `Any` driver, written once with `$n` placeholders, which both
//! dialects read; each dialect has its own migrations, run at connect.

mod cluster;
mod conn;
mod handoff;
mod inbox;
mod journal;
mod leases;
mod migrate;
mod mode;
mod notices;
mod options;
mod outbox;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod tests;
mod users;
mod writeback;

use std::time::Duration;

use sqlx::{AnyPool, Executor, any::AnyPoolOptions};

pub use cluster::{Cluster, LeaseInfo, ProcessInfo};
pub use handoff::{Handed, Handoff, Wakes};
pub use inbox::{InboxItem, NewInboxItem};
pub(crate) use inbox::{TxnName, digest};
pub(crate) use journal::Parsed;
pub(crate) use journal::SETTLE_AFTER;
pub(crate) use journal::record_items;
pub use leases::DEFAULT_TAKEOVER;
pub(crate) use leases::LeaseTimes;
pub use migrate::Migration;
pub(crate) use mode::Mode;
pub(crate) use notices::Notice;
pub use options::{Durability, StoreOptions};
pub use outbox::{OutboxItem, OutboxState};
pub use users::{GhostRecord, Membership};
pub(crate) use writeback::Write;

use crate::{Error, Result};

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite: one process per database file.
    Sqlite,
    /// PostgreSQL: any number of processes.
    Postgres,
}

/// The store behind an appservice.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// On a SQLite file, the framework's own connection, kept out of the pool (see `conn.rs`).
    held: Option<std::sync::Arc<tokio::sync::Mutex<conn::Held>>>,
    /// Beside a SQLite file, where received transactions are stored before they are answered
    /// (see `journal.rs`).
    journal: Option<std::sync::Arc<journal::Journal>>,
    durability: Durability,
    leases: LeaseTimes,
    /// On PostgreSQL, word between the processes that share the database (see `notices.rs`).
    notices: Option<std::sync::Arc<notices::Notices>>,
    /// Leases this store's holders took from another owner whose lease ran out: processes
    /// that died (or stalled) and were taken over.
    takeovers: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Done marks of several workers gathered into one statement (see `inbox/grouped.rs`).
    marks: std::sync::Arc<inbox::GroupedMarks>,
}

/// What waits in a queue (the inbox or the outbox): how much, and since when. `/metrics` shows
/// both, since a queue that is short but old is stuck, and one that is long but young is busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// How many items wait.
    pub depth: i64,
    /// When the oldest of them came, in milliseconds since the Unix epoch ([`now_ms`]).
    pub oldest_ms: Option<i64>,
}

impl Backlog {
    /// Reads a `COUNT(*), MIN(<timestamp>)` row.
    fn from_row(row: &sqlx::any::AnyRow) -> Backlog {
        use sqlx::Row;
        Backlog {
            depth: row.get(0),
            oldest_ms: row.get(1),
        }
    }

    /// How long the oldest item has waited, at `now_ms`; zero when nothing waits.
    pub fn oldest_age(&self, now_ms: i64) -> std::time::Duration {
        let waited = self
            .oldest_ms
            .map_or(0, |oldest| now_ms.saturating_sub(oldest));
        std::time::Duration::from_millis(u64::try_from(waited).unwrap_or(0))
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp column. Public so that the
/// tables of plugins and the bridge kit, migrated through [`Store::migrate`], keep the same unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Milliseconds since the Unix epoch (the store's unit, [`now_ms`]) as an RFC 3339 UTC
/// timestamp, `2026-12-06T18:55:20Z`: for feeds, logs and pages that show a stored time.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl Store {
    /// Opens the database at `url`, creating a SQLite file if needed, and brings its schema up
    /// to date. `sqlite://path/to/file.db`, `sqlite::memory:` (private, for tests), or
    /// `postgres://user:password@host/database`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// As [`Store::connect`], with `options`: a scope for a shared database, the durability of
    /// an answer.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self> {
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let schema = match options.scope {
            Some(scope) if postgres => {
                if scope.is_empty() || !scope.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(Error::Other(format!(
                        "store scope `{scope}`: use letters, digits and _"
                    )));
                }
                Some(format!("trestle_{}", scope.to_ascii_lowercase()))
            }
            _ => None,
        };
        let mut store = Self::connect_inner(url, schema.clone(), options.durability).await?;
        store.leases = LeaseTimes::from_takeover(options.takeover);
        if store.backend == Backend::Postgres {
            store.notices = Some(notices::Notices::new(url, schema.as_deref()));
        }
        Ok(store)
    }

    async fn connect_inner(
        url: &str,
        schema: Option<String>,
        durability: Durability,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let url = if rest.contains(":memory:") || rest.contains("mode=") {
                url.to_owned()
            } else if rest.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(Error::Other(format!(
                "database URL `{url}`: expected sqlite://PATH or postgres://…"
            )));
        };
        let options = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    // One connection. An in-memory database exists once per connection; and for
                    // a file, SQLite throws away a connection's whole page cache whenever another
                    // connection wrote, which with several made every statement re-read its pages
                    // through the WAL (a third of the work in a profile). Writes take turns
                    // anyway. So: never hold a transaction open across another store call. (On a
                    // file the framework takes this first connection for itself, and the pool
                    // opens one more for plugins: see `conn.rs`.)
                    .max_connections(1)
                    // A local file does not hang up; the ping would be one more trip to the
                    // connection's thread before every statement.
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            // WAL lets readers proceed while one writer commits; NORMAL sync
                            // survives a process crash, which is what an acknowledgement promises
                            // by default; FULL syncs the WAL at every commit, for `Disk`.
                            // Checkpoints every 1,000 pages, SQLite's default, spelt out: the
                            // WAL then stays near 4 MB and its pages are written over again.
                            // At 20,000 (taken when four connections kept checkpoints from
                            // completing) it grew to 80 MB, and every frame went to a page the
                            // process had not touched yet: a tenth of the echo benchmark's CPU
                            // was the kernel zeroing those pages (`docs/benchmarks.md`, "Session
                            // 36").
                            conn.execute(match durability {
                                Durability::OsCache => {
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA busy_timeout = 10000; \
                                     PRAGMA wal_autocheckpoint = 1000;"
                                }
                                Durability::Disk => {
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                     PRAGMA busy_timeout = 10000; \
                                     PRAGMA wal_autocheckpoint = 1000;"
                                }
                            })
                            .await?;
                            Ok(())
                        })
                    })
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(16).after_connect(move |conn, _| {
                let schema = schema.clone();
                Box::pin(async move {
                    if let Some(schema) = schema {
                        // The name was checked to be [a-z0-9_]: safe to splice.
                        let sql = format!(
                            "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\""
                        );
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                    }
                    Ok(())
                })
            }),
        };
        let pool = options
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        // An in-memory database exists once per connection: there, everything shares the
        // pool's one connection.
        let (held, journal) = if backend == Backend::Sqlite
            && !url.contains(":memory:")
            && !url.contains("mode=memory")
        {
            let conn = pool.acquire().await?.detach();
            let (held, journal) = journal::open_beside(conn, durability).await?;
            (
                Some(std::sync::Arc::new(held)),
                Some(std::sync::Arc::new(journal)),
            )
        } else {
            (None, None)
        };
        Ok(Store {
            pool,
            backend,
            held,
            journal,
            durability,
            leases: LeaseTimes::from_takeover(DEFAULT_TAKEOVER),
            notices: None,
            takeovers: Default::default(),
            marks: Default::default(),
        })
    }

    /// As [`Store::connect`], with the tables of `scope` (a plugin's name) kept apart from
    /// other plugins' on a shared database: on PostgreSQL in a schema `trestle_<scope>`; on
    /// SQLite, where each plugin has its own file, `scope` changes nothing.
    pub async fn connect_scoped(url: &str, scope: &str) -> Result<Self> {
        Self::connect_with(url, StoreOptions::default().scope(scope)).await
    }

    /// A private in-memory SQLite store, for tests and benchmarks.
    pub async fn in_memory() -> Result<Self> {
        Self::connect("sqlite::memory:").await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How durable an answer to the homeserver is (see [`StoreOptions::durability`]).
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Begins a transaction on the pool that may write: on SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`). A plain `BEGIN` that reads first and writes later fails at
    /// its first write with `SQLITE_BUSY`, without waiting, when the framework's connection
    /// committed in between (its commits run beside the handlers: the inbox journal, the
    /// writeback). Use this instead of `pool().begin()` for a transaction that writes.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// The connection pool, for plugins that keep tables of their own. On SQLite it has a single
    /// connection, and SQLite lets one connection write at a time: finish a transaction before
    /// making any other store call (a send through an intent included), or the call waits for
    /// the transaction (the framework's own statements, on a connection of their own, up to
    /// 10 s; others on the pool's connection up to 30 s). Begin a transaction that writes with
    /// [`Store::begin`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Deletes handled inbox items received more than `keep_items` ago, outbox items finished
    /// more than `keep_items` ago, and transaction ids received more than `keep_txn_ids` ago.
    /// Returns how many rows went. (An inbox item keeps no time it was handled: migration
    /// 0009.)
    ///
    /// Transaction ids should be kept longer than Synapse may take to resend a transaction
    /// whose answer it never got — which, across a homeserver restart, can be days.
    pub(crate) async fn prune(&self, keep_items: Duration, keep_txn_ids: Duration) -> Result<u64> {
        // An item of a kept journal batch has no waiting row yet to keep it.
        self.settle_journal().await?;
        let items_before = now_ms() - keep_items.as_millis() as i64;
        let txns_before = now_ms() - keep_txn_ids.as_millis() as i64;
        // SQLite keeps no index on the times (see migration 0003): inbox rows go in the order
        // they arrive, so the oldest are found by walking from the first row to the first
        // recent one. The newest inbox row always stays, which keeps seqs from being handed out
        // again. Transactions are kept by name alone (migration 0005), so they are read through.
        macro_rules! handled_before {
            () => {
                "DELETE FROM inbox WHERE received_at < $1
                 AND NOT EXISTS (SELECT 1 FROM inbox_pending AS p WHERE p.seq = inbox.seq)"
            };
        }
        let inbox = match self.backend {
            Backend::Sqlite => concat!(
                handled_before!(),
                " AND seq < COALESCE(
                     (SELECT seq FROM inbox WHERE received_at >= $1 ORDER BY seq LIMIT 1),
                     (SELECT MAX(seq) FROM inbox))"
            ),
            Backend::Postgres => handled_before!(),
        };
        let transactions = "DELETE FROM transactions WHERE received_at < $1";
        let statements = [
            (inbox, items_before),
            (
                "DELETE FROM outbox WHERE state <> 'pending' AND finished_at < $1",
                items_before,
            ),
            (transactions, txns_before),
        ];
        let mut removed = 0;
        for (sql, before) in statements {
            removed += sqlx::query(sql)
                .bind(before)
                .execute(&mut *self.conn().await?)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}
