//! The durable inbox: a transaction's items are committed to the store before the homeserver
//! is answered, then handled from there — in order per room, rooms in parallel — and marked
//! done one by one. After a crash, whatever was acknowledged but not marked done is handled on
//! the next start. Handling is at-least-once; handlers get a stable
//! [`IdempotencyKey`](crate::router::IdempotencyKey), and the transaction ids of what they
//! send are derived from it, so the homeserver drops the repeats.

use std::sync::Weak;

use crate::{
    Appservice, Result, appservice::AppInner, lanes::Lane, store::InboxItem, transaction::Incoming,
    writeback::Write,
};

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
    type Item = InboxItem;

    fn scope(&self) -> &str {
        &self.scope
    }

    async fn fetch(&self, queue: &str, after: i64, limit: i64) -> Result<Vec<InboxItem>> {
        let Some(app) = self.app.upgrade() else {
            return Ok(Vec::new());
        };
        app.store
            .inbox_next(&self.appservice_id, queue, after, limit)
            .await
    }

    fn seq(item: &InboxItem) -> i64 {
        item.seq
    }

    async fn pending_queues(&self, limit: i64) -> Result<Vec<String>> {
        let Some(app) = self.app.upgrade() else {
            return Ok(Vec::new());
        };
        app.store
            .inbox_pending_queues(&self.appservice_id, limit)
            .await
    }

    async fn process(&self, item: InboxItem) {
        let Some(inner) = self.app.upgrade() else {
            return;
        };
        let app = Appservice { inner };
        match Incoming::from_stored(&item.kind, &item.payload) {
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
