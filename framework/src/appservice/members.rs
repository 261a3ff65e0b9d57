//! Memberships of the appservice's own users, as the events it receives tell them.

use ruma::UserId;
use serde::Deserialize;

use super::Appservice;
use crate::{queues::Op, store::Membership};

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
        let membership = Membership::parse(&member.content.membership);
        let users = &self.queues().core.users;
        if let Some(membership) = membership {
            users.record_membership(&event.room_id, &user_id, membership);
        }
        users.join_settled(&event.room_id, &user_id);
        if membership == Some(Membership::Invite)
            && user_id == *self.bot_user_id()
            && self.inner.router.options.accept_invites
        {
            let join = Op::Join {
                room_id: event.room_id.clone(),
            };
            match self.queues().run(self.bot_user_id(), None, join).await {
                Ok(_) => tracing::info!(room_id = %event.room_id, "joined on invite"),
                Err(error) => {
                    tracing::warn!(room_id = %event.room_id, %error, "could not join on invite")
                }
            }
        }
    }
}
