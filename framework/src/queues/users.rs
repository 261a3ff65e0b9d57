//! What the appservice knows of its own users: which ghosts are registered, which rooms they
//! are in, which joins are queued. Kept from the events it receives and the requests it makes,
//! cached in memory and written behind to the store; on a miss the [`Mode`] says whether the
//! store can know more.

use crate::sync::MutexExt;
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    api::{client::account::register, error::ErrorKind},
};

use super::writeback::{Write, WriteBack};
use crate::{
    Result, Store,
    client::HomeserverClient,
    store::{Membership, Mode, Notice},
};

/// The one owner of the caches of ghosts and memberships.
pub(crate) struct Users {
    bot_user_id: OwnedUserId,
    /// The registration's `sender_localpart` user: the bot, or a hidden user that never acts.
    sender: OwnedUserId,
    store: Store,
    mode: Mode,
    writeback: Arc<WriteBack>,
    registered: tokio::sync::Mutex<HashSet<OwnedUserId>>,
    joins_queued: Mutex<HashSet<(OwnedRoomId, OwnedUserId)>>,
    /// Rooms our users are known to be in: saves a store read on every send. By room, then
    /// user, so that a send looks it up without copying either id.
    joined: Mutex<HashMap<OwnedRoomId, HashSet<OwnedUserId>>>,
}

impl Users {
    /// The caches, filled with what the store knows where the mode says that is all of it.
    pub(crate) async fn load(
        bot_user_id: OwnedUserId,
        sender: OwnedUserId,
        store: Store,
        mode: Mode,
        writeback: Arc<WriteBack>,
    ) -> Result<Self> {
        let (registered, known) = mode.known_users(&store).await?;
        let mut joined: HashMap<OwnedRoomId, HashSet<OwnedUserId>> = HashMap::new();
        for (room_id, user_id) in known {
            joined.entry(room_id).or_default().insert(user_id);
        }
        Ok(Users {
            bot_user_id,
            sender,
            store,
            mode,
            writeback,
            registered: tokio::sync::Mutex::new(registered),
            joins_queued: Mutex::default(),
            joined: Mutex::new(joined),
        })
    }

    /// The bot's user id.
    pub(crate) fn bot_user_id(&self) -> &OwnedUserId {
        &self.bot_user_id
    }

    /// The registration's `sender_localpart` user.
    pub(crate) fn sender(&self) -> &OwnedUserId {
        &self.sender
    }

    /// Registers `user_id` on the homeserver unless that was already done. The sender exists
    /// from the homeserver's start; a bot apart from it is registered like a ghost.
    /// `M_USER_IN_USE` means the user was registered before.
    pub(crate) async fn ensure_registered(
        &self,
        client: &HomeserverClient,
        user_id: &OwnedUserId,
    ) -> Result<()> {
        if *user_id == self.sender || self.registered.lock().await.contains(user_id) {
            return Ok(());
        }
        if !self.mode.registered(&self.store, user_id).await? {
            let mut request = register::v3::Request::new();
            request.username = Some(user_id.localpart().to_owned());
            request.login_type = Some(register::LoginType::ApplicationService);
            request.inhibit_login = true;
            // As the appservice itself: the user to assert does not exist yet.
            match client.send_as_appservice(request).await {
                Ok(_) => tracing::debug!(%user_id, "registered ghost"),
                Err(e) if matches!(e.kind(), Some(ErrorKind::UserInUse)) => {}
                Err(e) => return Err(e),
            }
            self.writeback.push(Write::Registered(user_id.to_string()));
        }
        self.registered.lock().await.insert(user_id.clone());
        Ok(())
    }

    /// Forgets what the caches hold of what another process changed (see `store/notices.rs`):
    /// the store is asked next time. [`Notice::Missed`] forgets everything.
    pub(crate) async fn forget(&self, notice: &Notice) {
        match notice {
            Notice::Membership { room, user } => {
                let mut joined = self.joined.lock_unpoisoned();
                joined.retain(|r, users| {
                    if r.as_str() == room {
                        users.retain(|u| u.as_str() != user);
                    }
                    !users.is_empty()
                });
            }
            Notice::Ghost { user } => {
                self.registered.lock().await.retain(|u| u.as_str() != user);
            }
            Notice::Missed => {
                self.joined.lock_unpoisoned().clear();
                self.registered.lock().await.clear();
            }
            Notice::LeaseFreed
            | Notice::Handed { .. }
            | Notice::Pending { .. }
            | Notice::Wanted { .. }
            | Notice::Yielded { .. }
            | Notice::Outcome { .. } => {}
        }
    }

    /// Forgets that `user_id` is in `room_id`, after the homeserver said otherwise.
    pub(crate) fn forget_joined(&self, room_id: &RoomId, user_id: &UserId) {
        self.set_joined_cached(room_id, user_id, false);
    }

    /// Whether `user_id` is in `room_id`, as far as we know.
    pub(crate) async fn is_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        if self.is_joined_cached(room_id, user_id) {
            return Ok(true);
        }
        let joined = self.mode.joined(&self.store, room_id, user_id).await?;
        if joined {
            self.set_joined_cached(room_id, user_id, true);
        }
        Ok(joined)
    }

    /// Whether a join of `user_id` into `room_id` is already queued; marks it queued if not.
    pub(crate) fn join_queued(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let mut queued = self.joins_queued.lock_unpoisoned();
        !queued.insert((room_id.to_owned(), user_id.to_owned()))
    }

    /// Records a membership of one of our users, in the cache now and in the store soon.
    pub(crate) fn record_membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        membership: Membership,
    ) {
        self.writeback.push(Write::Membership {
            room_id: room_id.to_string(),
            user_id: user_id.to_string(),
            membership,
        });
        self.set_joined_cached(room_id, user_id, membership == Membership::Join);
    }

    /// Whether a join of `user_id` into `room_id` is queued.
    pub(crate) fn join_is_queued(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let queued = self.joins_queued.lock_unpoisoned();
        // Nearly always empty: asked before every awaited send, without copying the ids then.
        !queued.is_empty() && queued.contains(&(room_id.to_owned(), user_id.to_owned()))
    }

    /// Forgets a queued join once its outcome is known.
    pub(crate) fn join_settled(&self, room_id: &RoomId, user_id: &UserId) {
        let mut queued = self.joins_queued.lock_unpoisoned();
        queued.remove(&(room_id.to_owned(), user_id.to_owned()));
    }

    fn is_joined_cached(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let joined = self.joined.lock_unpoisoned();
        joined
            .get(room_id)
            .is_some_and(|users| users.contains(user_id))
    }

    /// Keeps the cache in step with every membership the store records.
    fn set_joined_cached(&self, room_id: &RoomId, user_id: &UserId, joined: bool) {
        let mut cache = self.joined.lock_unpoisoned();
        if joined {
            cache
                .entry(room_id.to_owned())
                .or_default()
                .insert(user_id.to_owned());
        } else if let Some(users) = cache.get_mut(room_id) {
            users.remove(user_id);
            if users.is_empty() {
                cache.remove(room_id);
            }
        }
    }
}
