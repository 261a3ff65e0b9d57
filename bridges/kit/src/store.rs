//! The kit's tables: portals, the message map, logins and management rooms, each keyed by
//! the appservice id so several bridges can share one database.

use sqlx::Row;

use trestle::{
    Store,
    store::{Migration, now_ms},
};

use super::network::NetworkResult;

mod moves;
#[cfg(test)]
mod tests;

/// The kit's schema, applied with [`Store::migrate`] under the namespace `bridge`.
/// Version 1 of the schema. `BIGINT` is SQLite's `INTEGER` too, so one text serves both.
const SCHEMA_V1: &str = "
    CREATE TABLE bridge_portals (
        appservice TEXT NOT NULL, chat_id TEXT NOT NULL, room_id TEXT NOT NULL,
        relay BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, chat_id));
    CREATE UNIQUE INDEX bridge_portals_room ON bridge_portals (appservice, room_id);
    CREATE TABLE bridge_messages (
        appservice TEXT NOT NULL, chat_id TEXT NOT NULL, remote_id TEXT NOT NULL,
        room_id TEXT NOT NULL, event_id TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, chat_id, remote_id));
    CREATE INDEX bridge_messages_event ON bridge_messages (appservice, event_id);
    CREATE TABLE bridge_logins (
        appservice TEXT NOT NULL, user_id TEXT NOT NULL, login_id TEXT NOT NULL,
        remote_user TEXT NOT NULL, remote_name TEXT NOT NULL, data TEXT NOT NULL,
        state TEXT NOT NULL, state_reason TEXT, created_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, user_id, login_id));
    CREATE TABLE bridge_management_rooms (
        appservice TEXT NOT NULL, user_id TEXT NOT NULL, room_id TEXT NOT NULL,
        PRIMARY KEY (appservice, user_id))";

/// Version 2: who turned double puppeting on (a row per user; none is off).
const SCHEMA_V2: &str = "
    CREATE TABLE bridge_double_puppets (
        appservice TEXT NOT NULL, user_id TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, user_id))";

/// The kit's schema, applied with [`Store::migrate`] under the namespace `bridge`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: SCHEMA_V1,
        postgres: SCHEMA_V1,
    },
    Migration {
        version: 2,
        sqlite: SCHEMA_V2,
        postgres: SCHEMA_V2,
    },
];

/// A portal row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortalRow {
    pub(crate) chat_id: String,
    pub(crate) room_id: String,
    pub(crate) relay: bool,
}

/// A login row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoginRow {
    pub(crate) user_id: String,
    pub(crate) login_id: String,
    pub(crate) remote_user: String,
    pub(crate) remote_name: String,
    pub(crate) data: String,
    pub(crate) state: String,
    pub(crate) state_reason: Option<String>,
}

/// The kit's queries for one appservice.
#[derive(Clone, Debug)]
pub(crate) struct BridgeStore {
    pub(crate) store: Store,
    pub(crate) appservice: String,
}

fn portal_row(row: sqlx::any::AnyRow) -> PortalRow {
    PortalRow {
        chat_id: row.get(0),
        room_id: row.get(1),
        relay: row.get::<i64, _>(2) != 0,
    }
}

fn login_row(row: sqlx::any::AnyRow) -> LoginRow {
    LoginRow {
        user_id: row.get(0),
        login_id: row.get(1),
        remote_user: row.get(2),
        remote_name: row.get(3),
        data: row.get(4),
        state: row.get(5),
        state_reason: row.get(6),
    }
}

const LOGIN_COLUMNS: &str = "SELECT user_id, login_id, remote_user, remote_name, data, state, state_reason FROM bridge_logins";

impl BridgeStore {
    pub(crate) async fn migrate(&self) -> NetworkResult<()> {
        self.store.migrate("bridge", MIGRATIONS).await?;
        Ok(self
            .store
            .migrate("bridge_history", super::history::store::MIGRATIONS)
            .await?)
    }

    pub(crate) async fn portal_by_chat(&self, chat_id: &str) -> NetworkResult<Option<PortalRow>> {
        let row = sqlx::query(
            "SELECT chat_id, room_id, relay FROM bridge_portals WHERE appservice = $1 AND chat_id = $2",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.map(portal_row))
    }

    pub(crate) async fn portal_by_room(&self, room_id: &str) -> NetworkResult<Option<PortalRow>> {
        let row = sqlx::query(
            "SELECT chat_id, room_id, relay FROM bridge_portals WHERE appservice = $1 AND room_id = $2",
        )
        .bind(&self.appservice)
        .bind(room_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.map(portal_row))
    }

    pub(crate) async fn portals(&self) -> NetworkResult<Vec<PortalRow>> {
        let rows = sqlx::query(
            "SELECT chat_id, room_id, relay FROM bridge_portals WHERE appservice = $1 ORDER BY created_at, chat_id",
        )
        .bind(&self.appservice)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.into_iter().map(portal_row).collect())
    }

    /// Stores a portal; `false` if the chat or the room already has one.
    pub(crate) async fn insert_portal(&self, portal: &PortalRow) -> NetworkResult<bool> {
        let done = sqlx::query(
            "INSERT INTO bridge_portals (appservice, chat_id, room_id, relay, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&self.appservice)
        .bind(&portal.chat_id)
        .bind(&portal.room_id)
        .bind(i64::from(portal.relay))
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn set_relay(&self, room_id: &str, relay: bool) -> NetworkResult<bool> {
        let done = sqlx::query(
            "UPDATE bridge_portals SET relay = $3 WHERE appservice = $1 AND room_id = $2",
        )
        .bind(&self.appservice)
        .bind(room_id)
        .bind(i64::from(relay))
        .execute(self.store.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the portal of a room and its message map; `false` if it had none.
    pub(crate) async fn delete_portal(&self, room_id: &str) -> NetworkResult<bool> {
        let mut tx = self.store.begin().await?;
        sqlx::query("DELETE FROM bridge_messages WHERE appservice = $1 AND room_id = $2")
            .bind(&self.appservice)
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM bridge_portals WHERE appservice = $1 AND room_id = $2")
            .bind(&self.appservice)
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Maps a remote message to a Matrix event; the first mapping of a remote id wins.
    pub(crate) async fn map_message(
        &self,
        chat_id: &str,
        remote_id: &str,
        room_id: &str,
        event_id: &str,
    ) -> NetworkResult<()> {
        sqlx::query(
            "INSERT INTO bridge_messages (appservice, chat_id, remote_id, room_id, event_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .bind(remote_id)
        .bind(room_id)
        .bind(event_id)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn event_for_remote(
        &self,
        chat_id: &str,
        remote_id: &str,
    ) -> NetworkResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM bridge_messages WHERE appservice = $1 AND chat_id = $2 AND remote_id = $3",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .bind(remote_id)
        .fetch_optional(self.store.pool())
        .await?)
    }

    /// The remote id of a Matrix event, with its chat.
    pub(crate) async fn remote_for_event(
        &self,
        event_id: &str,
    ) -> NetworkResult<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT chat_id, remote_id FROM bridge_messages WHERE appservice = $1 AND event_id = $2",
        )
        .bind(&self.appservice)
        .bind(event_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub(crate) async fn upsert_login(&self, login: &LoginRow) -> NetworkResult<()> {
        sqlx::query(
            "INSERT INTO bridge_logins
               (appservice, user_id, login_id, remote_user, remote_name, data, state, state_reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (appservice, user_id, login_id) DO UPDATE SET
               remote_user = excluded.remote_user, remote_name = excluded.remote_name,
               data = excluded.data, state = excluded.state, state_reason = excluded.state_reason",
        )
        .bind(&self.appservice)
        .bind(&login.user_id)
        .bind(&login.login_id)
        .bind(&login.remote_user)
        .bind(&login.remote_name)
        .bind(&login.data)
        .bind(&login.state)
        .bind(login.state_reason.as_deref())
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Records a login's state; returns the previous one (`None` if there is no such login).
    pub(crate) async fn set_login_state(
        &self,
        user_id: &str,
        login_id: &str,
        state: &str,
        reason: Option<&str>,
    ) -> NetworkResult<Option<(String, Option<String>)>> {
        let mut tx = self.store.begin().await?;
        let previous = sqlx::query(
            "SELECT state, state_reason FROM bridge_logins
             WHERE appservice = $1 AND user_id = $2 AND login_id = $3",
        )
        .bind(&self.appservice)
        .bind(user_id)
        .bind(login_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1)));
        sqlx::query(
            "UPDATE bridge_logins SET state = $4, state_reason = $5
             WHERE appservice = $1 AND user_id = $2 AND login_id = $3",
        )
        .bind(&self.appservice)
        .bind(user_id)
        .bind(login_id)
        .bind(state)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(previous)
    }

    pub(crate) async fn logins_of(&self, user_id: &str) -> NetworkResult<Vec<LoginRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{LOGIN_COLUMNS} WHERE appservice = $1 AND user_id = $2 ORDER BY created_at, login_id"
        )))
        .bind(&self.appservice)
        .bind(user_id)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.into_iter().map(login_row).collect())
    }

    pub(crate) async fn all_logins(&self) -> NetworkResult<Vec<LoginRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{LOGIN_COLUMNS} WHERE appservice = $1 ORDER BY created_at, user_id, login_id"
        )))
        .bind(&self.appservice)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.into_iter().map(login_row).collect())
    }

    /// Whether some login is this remote user (its messages are the Matrix user's own).
    pub(crate) async fn is_login_remote_user(&self, remote_user: &str) -> NetworkResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM bridge_logins WHERE appservice = $1 AND remote_user = $2 LIMIT 1",
        )
        .bind(&self.appservice)
        .bind(remote_user)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(found.is_some())
    }

    /// The Matrix user with double puppeting on whose login is this remote user, if any.
    pub(crate) async fn double_puppet_of_remote(
        &self,
        remote_user: &str,
    ) -> NetworkResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT l.user_id FROM bridge_logins l JOIN bridge_double_puppets d
               ON d.appservice = l.appservice AND d.user_id = l.user_id
             WHERE l.appservice = $1 AND l.remote_user = $2
             ORDER BY l.created_at, l.user_id LIMIT 1",
        )
        .bind(&self.appservice)
        .bind(remote_user)
        .fetch_optional(self.store.pool())
        .await?)
    }

    /// Whether a user turned double puppeting on.
    pub(crate) async fn double_puppet_on(&self, user_id: &str) -> NetworkResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM bridge_double_puppets WHERE appservice = $1 AND user_id = $2",
        )
        .bind(&self.appservice)
        .bind(user_id)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(found.is_some())
    }

    /// Turns a user's double puppeting on or off; returns whether that changed anything.
    pub(crate) async fn set_double_puppet(&self, user_id: &str, on: bool) -> NetworkResult<bool> {
        let done = if on {
            sqlx::query(
                "INSERT INTO bridge_double_puppets (appservice, user_id, created_at)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&self.appservice)
            .bind(user_id)
            .bind(now_ms())
            .execute(self.store.pool())
            .await?
        } else {
            sqlx::query("DELETE FROM bridge_double_puppets WHERE appservice = $1 AND user_id = $2")
                .bind(&self.appservice)
                .bind(user_id)
                .execute(self.store.pool())
                .await?
        };
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the Matrix event of a remote message (deleted as its sender's own account: the
    /// deletion coming back from Matrix then finds nothing to delete on the network).
    pub(crate) async fn forget_message(&self, chat_id: &str, remote_id: &str) -> NetworkResult<()> {
        sqlx::query(
            "DELETE FROM bridge_messages WHERE appservice = $1 AND chat_id = $2 AND remote_id = $3",
        )
        .bind(&self.appservice)
        .bind(chat_id)
        .bind(remote_id)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_login(&self, user_id: &str, login_id: &str) -> NetworkResult<bool> {
        let done = sqlx::query(
            "DELETE FROM bridge_logins WHERE appservice = $1 AND user_id = $2 AND login_id = $3",
        )
        .bind(&self.appservice)
        .bind(user_id)
        .bind(login_id)
        .execute(self.store.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn management_room(&self, user_id: &str) -> NetworkResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT room_id FROM bridge_management_rooms WHERE appservice = $1 AND user_id = $2",
        )
        .bind(&self.appservice)
        .bind(user_id)
        .fetch_optional(self.store.pool())
        .await?)
    }

    /// The user whose management room this is, if it is one.
    pub(crate) async fn management_owner(&self, room_id: &str) -> NetworkResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM bridge_management_rooms WHERE appservice = $1 AND room_id = $2",
        )
        .bind(&self.appservice)
        .bind(room_id)
        .fetch_optional(self.store.pool())
        .await?)
    }

    pub(crate) async fn set_management_room(
        &self,
        user_id: &str,
        room_id: &str,
    ) -> NetworkResult<()> {
        sqlx::query(
            "INSERT INTO bridge_management_rooms (appservice, user_id, room_id) VALUES ($1, $2, $3)
             ON CONFLICT (appservice, user_id) DO UPDATE SET room_id = excluded.room_id",
        )
        .bind(&self.appservice)
        .bind(user_id)
        .bind(room_id)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn forget_management_room(&self, user_id: &str) -> NetworkResult<()> {
        sqlx::query("DELETE FROM bridge_management_rooms WHERE appservice = $1 AND user_id = $2")
            .bind(&self.appservice)
            .bind(user_id)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}
