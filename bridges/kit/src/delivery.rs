//! Delivery status: whether a Matrix message reached the network, told where the sender looks.
//!
//! On success the bot marks the message read (a "delivery receipt", as mautrix calls it) and
//! sends a `com.beeper.message_send_status` event referring to it, which Beeper-style clients
//! show by the message; on failure the sender gets a notice replying to their message with the
//! reason in words, and the status event says whether sending again may work
//! (`FAIL_RETRIABLE`) or not (`FAIL_PERMANENT`). Receipts and status events can be turned off
//! ([`BridgeConfig::delivery_status`](super::BridgeConfig::delivery_status)); the notice of a
//! failure is always sent.

use ruma::{
    EventId, OwnedEventId,
    events::{
        relation::{InReplyTo, Reply},
        room::message::{Relation, RoomMessageEventContent},
    },
};
use serde_json::{Value, json};
use trestle::intent::SendOptions;

use super::{BridgeError, BridgeHandle, Network, PortalRef};

/// The event type clients read a bridge's delivery status from.
pub const MESSAGE_STATUS_TYPE: &str = "com.beeper.message_send_status";

/// How sending a Matrix message to the network ended, as the status event says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Failed for now; sending again (or waiting) may work.
    Retriable,
    /// Failed for good (refused, not logged in).
    Permanent,
}

impl Outcome {
    /// The failure an error is, and the reason told to the user; `None` for errors that are
    /// the kit's own (the homeserver, the store), which fail the handler instead.
    pub(crate) fn of(error: &BridgeError) -> Option<(Outcome, &str)> {
        match error {
            BridgeError::Remote(reason) | BridgeError::Forbidden(reason) => {
                Some((Outcome::Permanent, reason))
            }
            BridgeError::Retriable(reason) => Some((Outcome::Retriable, reason)),
            _ => None,
        }
    }

    fn status(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Retriable => "FAIL_RETRIABLE",
            Outcome::Permanent => "FAIL_PERMANENT",
        }
    }
}

/// The content of a status event about `event_id`: `network` names the bridge, `reason` is
/// the machine-readable kind of failure and `message` the words for people.
pub(crate) fn status_content(
    network: &str,
    event_id: &EventId,
    outcome: Outcome,
    message: Option<&str>,
) -> Value {
    let mut content = json!({
        "network": network,
        "m.relates_to": {"rel_type": "m.reference", "event_id": event_id},
        "status": outcome.status(),
    });
    if outcome != Outcome::Success {
        content["reason"] = json!("m.foreign_network_error");
        content["message"] = json!(message.unwrap_or_default());
    }
    content
}

impl<N: Network> BridgeHandle<N> {
    /// The network reports `event_id` sent: the bot's read receipt and a `SUCCESS` status.
    pub(crate) async fn delivered(&self, portal: &PortalRef<N>, event_id: &OwnedEventId) {
        if !self.config().delivery_status {
            return;
        }
        let outcome = async {
            let bot = self.app()?.bot();
            bot.read_receipt(&portal.room_id, event_id).await?;
            self.send_status(portal, event_id, Outcome::Success, None)
                .await
        };
        if let Err(error) = outcome.await {
            tracing::warn!(room_id = %portal.room_id, %event_id, %error, "could not report a delivery");
        }
    }

    /// Tells the room, in a notice replying to the event, that it did not reach the network
    /// and why, with a status event saying whether it may later.
    pub(crate) async fn not_delivered(
        &self,
        portal: &PortalRef<N>,
        event_id: &OwnedEventId,
        reason: &str,
        outcome: Outcome,
    ) {
        let protocol = self.network().protocol().displayname;
        // The reason says whether it may still go out (a network that queued it) or not.
        let mut notice =
            RoomMessageEventContent::notice_plain(format!("Not delivered to {protocol}: {reason}"));
        notice.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(
            event_id.clone(),
        ))));
        let told = async {
            let options = SendOptions::default().txn_id(format!("undelivered.{event_id}"));
            self.app()?
                .bot()
                .send_with(&portal.room_id, &notice, options)
                .await?;
            if self.config().delivery_status {
                self.send_status(portal, event_id, outcome, Some(reason))
                    .await?;
            }
            Ok::<_, BridgeError>(())
        };
        if let Err(error) = told.await {
            tracing::warn!(room_id = %portal.room_id, %error, "could not say a message was not delivered");
        }
    }

    async fn send_status(
        &self,
        portal: &PortalRef<N>,
        event_id: &OwnedEventId,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<(), BridgeError> {
        let content = status_content(&self.network().protocol().id, event_id, outcome, message);
        // One status per event and outcome, so a handler run again after a crash repeats it.
        let txn = format!("status.{}.{event_id}", outcome.status());
        self.app()?
            .bot()
            .send_json(
                &portal.room_id,
                MESSAGE_STATUS_TYPE,
                content,
                SendOptions::default().txn_id(txn),
            )
            .await?;
        Ok(())
    }
}
