//! What differs between a store this process alone writes (SQLite) and one that processes
//! share (PostgreSQL), in one place.
//!
//! Where this process is the store's only writer, what it holds in memory stays true, and the
//! queues lean on that for speed: received transactions go through the journal and are
//! answered before they reach the database (`store/journal.rs`); committed items are handed
//! to their rooms' workers in memory instead of read back; a handler that awaits a send on an
//! idle queue sends it itself, with no outbox row; "done" marks are written behind; and the
//! caches of ghosts and memberships hold all the store knows, so a miss is never asked of it.
//! Where processes share the store, another may have written anything since: the store is
//! asked, a send goes through the outbox unless this process's outbox worker holds the room's
//! lease, idle (`Lanes::hold`), and a worker writes its marks before it lets go of a room. The queues ask the [`Mode`] chosen when the appservice is built, never the
//! backend.

use std::{collections::HashSet, time::Duration};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{Backend, Membership, Store};
use crate::Result;

/// How the queues use their store, chosen once per appservice ([`Mode::choose`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A SQLite file: this process alone writes it, and received transactions go through its
    /// journal.
    Journaled,
    /// This process alone writes the store but keeps no journal: an in-memory SQLite store, or
    /// a second appservice on a file whose journal the first one took.
    Alone,
    /// PostgreSQL: processes share the store, which alone knows what is true.
    Shared,
}

/// What the caches start with: ghosts registered, and `(room, user)` joined.
pub(crate) type KnownUsers = (HashSet<OwnedUserId>, HashSet<(OwnedRoomId, OwnedUserId)>);

impl Mode {
    /// The mode for `store`. Claims its journal, if it has one nobody claimed: the first
    /// appservice built on a store commits what it appends.
    pub(crate) fn choose(store: &Store) -> Mode {
        match store.backend {
            Backend::Postgres => Mode::Shared,
            _ if store.claim_journal() => Mode::Journaled,
            _ => Mode::Alone,
        }
    }

    /// Whether received transactions are appended to the journal and answered, then committed
    /// in batches by a task of their own; otherwise each is committed before it is answered.
    pub(crate) fn journaled(self) -> bool {
        self == Mode::Journaled
    }

    /// Whether what this process did is all the queues' new work: committed items may be
    /// handed to their workers in memory, and an awaited send made directly when its queue is
    /// idle. Not where another process may have queued work meanwhile (there a direct send
    /// needs the queue's lease, held here by an idle worker: `Lanes::hold`).
    pub(crate) fn hand_off(self) -> bool {
        self != Mode::Shared
    }

    /// Whether a request this process queued may be sent by another (which took the room's
    /// queue): its outcome is then looked for in the store too, not only awaited from this
    /// process's worker.
    pub(crate) fn others_send(self) -> bool {
        self == Mode::Shared
    }

    /// Whether a queue's worker holds a lease that other processes respect, renewed while it
    /// works (even inside one long handler) and given up, its work dropped, when it cannot be
    /// renewed. Alone in a store there is nobody to keep out.
    pub(crate) fn leases(self) -> bool {
        self == Mode::Shared
    }

    /// How often the store is scanned for work nobody announced. Alone, that is only work a
    /// crash left: a safety net. Shared, other processes leave work behind or let go of rooms.
    pub(crate) fn scan_interval(self) -> Duration {
        match self {
            Mode::Shared => Duration::from_secs(2),
            Mode::Journaled | Mode::Alone => Duration::from_secs(30),
        }
    }

    /// Whether what the caches say may be out of date: another process may have seen a user
    /// leave, and told this one too late (`store/notices.rs`). A send refused then is retried
    /// once after a join.
    pub(crate) fn stale_caches(self) -> bool {
        self == Mode::Shared
    }

    /// Whether the caches of ghosts and memberships hold all the store knows, so that a miss
    /// in them is a miss in the store.
    fn caches_complete(self) -> bool {
        self != Mode::Shared
    }

    /// What the caches start with: all the store knows when they are complete, nothing
    /// otherwise (the store is asked on each miss).
    pub(crate) async fn known_users(self, store: &Store) -> Result<KnownUsers> {
        let (mut registered, mut joined) = (HashSet::new(), HashSet::new());
        if !self.caches_complete() {
            return Ok((registered, joined));
        }
        for user in store.registered_ghosts().await? {
            if let Ok(user) = OwnedUserId::try_from(user) {
                registered.insert(user);
            }
        }
        for (room, user) in store.joined_memberships().await? {
            if let (Ok(room), Ok(user)) = (OwnedRoomId::try_from(room), OwnedUserId::try_from(user))
            {
                joined.insert((room, user));
            }
        }
        Ok((registered, joined))
    }

    /// Whether the store records `user_id` as registered, asked on a miss of the cache.
    pub(crate) async fn registered(self, store: &Store, user_id: &UserId) -> Result<bool> {
        if self.caches_complete() {
            return Ok(false);
        }
        Ok(store
            .ghost(user_id.as_str())
            .await?
            .is_some_and(|g| g.registered))
    }

    /// Whether the store records `user_id` as joined to `room_id`, asked on a miss of the
    /// cache.
    pub(crate) async fn joined(
        self,
        store: &Store,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<bool> {
        if self.caches_complete() {
            return Ok(false);
        }
        let membership = store.membership(room_id.as_str(), user_id.as_str()).await?;
        Ok(membership == Some(Membership::Join))
    }

    /// Records that the inbox items `seqs` were handled. Alone, the marks are handed to
    /// `write_behind`: a mark lost in a crash costs a repeat, and this process is the only one
    /// that could find the items pending. Shared, they are written before the worker lets go of
    /// the room, or another process would find the items pending and handle them again.
    pub(crate) async fn mark_done(
        self,
        store: &Store,
        seqs: Vec<i64>,
        write_behind: impl FnOnce(Vec<i64>),
    ) {
        if self != Mode::Shared {
            write_behind(seqs);
            return;
        }
        for attempt in 0..5 {
            match store.inbox_done_many(&seqs).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(items = seqs.len(), %error, attempt, "could not mark items done");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
}
