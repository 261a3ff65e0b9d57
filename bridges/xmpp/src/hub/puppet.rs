//! What the hub keeps of Matrix users on XMPP (their JIDs, their own accounts' connections and
//! what those hear), and of the component's queue while a connection holds it.

use tokio::{
    sync::{OwnedMutexGuard, mpsc},
    task::JoinHandle,
};
use tokio_xmpp::{
    Stanza,
    jid::{BareJid, FullJid},
    parsers::message::Message,
};
use trestle::ruma::OwnedUserId;
use trestle_bridge::{BridgeError, NetworkResult};

/// The resource of every JID the bridge sends as: one per Matrix user, so one occupant each.
const RESOURCE: &str = "matrix";

/// A Matrix user's presence on XMPP: their JID on the component (the kit's connection of
/// their login). Sending goes through the hub's one component stream.
#[derive(Debug)]
pub struct Puppet {
    /// The Matrix user.
    pub user: OwnedUserId,
    /// Their JID on the component.
    pub jid: BareJid,
    /// The full JID they send from and join rooms as.
    pub full: FullJid,
    /// For a login with their own XMPP account (module `accounts`), its connection.
    pub account: Option<Account>,
}

/// The bridge's client connection of a user's own XMPP account (module `accounts`); it ends
/// when dropped.
#[derive(Debug)]
pub struct Account {
    /// The account's JID.
    pub jid: BareJid,
    task: JoinHandle<()>,
}

impl Account {
    /// The connection of `jid`, run by `task`.
    pub fn new(jid: BareJid, task: JoinHandle<()>) -> Self {
        Account { jid, task }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A message a Matrix user sent from another of their own XMPP clients, as the server copied it
/// to the bridge's connection of their account (a sent carbon, XEP-0280).
#[derive(Debug)]
pub struct OwnMessage {
    /// The Matrix user.
    pub user: OwnedUserId,
    /// Their XMPP account.
    pub account: BareJid,
    /// The message as they sent it.
    pub message: Message,
}

/// The component's queue while a connection holds it: what is left in it when the connection
/// ends is dropped, since this process stopped holding the component and the next holder does
/// what is still to do (a clean stop sends it first).
pub struct Leftovers(pub OwnedMutexGuard<mpsc::UnboundedReceiver<Stanza>>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let mut dropped = 0;
        while self.0.try_recv().is_ok() {
            dropped += 1;
        }
        if dropped > 0 {
            tracing::info!(
                dropped,
                "stanzas left unsent when the component's connection ended"
            );
        }
    }
}

impl Puppet {
    /// The puppet of `user`, whose JID is `jid`.
    pub fn new(user: OwnedUserId, jid: BareJid) -> NetworkResult<Self> {
        let full = jid
            .with_resource_str(RESOURCE)
            .map_err(|e| BridgeError::BadRequest(format!("{jid}: {e}")))?;
        Ok(Puppet {
            user,
            jid,
            full,
            account: None,
        })
    }
}
