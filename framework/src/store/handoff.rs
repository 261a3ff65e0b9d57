//! Work handed from the process that received it to the one that holds what it needs: a
//! bridge's Matrix events, handled in a process whose role runs no connections, sent by the
//! process that holds the bridge's logins (crate `trestle-bridge`).
//!
//! Only where processes share the store ([`Store::handoff`] is `None` on SQLite, where one
//! process does everything). Each item is a row, committed before the handler that pushed it
//! returns (so the inbox marks the event done only once the item is safe), taken in order by
//! the holder, and deleted once done; `NOTIFY` wakes the holder at once, a periodic look covers
//! a notice lost.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::broadcast;

use super::{Backend, Notice, Store, now_ms};
use crate::Result;

/// A queue of work for the holder of a lease, in one appservice's store. See the module's
/// documentation.
#[derive(Clone, Debug)]
pub struct Handoff {
    store: Store,
    appservice: String,
    queue: String,
}

/// One item waiting in a [`Handoff`] queue.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handed {
    /// Its place: items are taken in this order.
    pub seq: i64,
    /// What orders it: items with the same key are done one after another, in order (a room).
    pub order_key: String,
    /// What it is, as its pusher named it.
    pub kind: String,
    /// What it holds.
    pub payload: String,
}

/// How often a holder waiting for work looks, notice or not.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Store {
    /// The queue `queue` of work handed between the processes of appservice `appservice_id`
    /// that share this store; `None` on SQLite, where one process does all the work and hands
    /// nothing over.
    pub fn handoff(&self, appservice_id: &str, queue: &str) -> Option<Handoff> {
        (self.backend == Backend::Postgres).then(|| Handoff {
            store: self.clone(),
            appservice: appservice_id.to_owned(),
            queue: queue.to_owned(),
        })
    }
}

impl Handoff {
    /// Adds an item after every other of its queue, and wakes the holder. `item_key` names
    /// it: pushed again while it waits (its handler ran again after a crash, see
    /// [`EventContext::idempotency_key`](crate::router::EventContext::idempotency_key)), it is
    /// kept once. Once done and forgotten it is not known any more: the holder tells a repeat
    /// by what it did.
    pub async fn push(
        &self,
        order_key: &str,
        item_key: &str,
        kind: &str,
        payload: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO handoff (appservice_id, queue, order_key, item_key, kind, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&self.appservice)
        .bind(&self.queue)
        .bind(order_key)
        .bind(item_key)
        .bind(kind)
        .bind(payload)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        self.ring().await;
        Ok(())
    }

    /// Wakes what waits on this queue's [`Handoff::wakes`], in every process, without an item:
    /// for an answer the pusher of an item waits for (in a queue of answers of its own, so that
    /// the holder's wakes are not rung for nothing).
    pub async fn ring(&self) {
        let notice = Notice::Handed {
            queue: self.queue.clone(),
        };
        // What waits may be in this process, whose listener skips its own notices.
        self.store.tell_here(&notice);
        self.store.announce(&notice).await;
    }

    /// Whether items of `order_key` wait (or are being done): work of that key done now, and
    /// not pushed, would pass them.
    pub async fn waiting(&self, order_key: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM handoff WHERE appservice_id = $1 AND queue = $2 AND order_key = $3 LIMIT 1",
        )
        .bind(&self.appservice)
        .bind(&self.queue)
        .bind(order_key)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.is_some())
    }

    /// The oldest `limit` items, in order.
    pub async fn oldest(&self, limit: i64) -> Result<Vec<Handed>> {
        let rows = sqlx::query(
            "SELECT seq, order_key, kind, payload FROM handoff
             WHERE appservice_id = $1 AND queue = $2 ORDER BY seq LIMIT $3",
        )
        .bind(&self.appservice)
        .bind(&self.queue)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Handed {
                seq: row.get(0),
                order_key: row.get(1),
                kind: row.get(2),
                payload: row.get(3),
            })
            .collect())
    }

    /// Forgets an item that was done.
    pub async fn done(&self, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM handoff WHERE appservice_id = $1 AND queue = $2 AND seq = $3")
            .bind(&self.appservice)
            .bind(&self.queue)
            .bind(seq)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// How many items wait.
    pub async fn depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM handoff WHERE appservice_id = $1 AND queue = $2",
        )
        .bind(&self.appservice)
        .bind(&self.queue)
        .fetch_one(self.store.pool())
        .await?)
    }

    /// What wakes a holder waiting for work: subscribed before it looks, so that an item
    /// pushed in between is not missed.
    pub fn wakes(&self) -> Wakes {
        Wakes {
            notices: self.store.notices(),
            queue: self.queue.clone(),
        }
    }
}

/// Wakes the holder of a [`Handoff`] queue when work was pushed ([`Handoff::wakes`]).
#[derive(Debug)]
pub struct Wakes {
    notices: Option<broadcast::Receiver<Notice>>,
    queue: String,
}

impl Wakes {
    /// Completes when an item was pushed to the queue (by any process), when notices may have
    /// been missed, or after a second without either.
    pub async fn next(&mut self) {
        let Some(notices) = &mut self.notices else {
            return tokio::time::sleep(LOOK_EVERY).await;
        };
        let woken = async {
            loop {
                match notices.recv().await {
                    Ok(Notice::Handed { queue }) if queue == self.queue => return,
                    Ok(Notice::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LOOK_EVERY, woken).await;
    }

    /// Whether an item was pushed to the queue (by any process, this one too) since the last
    /// call or since [`Handoff::wakes`], or notices may have been missed, without waiting: for
    /// a holder that keeps in memory what waits, and must not pass what it has not read. Every
    /// push is announced after its row is committed, so one committed before a call that says
    /// `false` was rung before too, unless its notice is still on its way (see the bridge
    /// kit's `handoff/view.rs`). Always `true` where there are no notices to go by.
    pub fn rung(&mut self) -> bool {
        let Some(notices) = &mut self.notices else {
            return true;
        };
        let mut rung = false;
        loop {
            match notices.try_recv() {
                Ok(Notice::Handed { queue }) if queue == self.queue => rung = true,
                Ok(Notice::Missed) | Err(broadcast::error::TryRecvError::Lagged(_)) => rung = true,
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty) => return rung,
                // No listener any more: nothing to go by.
                Err(broadcast::error::TryRecvError::Closed) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is the test failing.

    use super::*;

    #[tokio::test]
    async fn nothing_is_handed_over_on_sqlite() {
        let store = Store::in_memory().await.unwrap();
        assert!(store.handoff("as", "bridge").is_none());
    }

    #[tokio::test]
    async fn items_come_in_order_once_each_and_go_when_done() {
        let url = trestle_postgres_harness::fresh_database().await;
        let store = Store::connect(&url).await.unwrap();
        let queue = store.handoff("as", "bridge").unwrap();
        let other = store.handoff("as", "elsewhere").unwrap();
        let mut wakes = queue.wakes();
        // The listener's first word (it may have missed notices) or a second's look.
        wakes.next().await;
        queue
            .push("!a", "t1.0", "timeline", "{\"n\":1}")
            .await
            .unwrap();
        // Woken by its own push (the listener skips this process's notices).
        tokio::time::timeout(Duration::from_millis(500), wakes.next())
            .await
            .unwrap();
        queue
            .push("!b", "t1.1", "timeline", "{\"n\":2}")
            .await
            .unwrap();
        queue
            .push("!a", "t2.0", "ephemeral", "{\"n\":3}")
            .await
            .unwrap();
        // Handed again after a crash: kept once.
        queue
            .push("!a", "t1.0", "timeline", "{\"n\":1}")
            .await
            .unwrap();
        other.push("!a", "t9.0", "timeline", "{}").await.unwrap();
        let items = queue.oldest(10).await.unwrap();
        let seen: Vec<(&str, &str, &str)> = items
            .iter()
            .map(|i| (i.order_key.as_str(), i.kind.as_str(), i.payload.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("!a", "timeline", "{\"n\":1}"),
                ("!b", "timeline", "{\"n\":2}"),
                ("!a", "ephemeral", "{\"n\":3}"),
            ]
        );
        assert_eq!(queue.depth().await.unwrap(), 3);
        assert!(queue.waiting("!b").await.unwrap());
        queue.done(items[1].seq).await.unwrap();
        assert!(!queue.waiting("!b").await.unwrap());
        assert!(queue.waiting("!a").await.unwrap());
        assert_eq!(queue.oldest(1).await.unwrap(), vec![items[0].clone()]);
        assert_eq!(other.depth().await.unwrap(), 1);
    }
}
