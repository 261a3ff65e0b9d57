use sqlx::Row;

use super::Store;
use crate::Result;

/// One of our users' membership in a room: the states the spec names, stored as its strings
/// (`join`, `invite`, `leave`, `ban`, `knock`).
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#mroommember>
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Membership {
    /// In the room.
    Join,
    /// Invited.
    Invite,
    /// Left, or was kicked.
    Leave,
    /// Banned.
    Ban,
    /// Asked to join.
    Knock,
}

impl Membership {
    /// The spec's string, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Join => "join",
            Membership::Invite => "invite",
            Membership::Leave => "leave",
            Membership::Ban => "ban",
            Membership::Knock => "knock",
        }
    }

    /// Reads the spec's string; `None` for a state the spec does not name.
    pub fn parse(membership: &str) -> Option<Self> {
        Some(match membership {
            "join" => Membership::Join,
            "invite" => Membership::Invite,
            "leave" => Membership::Leave,
            "ban" => Membership::Ban,
            "knock" => Membership::Knock,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    #[cfg(test)]
    pub(crate) async fn set_ghost_registered(&self, user_id: &str) -> Result<()> {
        sqlx::query(SET_REGISTERED)
            .bind(user_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Remembers a ghost's display name.
    pub(crate) async fn set_ghost_display_name(
        &self,
        user_id: &str,
        name: Option<&str>,
    ) -> Result<()> {
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
    pub(crate) async fn set_ghost_avatar_url(
        &self,
        user_id: &str,
        url: Option<&str>,
    ) -> Result<()> {
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
    pub(crate) async fn membership(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<Membership>> {
        let row =
            sqlx::query("SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        Ok(row.and_then(|r| Membership::parse(r.get(0))))
    }

    /// Records a membership.
    #[cfg(test)]
    pub(crate) async fn set_membership(
        &self,
        room_id: &str,
        user_id: &str,
        membership: Membership,
    ) -> Result<()> {
        sqlx::query(SET_MEMBERSHIP)
            .bind(room_id)
            .bind(user_id)
            .bind(membership.as_str())
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Every ghost recorded as registered.
    pub(crate) async fn registered_ghosts(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM ghosts WHERE registered = 1")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Every `(room, user)` recorded as joined.
    pub(crate) async fn joined_memberships(&self) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT room_id, user_id FROM memberships WHERE membership = 'join'")
                .fetch_all(&mut *self.conn().await?)
                .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
