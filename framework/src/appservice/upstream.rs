//! The appservice as the queues see it: the way up from an inbox item to the handlers, and
//! from an outgoing event to the encryption.

use std::sync::Weak;

use futures_util::future::BoxFuture;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::{AppInner, Appservice};
use crate::{
    Error, Result,
    encryption::EncryptionHook,
    queues::{Sealed, Upstream},
    transaction::Incoming,
};

/// The appservice behind a weak reference, so that the queues never keep it alive.
pub(super) struct Up {
    app: Weak<AppInner>,
    /// Held here too: an event meant for an encrypted room must fail rather than go out in
    /// plaintext when the appservice is gone.
    encryption: EncryptionHook,
}

impl Up {
    pub(super) fn new(app: Weak<AppInner>, encryption: EncryptionHook) -> Self {
        Up { app, encryption }
    }

    fn app(&self) -> Option<Appservice> {
        self.app.upgrade().map(|inner| Appservice { inner })
    }
}

impl Upstream for Up {
    fn handle(&self, item: Incoming, item_key: String, take: u64) -> BoxFuture<'static, ()> {
        let app = self.app();
        Box::pin(async move {
            if let Some(app) = app {
                app.handle(item, &item_key, take).await;
            }
        })
    }

    fn seal<'a>(
        &'a self,
        sender: &'a UserId,
        room_id: &'a RoomId,
        event_type: &'a str,
        content: &'a RawValue,
    ) -> BoxFuture<'a, Result<Option<Sealed>>> {
        Box::pin(async move {
            if self.encryption.is_none() {
                return Ok(None);
            }
            let app = self.app().ok_or_else(|| {
                Error::Other("the appservice stopped before the event was encrypted".into())
            })?;
            let sealed = app
                .encrypt_outgoing(sender, room_id, event_type, content)
                .await?;
            Ok(sealed.map(|event| (event.event_type, event.content)))
        })
    }

    fn alive(&self) -> bool {
        self.app.strong_count() > 0
    }

    fn ping(&self) {
        if let Some(app) = self.app() {
            // Runs on its own; its handle is not needed.
            drop(app.ping_in_background());
        }
    }
}
