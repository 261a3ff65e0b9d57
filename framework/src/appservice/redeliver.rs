//! Offering events to the handlers again, for work that had to wait for something the homeserver
//! sends later (an encrypted event whose room key arrives after the event).

use serde_json::value::RawValue;

use crate::{Appservice, Result, transaction::TransactionBody};

impl Appservice {
    /// Offers timeline events to the handlers again, as if the homeserver had sent them in a new
    /// transaction: stored before this returns, then handled after whatever their rooms already
    /// have queued. `key` names the redelivery; the same key a second time stores nothing and
    /// returns `false`, so a caller that crashes between deciding and recording can simply repeat.
    ///
    /// Sends made while handling a redelivered event get transaction ids of their own (they are
    /// derived from the redelivery, not the first delivery), so redeliver only what the handlers
    /// did not act on the first time.
    /// Spec (the transaction these imitate):
    /// <https://spec.matrix.org/v1.16/application-service-api/#put_matrixappv1transactionstxnid>
    pub async fn redeliver(&self, key: &str, events: Vec<Box<RawValue>>) -> Result<bool> {
        let body = TransactionBody {
            events,
            ..TransactionBody::default()
        };
        // Homeserver transaction ids never contain this prefix's dot-separated form.
        let key = format!("trestle.redeliver.{key}");
        self.queues()
            .receive(&key, body, true, crate::queues::Source::Redelivery)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ruma::events::room::message::RoomMessageEventContent;
    use serde_json::json;

    use crate::{
        Appservice, Router,
        router::Event,
        testing::{MockHomeserver, deliver, text},
    };

    #[tokio::test]
    async fn a_redelivered_event_is_handled_again_once_per_key_in_memory() {
        a_redelivered_event_is_handled_again_once_per_key(crate::Store::in_memory().await.unwrap())
            .await;
    }

    /// On a file, through the journal: the second redelivery learns it was a repeat only once
    /// the journal is committed, and waits for that.
    #[tokio::test]
    async fn a_redelivered_event_is_handled_again_once_per_key_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        a_redelivered_event_is_handled_again_once_per_key(
            crate::Store::connect(&url).await.unwrap(),
        )
        .await;
    }

    async fn a_redelivered_event_is_handled_again_once_per_key(store: crate::Store) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let seen = seen.clone();
            move |message: Event<RoomMessageEventContent>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(message.content.body().to_owned());
                    Ok::<_, crate::Error>(())
                }
            }
        };
        let hs = MockHomeserver::start(json!({}), json!({})).await;
        let registration =
            trestle_registration::Registration::generate("t", None, "bot", "t_", "x");
        let app = Appservice::builder(registration, hs.url.clone(), "x")
            .store(store)
            .router(Router::new().on(record))
            .build()
            .await
            .unwrap();
        deliver(&app, vec![text("$1", "!r:x", "@u:x", "first")]).await;
        let again = serde_json::value::to_raw_value(&text("$1", "!r:x", "@u:x", "first")).unwrap();
        assert!(app.redeliver("$1", vec![again.clone()]).await.unwrap());
        app.idle().await;
        assert!(!app.redeliver("$1", vec![again]).await.unwrap());
        deliver(&app, vec![text("$2", "!r:x", "@u:x", "second")]).await;
        assert_eq!(*seen.lock().unwrap(), ["first", "first", "second"]);
    }
}
