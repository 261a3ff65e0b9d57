use std::{
    future::Future,
    time::{Duration, Instant},
};

use super::{Backend, Notice, Store, now_ms};
use crate::Result;

/// How long a process that died holds what it owned, by default: its rooms' queues and its
/// one-process services are taken over after this ([`StoreOptions::takeover`](super::StoreOptions::takeover)).
pub const DEFAULT_TAKEOVER: Duration = Duration::from_secs(15);

/// The longest margin kept before a lease runs out (see [`LeaseTimes::fence`]).
const MAX_FENCE_MARGIN: Duration = Duration::from_secs(5);

/// A lease's timings, all derived from the takeover time an operator chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseTimes {
    /// How long a lease lasts without renewal: what a dead process holds is taken over after
    /// this.
    pub(crate) ttl: Duration,
}

impl LeaseTimes {
    pub(crate) fn from_takeover(takeover: Duration) -> Self {
        // Below a second, renewals would be most of the store's work.
        LeaseTimes {
            ttl: takeover.max(Duration::from_secs(1)),
        }
    }

    /// How often a holder renews: three tries before the lease runs out.
    pub(crate) fn renew_every(self) -> Duration {
        self.ttl / 3
    }

    /// How long before its lease runs out a holder that could not renew it drops its work: the
    /// lease's end is reckoned by clocks of other machines, so this covers their skew and the
    /// time dropped work takes to stop. A third of a short lease, so a renewal still fits.
    fn fence(self) -> Duration {
        (self.ttl / 3).min(MAX_FENCE_MARGIN)
    }
}

/// How soon a renewal that failed (the store unreachable) is tried again.
const RENEW_RETRY: Duration = Duration::from_secs(1);

impl Store {
    /// Takes or renews the lease on a queue for `owner`, for `ttl`. Returns whether `owner`
    /// holds it now. On SQLite, where one process owns the database, it is always granted.
    pub async fn lease(
        &self,
        scope: &str,
        queue_key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool> {
        if self.backend == Backend::Sqlite {
            return Ok(true);
        }
        let now = now_ms();
        // The row before, read in the same statement: a lease taken from another owner is a
        // takeover, counted for `/metrics`.
        let taken = sqlx::query(
            "WITH before AS (
                 SELECT owner FROM queue_leases WHERE appservice_id = $1 AND queue_key = $2)
             INSERT INTO queue_leases (appservice_id, queue_key, owner, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (appservice_id, queue_key) DO UPDATE
             SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE queue_leases.owner = excluded.owner OR queue_leases.expires_at < $5
             RETURNING (SELECT owner FROM before)",
        )
        .bind(scope)
        .bind(queue_key)
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = taken else {
            return Ok(false);
        };
        let before: Option<String> = sqlx::Row::try_get(&row, 0)?;
        if before.is_some_and(|before| before != owner) {
            tracing::info!(
                scope,
                queue_key,
                "took over a lease another process let run out"
            );
            self.takeovers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(true)
    }

    /// How many leases this store's holders took over from a process that let them run out.
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long this store's leases last without renewal (see [`StoreOptions::takeover`](super::StoreOptions::takeover)).
    pub fn lease_ttl(&self) -> Duration {
        self.leases.ttl
    }

    pub(crate) fn lease_times(&self) -> LeaseTimes {
        self.leases
    }

    /// Runs `work` while renewing the lease on `queue_key` (taken at `leased_at`, for
    /// [`Store::lease_ttl`]) every third of its life, so work that outlasts the lease keeps it.
    /// Returns `None`, `work` dropped unfinished, once the lease is lost: refused (another
    /// process took it after this one stalled) or not renewed by the fence margin before it
    /// runs out (the store unreachable). Either way this holder stops before another may
    /// start, so the work is never done by two at once.
    pub(crate) async fn keep_lease_while<T>(
        &self,
        scope: &str,
        queue_key: &str,
        owner: &str,
        leased_at: &mut Instant,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        let times = self.leases;
        let mut next = *leased_at + times.renew_every();
        loop {
            tokio::select! {
                biased;
                output = &mut work => return Some(output),
                () = tokio::time::sleep_until(next.into()) => {}
            }
            let deadline = tokio::time::Instant::from_std(*leased_at + times.ttl - times.fence());
            let asked = Instant::now();
            let renewal =
                tokio::time::timeout_at(deadline, self.lease(scope, queue_key, owner, times.ttl));
            tokio::pin!(renewal);
            // The work goes on while the store answers; a renewal under way is let finish
            // even when the work does, rather than cut off inside the database.
            let mut output = None;
            let renewed = loop {
                tokio::select! {
                    out = &mut work, if output.is_none() => output = Some(out),
                    renewed = &mut renewal => break renewed,
                }
            };
            match renewed {
                Ok(Ok(true)) => {
                    *leased_at = asked;
                    next = asked + times.renew_every();
                }
                Ok(Err(error)) if Instant::now() + RENEW_RETRY < deadline.into_std() => {
                    tracing::warn!(%error, queue_key, "could not renew a lease; trying again");
                    next = Instant::now() + RENEW_RETRY;
                }
                // Refused, failed for good, or too late: what finished, finished while the
                // lease was still this holder's.
                _ => return output,
            }
            if output.is_some() {
                return output;
            }
        }
    }

    /// Gives back every lease `owner` holds (a process that stops: whatever a worker cut off
    /// in its stop left), and tells the others.
    pub(crate) async fn release_all(&self, owner: &str) -> Result<()> {
        if self.backend == Backend::Sqlite {
            return Ok(());
        }
        sqlx::query("DELETE FROM queue_leases WHERE owner = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        self.announce(&Notice::LeaseFreed).await;
        Ok(())
    }

    /// Gives a lease back, and tells the other processes on the database that it is free
    /// (`LISTEN`/`NOTIFY` on PostgreSQL), so one that waits for it takes it at once.
    pub async fn release(&self, scope: &str, queue_key: &str, owner: &str) -> Result<()> {
        if self.give_back(scope, queue_key, owner).await? {
            self.announce(&Notice::LeaseFreed).await;
        }
        Ok(())
    }

    /// Gives back the lease of a room's queue whose worker found nothing more to do, telling
    /// nobody: nothing waits for it. Work another process stored meanwhile was announced to
    /// this holder ([`Notice::Pending`]), which takes the queue again; a `LeaseFreed` here
    /// would only have every other process rescan every queue, and take the rooms it finds
    /// pending at that moment away from the processes working them.
    pub(crate) async fn release_idle(
        &self,
        scope: &str,
        queue_key: &str,
        owner: &str,
    ) -> Result<()> {
        self.give_back(scope, queue_key, owner).await?;
        Ok(())
    }

    /// Deletes `owner`'s lease on `queue_key`; whether it held one.
    async fn give_back(&self, scope: &str, queue_key: &str, owner: &str) -> Result<bool> {
        if self.backend == Backend::Sqlite {
            return Ok(false);
        }
        let released = sqlx::query(
            "DELETE FROM queue_leases WHERE appservice_id = $1 AND queue_key = $2 AND owner = $3",
        )
        .bind(scope)
        .bind(queue_key)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released > 0)
    }
}
