use std::sync::Arc;

use ruma::{EventId, RoomId, UserId};

use super::Command;
use crate::{Appservice, encryption::SenderTrust, transaction::Incoming};

/// Everything a handler's extractors can draw from: the item being handled, the appservice it
/// arrived at, and the command the route matched. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventContext {
    pub(crate) app: Appservice,
    pub(crate) incoming: Arc<Incoming>,
    pub(crate) command_prefix: Arc<str>,
    pub(crate) command: Option<Arc<Command>>,
    pub(crate) item_key: Arc<str>,
    pub(crate) sender_trust: Option<SenderTrust>,
    pub(crate) lease_take: u64,
}

impl EventContext {
    pub(crate) fn new(
        app: Appservice,
        incoming: Arc<Incoming>,
        command_prefix: Arc<str>,
        item_key: Arc<str>,
        sender_trust: Option<SenderTrust>,
        lease_take: u64,
    ) -> Self {
        EventContext {
            app,
            incoming,
            command_prefix,
            command: None,
            item_key,
            sender_trust,
            lease_take,
        }
    }

    /// A key that is the same each time this item is handled — after a crash it may be handled
    /// again — and different for every other item.
    pub fn idempotency_key(&self) -> &str {
        &self.item_key
    }

    /// Which take of its room's inbox lease this process handles the item under: a number that
    /// changes each time this process takes the room's lease, and stays the same for the items
    /// of the room handled here under one take. A handler that keeps what it learned of a room
    /// from outside this process (what another process stored for it, say) can trust it while
    /// the take stays: where processes share a PostgreSQL store (`docs/scaling.md`), a room
    /// whose take changed may have been another process's since its previous item here, which
    /// may have handled its events meanwhile.
    ///
    /// A process keeps a room's lease while it has work, and a moment after; a room idle longer
    /// is given back, and taken again (a new take) with its next item. Where the store is this
    /// process's alone (SQLite), the process holds every room from its start, and the take is
    /// the same for every item. Items of no room (to-device messages, device lists) share one
    /// queue, and its lease.
    pub fn lease_take(&self) -> u64 {
        self.lease_take
    }

    pub(crate) fn for_route(&self, command: Option<Arc<Command>>) -> Self {
        EventContext {
            command,
            ..self.clone()
        }
    }

    /// The item being handled.
    pub fn incoming(&self) -> &Incoming {
        &self.incoming
    }

    /// How far the sender's device is trusted, for an event that arrived encrypted and was
    /// decrypted; `None` for anything else.
    pub fn sender_trust(&self) -> Option<SenderTrust> {
        self.sender_trust
    }

    /// The appservice the item arrived at.
    pub fn appservice(&self) -> &Appservice {
        &self.app
    }

    /// The event id of a timeline event.
    pub fn event_id(&self) -> Option<&EventId> {
        match &*self.incoming {
            Incoming::Timeline(e) => Some(&e.event_id),
            _ => None,
        }
    }

    /// The room the item belongs to.
    pub fn room_id(&self) -> Option<&RoomId> {
        self.incoming.queue_key().map(|r| &**r)
    }

    /// Who sent the item.
    pub fn sender(&self) -> Option<&UserId> {
        match &*self.incoming {
            Incoming::Timeline(e) => Some(&e.sender),
            Incoming::Ephemeral(e) => e.sender.as_deref(),
            Incoming::ToDevice(e) => Some(&e.sender),
            Incoming::DeviceLists(_) => None,
        }
    }
}
