//! The durable inbox: a transaction's items are stored before the homeserver is answered (on a
//! SQLite file in the journal first, `store/journal.rs`), then handled from there — in order
//! per room, rooms in parallel — and marked done. After a crash, whatever was acknowledged but
//! not marked done is handled on the next start. Handling is at-least-once; handlers get a
//! stable [`IdempotencyKey`](crate::router::IdempotencyKey), and the transaction ids of what
//! they send are derived from it, so the homeserver drops the repeats.

use std::sync::Weak;

use super::{core::Core, lanes::Lane, writeback::Write};
use crate::{Result, store::InboxItem, transaction::Incoming};

/// An inbox item on its way to its room's worker. Items handed over in memory come already
/// taken apart, as `receive` parsed them: read back from the store, they are parsed again.
pub(crate) struct Pending {
    pub(crate) item: InboxItem,
    pub(crate) parsed: Option<Incoming>,
}

impl From<InboxItem> for Pending {
    fn from(item: InboxItem) -> Self {
        Pending { item, parsed: None }
    }
}

/// The inbox lane: hands stored items to the handlers, and marks them done.
pub(crate) struct InboxLane {
    core: Weak<Core>,
    scope: String,
    appservice_id: String,
}

impl InboxLane {
    pub(crate) fn new(core: Weak<Core>, appservice_id: &str) -> Self {
        InboxLane {
            core,
            scope: format!("in:{appservice_id}"),
            appservice_id: appservice_id.to_owned(),
        }
    }
}

impl Lane for InboxLane {
    type Item = Pending;

    fn scope(&self) -> &str {
        &self.scope
    }

    async fn fetch(&self, queue: &str, after: i64, limit: i64) -> Result<Vec<Pending>> {
        let Some(core) = self.core.upgrade() else {
            return Ok(Vec::new());
        };
        let items = core
            .store
            .inbox_next(&self.appservice_id, queue, after, limit)
            .await?;
        Ok(items.into_iter().map(Pending::from).collect())
    }

    fn seq(pending: &Pending) -> i64 {
        pending.item.seq
    }

    async fn pending_queues(&self, limit: i64) -> Result<Vec<String>> {
        let Some(core) = self.core.upgrade() else {
            return Ok(Vec::new());
        };
        core.store
            .inbox_pending_queues(&self.appservice_id, limit)
            .await
    }

    async fn process(&self, Pending { item, parsed }: Pending, take: u64) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let incoming = match parsed {
            Some(incoming) => Ok(incoming),
            None => Incoming::from_stored(&item.kind, &item.payload),
        };
        match incoming {
            Ok(incoming) => {
                core.upstream.handle(incoming, item.item_key, take).await;
            }
            Err(error) => tracing::error!(seq = item.seq, %error, "skipping a damaged inbox row"),
        }
        // Counted one by one, not when the batch is marked done: a room's batch may be long.
        core.admission.release(1);
    }

    fn let_go(&self, items: usize) {
        // Handled by the process that holds their room, which cannot tell this one: no
        // longer this process's backlog, or its next transactions would wait for them.
        if let Some(core) = self.core.upgrade() {
            core.admission.release(items);
        }
    }

    async fn finish(&self, seqs: Vec<i64>) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        // Items the appservice was gone for were not handled: they wait for the next start.
        if !core.upstream.alive() {
            return;
        }
        // Items whose waiting rows were never written need no mark (`store/journal.rs`).
        let seqs = core.store.journal_handled(seqs);
        if seqs.is_empty() {
            return;
        }
        let writeback = &core.writeback;
        core.mode
            .mark_done(&core.store, seqs, |seqs| {
                writeback.extend(seqs.into_iter().map(Write::Done))
            })
            .await;
    }
}
