//! Direct chats: a private conversation of one Matrix user with one remote user, as a portal
//! whose room the ghost and the user share.

use ruma::{
    UserId,
    api::{AppserviceUserIdentity, client::room::create_room},
};
use serde_json::Value;
use trestle::transaction::TimelineEvent;

use super::{BridgeHandle, Network, NetworkResult, PortalRef, store::PortalRow};

impl<N: Network> BridgeHandle<N> {
    /// The portal of the direct chat `chat` between the remote user `remote` and the Matrix
    /// user `user`, made now if it has none: a private room created by `remote`'s ghost, with
    /// `user` invited to it as a direct chat (`is_direct`). For a network's private message
    /// that has no room yet; then bridge it with [`BridgeHandle::remote_message`].
    pub async fn ensure_direct_portal(
        &self,
        chat: &N::ChatId,
        remote: &N::UserId,
        user: &UserId,
    ) -> NetworkResult<PortalRef<N>> {
        self.portal_or_make(chat, false, || async {
            let ghost = self.ghost(remote)?;
            ghost.ensure_registered().await?;
            let info = self.network().chat_info(chat).await?;
            let mut request = create_room::v3::Request::new();
            request.invite = vec![user.to_owned()];
            request.is_direct = true;
            request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
            request.initial_state = self.initial_bridge_state(chat, &info, ghost.user_id())?;
            let created = self
                .app()?
                .client()
                .send(request, AppserviceUserIdentity::new(ghost.user_id()))
                .await?;
            Ok(created.room_id)
        })
        .await
    }

    /// A ghost was invited. To the room that replaces a portal of its (a room upgrade), it
    /// follows. With `is_direct`, and a direct chat the network has for the two, the room
    /// becomes that chat's portal and the ghost joins; otherwise it declines.
    pub(crate) async fn ghost_invited(
        &self,
        event: &TimelineEvent,
        ghost: &UserId,
        json: &Value,
    ) -> NetworkResult<()> {
        if self.invited_to_replacement(event, ghost, json).await? {
            return Ok(());
        }
        let app = self.app()?;
        let intent = app.intent(ghost);
        let remote = self.network().user_for_ghost(ghost.localpart());
        let chat = remote
            .filter(|_| json["content"]["is_direct"].as_bool() == Some(true))
            .and_then(|remote| self.network().direct_chat(&event.sender, &remote));
        let Some(chat) = chat else {
            intent.leave(&event.room_id).await?;
            return Ok(());
        };
        intent.join(&event.room_id).await?;
        let row = PortalRow {
            chat_id: chat.to_string(),
            room_id: event.room_id.to_string(),
            relay: false,
        };
        // A chat that has a room already keeps it; this room stays an ordinary one.
        if self.store()?.insert_portal(&row).await? {
            tracing::info!(chat = %chat, room_id = %event.room_id, "a Matrix user started a direct chat");
        }
        Ok(())
    }
}
