use sqlx::Row;

use super::Store;
use crate::Result;

/// What the store remembers about a ghost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GhostRecord {
    /// Whether the user was registered on the homeserver.
    pub registered: bool,
    /// The display name last set.
    pub display_name: Option<String>,
    /// The avatar URL last set.
    pub avatar_url: Option<String>,
}

pub(super) const SET_REGISTERED: &str = "INSERT INTO ghosts (user_id, registered) VALUES ($1, 1)
     ON CONFLICT (user_id) DO UPDATE SET registered = 1";

pub(super) const SET_MEMBERSHIP: &str =
    "INSERT INTO memberships (room_id, user_id, membership) VALUES ($1, $2, $3)
     ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership";

impl Store {
    /// What is known about a ghost.
    pub async fn ghost(&self, user_id: &str) -> Result<Option<GhostRecord>> {
        let row = sqlx::query(
            "SELECT registered, display_name, avatar_url FROM ghosts WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        Ok(row.map(|row| GhostRecord {
            registered: row.get::<i64, _>(0) != 0,
            display_name: row.get(1),
            avatar_url: row.get(2),
        }))
    }

    /// Remembers that a ghost is registered.
    pub async fn set_ghost_registered(&self, user_id: &str) -> Result<()> {
        sqlx::query(SET_REGISTERED)
            .bind(user_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Remembers a ghost's display name.
    pub async fn set_ghost_display_name(&self, user_id: &str, name: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO ghosts (user_id, display_name) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(user_id)
        .bind(name)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Remembers a ghost's avatar.
    pub async fn set_ghost_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO ghosts (user_id, avatar_url) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url",
        )
        .bind(user_id)
        .bind(url)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// The membership we last saw or made for `user_id` in `room_id`.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records a membership.
    pub async fn set_membership(
        &self,
        room_id: &str,
        user_id: &str,
        membership: &str,
    ) -> Result<()> {
        sqlx::query(SET_MEMBERSHIP)
            .bind(room_id)
            .bind(user_id)
            .bind(membership)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Every ghost recorded as registered.
    pub async fn registered_ghosts(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM ghosts WHERE registered = 1")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Every `(room, user)` recorded as joined.
    pub async fn joined_memberships(&self) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT room_id, user_id FROM memberships WHERE membership = 'join'")
                .fetch_all(&mut *self.conn().await?)
                .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
