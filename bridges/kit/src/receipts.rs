//! Read receipts both ways: a Matrix user's `m.read` in a portal tells the network which
//! bridged message they read up to ([`Network::read_receipt`], for networks with
//! [`Capabilities::read_receipts`](super::Capabilities::read_receipts)), and a remote user's
//! reading puts their ghost's `m.read` receipt on the mapped event
//! ([`BridgeHandle::remote_read`]).
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#receipts>
//!
//! Nothing comes back the way it went: receipts of the appservice's own users (the bot's
//! delivery receipts, the ghosts' receipts) are never passed to the network, and a Matrix
//! user's own login reading on the network is not shown by a ghost, so a network that echoes
//! the receipts it was given does not turn them into a ghost's.

use ruma::events::receipt::{ReceiptEventContent, ReceiptType};
use serde::Deserialize;
use trestle::transaction::EphemeralEvent;

use super::{BridgeHandle, MatrixReceipt, Network, NetworkResult};

#[derive(Deserialize)]
struct Receipts {
    content: ReceiptEventContent,
}

impl<N: Network> BridgeHandle<N> {
    /// An `m.receipt` event of a portal: each public read receipt of a Matrix user whose login
    /// speaks there, on a bridged message, goes to the network. Receipts on events that were
    /// never bridged (a status event, a message nobody spoke for) say nothing the network can
    /// hold, and are dropped.
    pub(crate) async fn on_receipt(&self, event: &EphemeralEvent) -> NetworkResult<()> {
        if !self.network().capabilities().read_receipts {
            return Ok(());
        }
        let Some(room_id) = &event.room_id else {
            return Ok(());
        };
        let Some(portal) = self.portal_for_room(room_id).await? else {
            return Ok(());
        };
        let app = self.app()?;
        let receipts: Receipts = serde_json::from_str(event.json.get())?;
        for (event_id, by_type) in receipts.content.iter() {
            let readers: Vec<_> = by_type
                .get(&ReceiptType::Read)
                .into_iter()
                .flat_map(|users| users.keys())
                .filter(|user| !app.is_own_user(user))
                .collect();
            if readers.is_empty() {
                continue;
            }
            let Some(up_to) = self.remote_for(&portal, event_id.as_str()).await? else {
                continue;
            };
            for reader in readers {
                let Some(speaker) = self.speaker_now(&portal, reader, false).await? else {
                    continue;
                };
                self.network()
                    .read_receipt(MatrixReceipt {
                        portal: &portal,
                        via: speaker.via(),
                        event_id,
                        up_to: up_to.clone(),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Shows that `reader` read `chat` up to the remote message `up_to`: their ghost's public
    /// `m.read` receipt on the mapped event, which marks it and everything before it read.
    /// Returns whether it was shown: not when the chat has no portal, the message was never
    /// bridged or is in a room an upgrade left behind, or `reader` is a Matrix user's own
    /// login (their reading belongs to their Matrix account, not to a ghost).
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid>
    pub async fn remote_read(
        &self,
        chat: &N::ChatId,
        reader: &N::UserId,
        up_to: &N::MessageId,
    ) -> NetworkResult<bool> {
        let Some((portal, event_id)) = self.live_target(chat, up_to).await? else {
            return Ok(false);
        };
        if self
            .store()?
            .is_login_remote_user(&reader.to_string())
            .await?
        {
            return Ok(false);
        }
        self.ghost(reader)?
            .read_receipt(&portal.room_id, &event_id)
            .await?;
        Ok(true)
    }
}
