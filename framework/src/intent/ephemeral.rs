//! Typing notifications, read receipts, read markers and presence, sent as the bot or a ghost.
//!
//! These are ephemeral: a typing notification that arrives a minute late is wrong, not late, and
//! a receipt is superseded by the next one. So they skip the durable outbox and are sent once,
//! directly, with the user's identity asserted; a failure is returned to the caller and not
//! retried. The user is registered first, and for the room-bound ones joined (through the
//! outbox, like every join) unless the store knows it is in the room already.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#typing-notifications>,
//! <https://spec.matrix.org/v1.16/client-server-api/#receipts>,
//! <https://spec.matrix.org/v1.16/client-server-api/#fully-read-markers>,
//! <https://spec.matrix.org/v1.16/client-server-api/#presence>

use std::time::Duration;

use ruma::{
    EventId, RoomId,
    api::{
        AppserviceUserIdentity,
        client::{
            presence::set_presence,
            read_marker::set_read_marker,
            receipt::create_receipt::{self, v3::ReceiptType},
            typing::create_typing_event::{
                self,
                v3::{Typing, TypingInfo},
            },
        },
    },
    presence::PresenceState,
};

use super::Intent;
use crate::Result;

/// How long a typing notification lasts when no timeout is given; clients usually renew it
/// every few seconds while the user types.
const DEFAULT_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

impl Intent {
    /// The identity asserted on direct requests: this user, and its device if one was set.
    fn identity(&self) -> AppserviceUserIdentity<'_> {
        let mut identity = AppserviceUserIdentity::new(&self.user_id);
        identity.device_id = self.device_id.as_deref();
        identity
    }

    /// Registers the user and joins `room_id` unless already done, before an ephemeral send.
    async fn ready_in(&self, room_id: &RoomId) -> Result<()> {
        self.ensure_registered().await?;
        self.ensure_joined(room_id).await
    }

    /// Starts (`typing: true`) or stops showing the user as typing in a room. A notification
    /// lasts `timeout` (30 seconds if `None`) unless renewed or stopped first.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidtypinguserid>
    pub async fn typing(
        &self,
        room_id: &RoomId,
        typing: bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.ready_in(room_id).await?;
        let state = if typing {
            Typing::Yes(TypingInfo::new(timeout.unwrap_or(DEFAULT_TYPING_TIMEOUT)))
        } else {
            Typing::No
        };
        let request =
            create_typing_event::v3::Request::new(self.user_id.clone(), room_id.to_owned(), state);
        self.app.client().send(request, self.identity()).await?;
        Ok(())
    }

    /// Marks `event_id` and everything before it as read by the user, with a public `m.read`
    /// receipt that other members see.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid>
    pub async fn read_receipt(&self, room_id: &RoomId, event_id: &EventId) -> Result<()> {
        self.ready_in(room_id).await?;
        let request = create_receipt::v3::Request::new(
            room_id.to_owned(),
            ReceiptType::Read,
            event_id.to_owned(),
        );
        self.app.client().send(request, self.identity()).await?;
        Ok(())
    }

    /// Moves the user's fully-read marker (`m.fully_read`, private to the user: where a client
    /// shows "new messages" from) to `fully_read`, and when `read` is given also sends an
    /// `m.read` receipt for it, in one request.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidread_markers>
    pub async fn read_marker(
        &self,
        room_id: &RoomId,
        fully_read: &EventId,
        read: Option<&EventId>,
    ) -> Result<()> {
        self.ready_in(room_id).await?;
        let mut request = set_read_marker::v3::Request::new(room_id.to_owned());
        request.fully_read = Some(fully_read.to_owned());
        request.read_receipt = read.map(EventId::to_owned);
        self.app.client().send(request, self.identity()).await?;
        Ok(())
    }

    /// Sets the user's presence (`online`, `unavailable` or `offline`) and status message.
    /// The homeserver may have presence disabled; then this succeeds and nobody sees it.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3presenceuseridstatus>
    pub async fn set_presence(
        &self,
        presence: PresenceState,
        status_msg: Option<&str>,
    ) -> Result<()> {
        self.ensure_registered().await?;
        let mut request = set_presence::v3::Request::new(self.user_id.clone(), presence);
        request.status_msg = status_msg.map(str::to_owned);
        self.app.client().send(request, self.identity()).await?;
        Ok(())
    }
}
