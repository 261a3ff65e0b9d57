//! What the appservice knows of its own users' memberships: kept from the events it receives
//! and the joins it makes, cached in memory and written behind to the store.

use ruma::{RoomId, UserId};
use serde::Deserialize;

use super::{AppInner, Appservice};

impl Appservice {
    /// Records a membership event of one of our users, and joins the bot on invite when the
    /// router asks for it.
    pub(super) async fn track_membership(&self, event: &crate::transaction::TimelineEvent) {
        #[derive(Deserialize)]
        struct Member {
            content: MemberContent,
        }
        #[derive(Deserialize)]
        struct MemberContent {
            membership: String,
        }
        let Some(state_key) = &event.state_key else {
            return;
        };
        let Ok(user_id) = UserId::parse(state_key.as_str()) else {
            return;
        };
        if !self.is_own_user(&user_id) {
            return;
        }
        let Ok(member) = serde_json::from_str::<Member>(event.json.get()) else {
            return;
        };
        let membership = member.content.membership;
        self.inner
            .record_membership(&event.room_id, &user_id, &membership);
        self.inner.join_settled(&event.room_id, &user_id);
        if membership == "invite"
            && user_id == self.inner.bot_user_id
            && self.inner.router.options.accept_invites
        {
            match self.bot().join(&event.room_id).await {
                Ok(()) => tracing::info!(room_id = %event.room_id, "joined on invite"),
                Err(error) => {
                    tracing::warn!(room_id = %event.room_id, %error, "could not join on invite")
                }
            }
        }
    }
}

impl AppInner {
    /// Whether a join of `user_id` into `room_id` is already queued; marks it queued if not.
    pub(crate) fn join_queued(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let mut queued = self.joins_queued.lock().unwrap_or_else(|e| e.into_inner());
        !queued.insert((room_id.to_owned(), user_id.to_owned()))
    }

    /// Records a membership of one of our users, in the cache now and in the store soon.
    pub(crate) fn record_membership(&self, room_id: &RoomId, user_id: &UserId, membership: &str) {
        self.writeback.push(crate::writeback::Write::Membership {
            room_id: room_id.to_string(),
            user_id: user_id.to_string(),
            membership: membership.to_owned(),
        });
        self.set_joined_cached(room_id, user_id, membership == "join");
    }

    /// Whether a join of `user_id` into `room_id` is queued.
    pub(crate) fn join_is_queued(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let queued = self.joins_queued.lock().unwrap_or_else(|e| e.into_inner());
        queued.contains(&(room_id.to_owned(), user_id.to_owned()))
    }

    /// Forgets a queued join once its outcome is known.
    pub(crate) fn join_settled(&self, room_id: &RoomId, user_id: &UserId) {
        let mut queued = self.joins_queued.lock().unwrap_or_else(|e| e.into_inner());
        queued.remove(&(room_id.to_owned(), user_id.to_owned()));
    }

    pub(crate) fn is_joined_cached(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        joined.contains(&(room_id.to_owned(), user_id.to_owned()))
    }

    /// Keeps the cache in step with every membership the store records.
    pub(crate) fn set_joined_cached(&self, room_id: &RoomId, user_id: &UserId, joined: bool) {
        let mut cache = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        let key = (room_id.to_owned(), user_id.to_owned());
        if joined {
            cache.insert(key);
        } else {
            cache.remove(&key);
        }
    }
}
