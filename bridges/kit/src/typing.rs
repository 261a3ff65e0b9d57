//! Matrix typing notifications in portals, passed to networks that show typing.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#mtyping>

use std::collections::HashSet;
use trestle::sync::MutexExt;

use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use trestle::transaction::EphemeralEvent;

use super::{BridgeHandle, MatrixTyping, Network, NetworkResult};

#[derive(Deserialize)]
struct Typing {
    content: TypingContent,
}

#[derive(Deserialize)]
struct TypingContent {
    #[serde(default)]
    user_ids: Vec<OwnedUserId>,
}

impl<N: Network> BridgeHandle<N> {
    /// An `m.typing` event lists who types now; the network hears who started and who stopped
    /// since the last one, for each user who has someone to speak for them.
    pub(crate) async fn on_typing(&self, event: &EphemeralEvent) -> NetworkResult<()> {
        let Some(room_id) = &event.room_id else {
            return Ok(());
        };
        let Some(portal) = self.portal_for_room(room_id).await? else {
            return Ok(());
        };
        let app = self.app()?;
        let typing: Typing = serde_json::from_str(event.json.get())?;
        let now: HashSet<OwnedUserId> = typing
            .content
            .user_ids
            .into_iter()
            .filter(|u| !app.is_own_user(u))
            .collect();
        let before = self.swap_typing(room_id, now.clone());
        let started = now.difference(&before).map(|u| (u, true));
        let stopped = before.difference(&now).map(|u| (u, false));
        for (user, typing) in started.chain(stopped) {
            let Some(speaker) = self.speaker_now(&portal, user, true).await? else {
                continue;
            };
            self.network()
                .typing(MatrixTyping {
                    portal: &portal,
                    via: speaker.via(),
                    typing,
                })
                .await?;
        }
        Ok(())
    }

    /// Records who types in a room now; returns who did before.
    fn swap_typing(
        &self,
        room_id: &OwnedRoomId,
        now: HashSet<OwnedUserId>,
    ) -> HashSet<OwnedUserId> {
        let mut typing = self.shared.typing.lock_unpoisoned();
        if now.is_empty() {
            typing.remove(room_id).unwrap_or_default()
        } else {
            typing.insert(room_id.clone(), now).unwrap_or_default()
        }
    }
}
