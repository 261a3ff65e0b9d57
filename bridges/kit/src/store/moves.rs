//! Moving a portal or a management room to the room that replaces it after a room upgrade.

use sqlx::Row;

use super::{BridgeStore, NetworkResult};

/// What a room is to the bridge, before it moves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RoomRoles {
    /// The chat it is the portal of.
    pub(crate) portal_of: Option<String>,
    /// The user it is the management room of.
    pub(crate) management_of: Option<String>,
}

impl RoomRoles {
    pub(crate) fn any(&self) -> bool {
        self.portal_of.is_some() || self.management_of.is_some()
    }
}

impl BridgeStore {
    /// What `room_id` is to the bridge: a portal, a management room, both or neither.
    pub(crate) async fn room_roles(&self, room_id: &str) -> NetworkResult<RoomRoles> {
        let portal = sqlx::query(
            "SELECT chat_id FROM bridge_portals WHERE appservice = $1 AND room_id = $2",
        )
        .bind(&self.appservice)
        .bind(room_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(RoomRoles {
            portal_of: portal.map(|r| r.get(0)),
            management_of: self.management_owner(room_id).await?,
        })
    }

    /// Points the portal and the management room of `old` at `new`, in one commit. The
    /// message map keeps its rows: the events it names stay in `old`, and it is keyed by chat,
    /// so the portal finds them still. `false` when `old` was neither (moved already).
    pub(crate) async fn move_room(&self, old: &str, new: &str) -> NetworkResult<bool> {
        let mut tx = self.store.begin().await?;
        let mut moved = 0;
        for table in ["bridge_portals", "bridge_management_rooms"] {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET room_id = $3 WHERE appservice = $1 AND room_id = $2"
            )))
            .bind(&self.appservice)
            .bind(old)
            .bind(new)
            .execute(&mut *tx)
            .await?;
            moved += done.rows_affected();
        }
        tx.commit().await?;
        Ok(moved > 0)
    }

    /// The room a mapped Matrix event was sent in.
    pub(crate) async fn room_of_event(&self, event_id: &str) -> NetworkResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT room_id FROM bridge_messages WHERE appservice = $1 AND event_id = $2",
        )
        .bind(&self.appservice)
        .bind(event_id)
        .fetch_optional(self.store.pool())
        .await?)
    }
}
