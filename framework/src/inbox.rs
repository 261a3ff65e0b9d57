//! The durable inbox: a transaction's items are stored before the homeserver is answered (on a
//! SQLite file in the journal first, `store/journal.rs`), then handled from there — in order per room, rooms in parallel — and marked
//! done one by one. After a crash, whatever was acknowledged but not marked done is handled on
//! the next start. Handling is at-least-once; handlers get a stable
//! [`IdempotencyKey`](crate::router::IdempotencyKey), and the transaction ids of what they
//! send are derived from it, so the homeserver drops the repeats.

use std::sync::Weak;

use crate::{
    Appservice, Result, appservice::AppInner, lanes::Lane, store::InboxItem, transaction::Incoming,
    writeback::Write,
};

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

pub(crate) struct InboxLane {
    pub(crate) app: Weak<AppInner>,
    pub(crate) scope: String,
    pub(crate) appservice_id: String,
}

impl InboxLane {
    pub(crate) fn new(app: Weak<AppInner>, appservice_id: &str) -> Self {
        InboxLane {
            app,
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
        let Some(app) = self.app.upgrade() else {
            return Ok(Vec::new());
        };
        let items = app
            .store
            .inbox_next(&self.appservice_id, queue, after, limit)
            .await?;
        Ok(items.into_iter().map(Pending::from).collect())
    }

    fn seq(pending: &Pending) -> i64 {
        pending.item.seq
    }

    async fn pending_queues(&self, limit: i64) -> Result<Vec<String>> {
        let Some(app) = self.app.upgrade() else {
            return Ok(Vec::new());
        };
        app.store
            .inbox_pending_queues(&self.appservice_id, limit)
            .await
    }

    async fn process(&self, Pending { item, parsed }: Pending) {
        let Some(inner) = self.app.upgrade() else {
            return;
        };
        let app = Appservice { inner };
        let incoming = match parsed {
            Some(incoming) => Ok(incoming),
            None => Incoming::from_stored(&item.kind, &item.payload),
        };
        match incoming {
            Ok(incoming) => app.handle(incoming, &item.item_key).await,
            Err(error) => tracing::error!(seq = item.seq, %error, "skipping a damaged inbox row"),
        }
    }

    async fn finish(&self, seqs: Vec<i64>) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        if app.store.exclusive() {
            app.writeback.extend(seqs.into_iter().map(Write::Done));
            return;
        }
        // Where processes share the store, the marks must be written before this worker lets
        // go of the room, or another process would find the items pending and handle them
        // again.
        for attempt in 0..5 {
            match app.store.inbox_done_many(&seqs).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(items = seqs.len(), %error, attempt, "could not mark items done");
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
}
