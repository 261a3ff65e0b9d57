//! No stall without a sound: when the journal's records cannot be committed (a full disk, a
//! database or directory made read-only), the commit task retries for ever, and records would
//! pile up answered but never handled. After a few failures in a row the appservice says so:
//! `/health/ready` answers 503 with the reason, an error is logged once a minute, `/metrics`
//! shows it, and received transactions are refused, so that the homeserver keeps them and
//! retries later. The first success lifts it all, and pings the homeserver so that it retries
//! at once instead of at the end of its back-off.

use std::time::Duration;

use tokio::time::Instant;

use crate::queues::core::Core;

/// Failures in a row before transactions are refused: a busy database or a passing error
/// should not turn the appservice away.
pub(super) const STALL_AFTER: u32 = 3;

/// How often a stall is logged while it lasts.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The commit task's record of its failures in a row.
#[derive(Debug, Default)]
pub(super) struct Stall {
    failures: u32,
    /// When the stall began, once it did.
    since: Option<Instant>,
    logged: Option<Instant>,
}

/// What a failure to commit says: the error, and what to check.
pub(super) fn commit_failed(core: &Core, error: &crate::Error) -> String {
    format!(
        "the inbox journal cannot be committed to the database: {error}; check the disk space \
         and the permissions of {} and its directory",
        database(core)
    )
}

/// What a failure to empty a committed file of the journal says.
pub(super) fn emptying_failed(core: &Core, error: &str) -> String {
    format!(
        "a committed file of the inbox journal cannot be emptied: {error}; check the disk space \
         and the permissions of the files beside {}",
        database(core)
    )
}

fn database(core: &Core) -> String {
    core.store
        .journal_database()
        .map_or_else(|| "the database".to_owned(), |p| p.display().to_string())
}

impl Stall {
    /// Counts a failure; after [`STALL_AFTER`] in a row, refuses transactions and says why.
    pub(super) fn failed(&mut self, core: &Core, reason: String) {
        self.failures += 1;
        core.metrics.journal_commit_failed();
        if self.failures < STALL_AFTER {
            tracing::warn!(failures = self.failures, "{reason}; trying again");
            return;
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        // The reason is renewed: the error may change while it lasts.
        core.store.stall_journal(Some(reason.clone()));
        core.metrics.journal_stalled(true);
        if self
            .logged
            .is_none_or(|logged| now.duration_since(logged) >= LOG_EVERY)
        {
            self.logged = Some(now);
            tracing::error!(
                failures = self.failures,
                stalled_for = ?now.duration_since(since),
                "{reason}. Received transactions are refused (the homeserver retries them \
                 later) until a commit succeeds; trying again"
            );
        }
    }

    /// A commit succeeded, and its file was emptied: a stall is lifted.
    pub(super) fn succeeded(&mut self, core: &Core) {
        if self.failures == 0 {
            return;
        }
        if let Some(since) = self.since {
            core.store.stall_journal(None);
            core.metrics.journal_stalled(false);
            tracing::info!(
                failures = self.failures,
                stalled_for = ?since.elapsed(),
                "the inbox journal is committed again; taking transactions again"
            );
            // The homeserver backs off up to minutes between retries; a ping retries at once.
            core.upstream.ping();
        }
        *self = Stall::default();
    }

    /// How long to wait before trying again: 100 ms doubling to 6.4 s.
    pub(super) fn backoff(&self) -> Duration {
        Duration::from_millis(100 << self.failures.saturating_sub(1).min(6))
    }
}
