//! The connection the framework's own statements run on.
//!
//! sqlx runs every SQLite connection on a thread of its own, so each statement is a trip to that
//! thread and back: two thread wake-ups. A statement through the pool costs two trips more,
//! since sqlx pings a connection when it goes back to the pool (and, by default, before handing it
//! out). Wake-ups across CPUs are what the one-event-per-transaction path spent most of its time
//! on (a round trip across CPUs costs about nine times one on the same CPU: `docs/benchmarks.md`,
//! "Why the receive path's constants are what they are"). So on a SQLite file the framework keeps one
//! connection out of the pool for its inbox, outbox and caches, and leaves the pool to plugins.
//! PostgreSQL, where each connection is a socket and processes share the database, keeps using
//! the pool.

use std::ops::{Deref, DerefMut};

use futures_util::TryStreamExt;
use sqlx::{
    Any, AnyConnection, Either, Executor,
    any::{AnyArguments, AnyQueryResult, AnyRow},
    pool::PoolConnection,
    query::Query,
};
use tokio::sync::MutexGuard;

use super::Store;
use crate::Result;

/// The framework's SQLite connection.
#[derive(Debug)]
pub(crate) struct Held {
    pub(super) conn: AnyConnection,
    /// False while a script that opens its own transaction (`BEGIN; …; COMMIT;`) runs. A caller
    /// dropped midway leaves it false, and sqlx stops a script whose results nobody reads: the
    /// next user first rolls the half-done transaction back, so that nothing reads or extends
    /// writes that were never committed.
    pub(super) clean: bool,
}

/// A connection for one store call: the held one, or one from the pool.
pub(crate) enum Conn<'a> {
    Held(MutexGuard<'a, Held>),
    Pooled(PoolConnection<Any>),
}

impl Deref for Conn<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Conn::Held(held) => &held.conn,
            Conn::Pooled(conn) => conn,
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Conn::Held(held) => &mut held.conn,
            Conn::Pooled(conn) => conn,
        }
    }
}

impl Store {
    /// The connection for a framework statement.
    pub(crate) async fn conn(&self) -> Result<Conn<'_>> {
        let Some(held) = &self.held else {
            return Ok(Conn::Pooled(self.pool.acquire().await?));
        };
        let mut held = held.lock().await;
        if !held.clean {
            // Fails harmlessly if the script had not reached its BEGIN, or had committed.
            let _ = held.conn.execute("ROLLBACK").await;
            held.clean = true;
        }
        Ok(Conn::Held(held))
    }

    /// Runs a script that opens and commits its own transaction (see [`script_on`]).
    pub(crate) async fn script<'q>(
        &self,
        query: Query<'q, Any, AnyArguments>,
    ) -> Result<Vec<Either<AnyQueryResult, AnyRow>>> {
        script_on(&mut self.conn().await?, query).await
    }
}

/// Runs a script that opens and commits its own transaction, returning each statement's
/// result and rows. If it stops midway, its transaction is rolled back here, so that the
/// connection is never left inside it.
pub(crate) async fn script_on<'q>(
    conn: &mut Conn<'_>,
    query: Query<'q, Any, AnyArguments>,
) -> Result<Vec<Either<AnyQueryResult, AnyRow>>> {
    if let Conn::Held(held) = conn {
        held.clean = false;
    }
    let result: std::result::Result<Vec<_>, _> =
        (&mut **conn).fetch_many(query).try_collect().await;
    if result.is_err()
        && conn.execute("ROLLBACK").await.is_err()
        && let Conn::Pooled(pooled) = conn
    {
        // Not to be handed to the next caller in an unknown state: taken out of the pool.
        pooled.close_on_drop();
    }
    if let Conn::Held(held) = conn {
        held.clean = true;
    }
    Ok(result?)
}
