//! The receive commit on the calling thread.
//!
//! Every statement through sqlx is a trip to its connection's thread and back. The receive
//! commit is the one statement the homeserver waits for: the transaction is answered only
//! after it. At one event per transaction that trip was most of what Trestle cost: the same
//! bench with the commit left out ran at 0.90 of the null appservice, with it at 0.41
//! (`docs/benchmarks.md`). So on a SQLite file the receive script runs here, on a second
//! connection to the same file, on the task's own thread.
//!
//! It must never block that thread, which serves other tasks:
//! - it never waits for a lock: `busy_timeout` is 0, and when another connection writes (a
//!   plugin's transaction, or the framework's connection) the caller goes the usual way,
//!   through sqlx, which waits on its own thread;
//! - it never checkpoints, which is what syncs to disk (`wal_autocheckpoint` is 0): every
//!   [`CHECKPOINT_EVERY`] commits the caller has the plugins' connection do it, in a task of its
//!   own;
//! - a commit appends a few pages to the WAL in the operating system's cache (`synchronous =
//!   NORMAL` syncs only at checkpoints), which survives a crash of the process: what the
//!   answer to the homeserver promises.

use rusqlite::{Connection, OpenFlags, named_params};

/// Commits between checkpoints: a commit here writes about five pages, so the WAL stays near
/// 4 MB, well under the threshold the sqlx connections check point at (see `Store::connect`).
pub(super) const CHECKPOINT_EVERY: u32 = 200;

/// The second connection, and how many commits it made since the last checkpoint.
pub(crate) struct Direct {
    conn: Connection,
    pub(super) commits: u32,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("commits", &self.commits)
            .finish()
    }
}

/// What one receive writes: the parameters of `inbox.rs`'s scripts, numbered as there.
pub(super) struct Receive<'a> {
    pub appservice_id: &'a str,
    pub txn_id: &'a str,
    pub now: i64,
    /// The items as a JSON array of `[queue, index, kind, start, length]`.
    pub rows: &'a str,
    /// The items' payloads, one after another.
    pub payloads: &'a [u8],
    pub first_seq: i64,
    /// The seqs to mark done, as a JSON array.
    pub done: Option<&'a str>,
}

impl Direct {
    /// Opens the file the framework's connection has open (found with `PRAGMA database_list`,
    /// so it is the same file whatever the URL looked like).
    pub(crate) fn open(path: &str) -> rusqlite::Result<Direct> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Without WAL a commit writes the database file itself and readers block it.
            return Err(rusqlite::Error::InvalidQuery);
        }
        Ok(Direct { conn, commits: 0 })
    }

    /// Runs the receive script in one database transaction; returns how many items it
    /// inserted (none for a transaction id seen before). On any error nothing is written, and
    /// the caller can run the same script through sqlx.
    pub(super) fn receive(&mut self, r: &Receive<'_>) -> rusqlite::Result<usize> {
        // IMMEDIATE takes the write lock now or fails at once (`SQLITE_BUSY`), before anything
        // is read under a snapshot that another writer could make stale.
        self.run("BEGIN IMMEDIATE")?;
        let result = self
            .script(r)
            .and_then(|inserted| self.run("COMMIT").map(|()| inserted));
        match result {
            Ok(_) => self.commits += 1,
            Err(_) => {
                let _ = self.run("ROLLBACK");
            }
        }
        result
    }

    /// A statement without parameters, prepared once (`execute_batch` would parse it again
    /// every time).
    fn run(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn script(&mut self, r: &Receive<'_>) -> rusqlite::Result<usize> {
        if let Some(done) = r.done {
            self.conn
                .prepare_cached(super::inbox::MARK_DONE_SQL)?
                .execute(named_params! {"$3": r.now, "$7": done})?;
        }
        let fresh = self
            .conn
            .prepare_cached(super::inbox::TRANSACTION_SQL)?
            .execute(named_params! {"$1": r.appservice_id, "$2": r.txn_id, "$3": r.now})?;
        if fresh == 0 {
            return Ok(0);
        }
        self.conn
            .prepare_cached(super::inbox::ITEMS_NUMBERED_SQL)?
            .execute(named_params! {
                "$1": r.appservice_id,
                "$2": r.txn_id,
                "$3": r.now,
                "$4": r.rows,
                "$5": r.payloads,
                "$6": r.first_seq,
            })
    }
}
