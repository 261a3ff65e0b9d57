//! The bridge's own tables, beside the kit's: what must outlive a restart and the kit's
//! message map does not hold.
//!
//! - A room's id (`stanza-id`, [XEP-0359](https://xmpp.org/extensions/xep-0359.html)) of each
//!   message sent from Matrix: the kit knows those by their event id (which the bridge sent as
//!   `origin-id`), the room only by its own, which its retractions, replies and reactions name.
//! - Each sender's set of reactions to each message: XMPP sends the whole set each time
//!   ([XEP-0444](https://xmpp.org/extensions/xep-0444.html)), Matrix one reaction at a time,
//!   so each side's change is found against the last set.
//!
//! Rows are keyed by the appservice's id, so several bridges can share one database.

use std::collections::BTreeSet;

use sqlx::Row;
use trestle::{
    Store,
    store::{Migration, now_ms},
};
use trestle_bridge::{BridgeError, NetworkResult};

/// Version 1. `BIGINT` is SQLite's `INTEGER` too, so one text serves both.
const SCHEMA_V1: &str = "
    CREATE TABLE xmpp_stanza_ids (
        appservice TEXT NOT NULL, room TEXT NOT NULL, origin_id TEXT NOT NULL,
        stanza_id TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, room, origin_id));
    CREATE INDEX xmpp_stanza_ids_room_id ON xmpp_stanza_ids (appservice, room, stanza_id);
    CREATE TABLE xmpp_reactions (
        appservice TEXT NOT NULL, chat_id TEXT NOT NULL, sender TEXT NOT NULL,
        target TEXT NOT NULL, emojis TEXT NOT NULL, updated_at BIGINT NOT NULL,
        PRIMARY KEY (appservice, chat_id, sender, target))";

/// The bridge's schema, applied with [`Store::migrate`] under the namespace `xmpp`.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sqlite: SCHEMA_V1,
    postgres: SCHEMA_V1,
}];

/// The bridge's tables in the appservice's store.
#[derive(Clone, Debug)]
pub struct XmppStore {
    store: Store,
    appservice: String,
}

/// A database error, for the kit.
fn failed(error: impl std::fmt::Display) -> BridgeError {
    BridgeError::Retriable(format!("the XMPP bridge's store: {error}"))
}

impl XmppStore {
    /// The tables of the appservice `appservice` in `store`, made or brought up to date.
    pub async fn open(store: Store, appservice: String) -> NetworkResult<Self> {
        store.migrate("xmpp", MIGRATIONS).await?;
        Ok(XmppStore { store, appservice })
    }

    /// Records that the message its sender calls `origin` is `stanza_id` in `room`; the first
    /// record of a message stays.
    pub async fn save_stanza_id(
        &self,
        room: &str,
        origin: &str,
        stanza_id: &str,
    ) -> NetworkResult<()> {
        sqlx::query(
            "INSERT INTO xmpp_stanza_ids (appservice, room, origin_id, stanza_id, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&self.appservice)
        .bind(room)
        .bind(origin)
        .bind(stanza_id)
        .bind(now_ms())
        .execute(self.store.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// The room's id of the message its sender calls `origin`, if recorded.
    pub async fn stanza_id(&self, room: &str, origin: &str) -> NetworkResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT stanza_id FROM xmpp_stanza_ids
             WHERE appservice = $1 AND room = $2 AND origin_id = $3",
        )
        .bind(&self.appservice)
        .bind(room)
        .bind(origin)
        .fetch_optional(self.store.pool())
        .await
        .map_err(failed)
    }

    /// The sender's id of the message `room` calls `stanza_id`, if recorded.
    pub async fn origin_id(&self, room: &str, stanza_id: &str) -> NetworkResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT origin_id FROM xmpp_stanza_ids
             WHERE appservice = $1 AND room = $2 AND stanza_id = $3",
        )
        .bind(&self.appservice)
        .bind(room)
        .bind(stanza_id)
        .fetch_optional(self.store.pool())
        .await
        .map_err(failed)
    }

    /// `sender`'s reactions to `target` in `chat`, as last recorded (none if never).
    pub async fn reactions(
        &self,
        chat: &str,
        sender: &str,
        target: &str,
    ) -> NetworkResult<BTreeSet<String>> {
        let row = sqlx::query(
            "SELECT emojis FROM xmpp_reactions
             WHERE appservice = $1 AND chat_id = $2 AND sender = $3 AND target = $4",
        )
        .bind(&self.appservice)
        .bind(chat)
        .bind(sender)
        .bind(target)
        .fetch_optional(self.store.pool())
        .await
        .map_err(failed)?;
        let Some(row) = row else {
            return Ok(BTreeSet::new());
        };
        let emojis: String = row.get(0);
        serde_json::from_str(&emojis)
            .map_err(|e| failed(format!("reactions {emojis:?} do not read: {e}")))
    }

    /// Records `sender`'s reactions to `target` in `chat` as `emojis` (none: the row goes).
    pub async fn set_reactions(
        &self,
        chat: &str,
        sender: &str,
        target: &str,
        emojis: &BTreeSet<String>,
    ) -> NetworkResult<()> {
        let query = if emojis.is_empty() {
            sqlx::query(
                "DELETE FROM xmpp_reactions
                 WHERE appservice = $1 AND chat_id = $2 AND sender = $3 AND target = $4",
            )
        } else {
            sqlx::query(
                "INSERT INTO xmpp_reactions (appservice, chat_id, sender, target, emojis, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (appservice, chat_id, sender, target)
                 DO UPDATE SET emojis = excluded.emojis, updated_at = excluded.updated_at",
            )
        };
        let emojis = serde_json::to_string(emojis).map_err(failed)?;
        query
            .bind(&self.appservice)
            .bind(chat)
            .bind(sender)
            .bind(target)
            .bind(emojis)
            .bind(now_ms())
            .execute(self.store.pool())
            .await
            .map_err(failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap in a test is the test failing, with the error in its message.
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn kept_across_opens(store: Store) {
        let xmpp = XmppStore::open(store.clone(), "xmpp".into()).await.unwrap();
        let other = XmppStore::open(store.clone(), "other".into())
            .await
            .unwrap();
        let room = "chat@conference.example";

        xmpp.save_stanza_id(room, "$event", "room-1").await.unwrap();
        // The first record stays.
        xmpp.save_stanza_id(room, "$event", "room-2").await.unwrap();
        let mut emojis = BTreeSet::from(["👍".to_owned(), "🎉".to_owned()]);
        xmpp.set_reactions("muc:chat", "alice", "room-1", &emojis)
            .await
            .unwrap();
        emojis.remove("🎉");
        xmpp.set_reactions("muc:chat", "alice", "room-1", &emojis)
            .await
            .unwrap();
        xmpp.set_reactions(
            "muc:chat",
            "bob",
            "room-1",
            &BTreeSet::from(["x".to_owned()]),
        )
        .await
        .unwrap();
        xmpp.set_reactions("muc:chat", "bob", "room-1", &BTreeSet::new())
            .await
            .unwrap();

        // Opened again (a restart): all there, migrations not run twice.
        let again = XmppStore::open(store, "xmpp".into()).await.unwrap();
        assert_eq!(
            again.stanza_id(room, "$event").await.unwrap().as_deref(),
            Some("room-1")
        );
        assert_eq!(
            again.origin_id(room, "room-1").await.unwrap().as_deref(),
            Some("$event")
        );
        assert_eq!(
            again.stanza_id("elsewhere@x", "$event").await.unwrap(),
            None
        );
        assert_eq!(
            again
                .reactions("muc:chat", "alice", "room-1")
                .await
                .unwrap(),
            emojis
        );
        assert!(
            again
                .reactions("muc:chat", "bob", "room-1")
                .await
                .unwrap()
                .is_empty()
        );
        // Another appservice in the same database has its own.
        assert_eq!(other.stanza_id(room, "$event").await.unwrap(), None);
        assert!(
            other
                .reactions("muc:chat", "alice", "room-1")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ids_and_reactions_are_kept_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        kept_across_opens(Store::connect(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn ids_and_reactions_are_kept_on_postgres() {
        let url = trestle_postgres_harness::fresh_database().await;
        kept_across_opens(Store::connect(&url).await.unwrap()).await;
    }
}
