//! The bot's tables: its rooms, followed lists, the rules read from them, the bans it made
//! because of a rule (so removing the rule lifts exactly those), and protection settings.

use serde_json::{Map, Value};
use sqlx::Row;
use trestle::{Result, Store, store::Migration};

use trestle_policy::{Kind, Recommendation, Rule};

const SCHEMA: &str = "
CREATE TABLE moderation_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE moderation_rooms (room_id TEXT PRIMARY KEY, added_at BIGINT NOT NULL);
CREATE TABLE moderation_lists (room_id TEXT PRIMARY KEY, added_at BIGINT NOT NULL);
CREATE TABLE moderation_rules (
    list_room TEXT NOT NULL, kind TEXT NOT NULL, state_key TEXT NOT NULL,
    entity TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (list_room, kind, state_key));
CREATE TABLE moderation_bans (
    room_id TEXT NOT NULL, user_id TEXT NOT NULL, list_room TEXT NOT NULL, entity TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id));
CREATE TABLE moderation_protections (
    room_id TEXT NOT NULL, name TEXT NOT NULL, settings TEXT NOT NULL,
    PRIMARY KEY (room_id, name))";

/// Hashed rules (MSC4205) and takedowns (MSC4204): a rule's hash and recommendation.
const RULE_HASHES: &str = "
ALTER TABLE moderation_rules ADD COLUMN sha256 TEXT;
ALTER TABLE moderation_rules ADD COLUMN recommendation TEXT NOT NULL DEFAULT 'm.ban'";

/// The migrations; both dialects read the same SQL.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: SCHEMA,
        postgres: SCHEMA,
    },
    Migration {
        version: 2,
        sqlite: RULE_HASHES,
        postgres: RULE_HASHES,
    },
];

/// The protection settings row for every protected room.
pub const ALL_ROOMS: &str = "*";

/// The bot's tables in a store.
#[derive(Clone, Debug)]
pub struct Db {
    store: Store,
}

/// A ban the bot made because of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The protected room.
    pub room_id: String,
    /// The banned user.
    pub user_id: String,
    /// The list of the rule.
    pub list_room: String,
    /// The rule's entity.
    pub entity: String,
}

fn ban_of(row: &sqlx::any::AnyRow) -> Result<Ban> {
    Ok(Ban {
        room_id: row.try_get("room_id")?,
        user_id: row.try_get("user_id")?,
        list_room: row.try_get("list_room")?,
        entity: row.try_get("entity")?,
    })
}

impl Db {
    /// Migrates the store's tables.
    pub async fn open(store: Store) -> Result<Db> {
        store.migrate("moderation", MIGRATIONS).await?;
        Ok(Db { store })
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.store.pool()
    }

    /// A setting of the bot's own (the management room, its own list).
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM moderation_settings WHERE key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Sets a setting.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO moderation_settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Rooms of a set (`moderation_rooms` or `moderation_lists`).
    async fn rooms_of(&self, table: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT room_id FROM {table} ORDER BY added_at, room_id"
        )))
        .fetch_all(self.pool())
        .await?)
    }

    async fn add_to(&self, table: &str, room_id: &str) -> Result<bool> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (room_id, added_at) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING"
        )))
        .bind(room_id)
        .bind(trestle::store::now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_from(&self, table: &str, room_id: &str) -> Result<bool> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE room_id = $1"
        )))
        .bind(room_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The protected rooms, oldest first.
    pub async fn protected_rooms(&self) -> Result<Vec<String>> {
        self.rooms_of("moderation_rooms").await
    }

    /// Protects a room; false if it already was.
    pub async fn protect(&self, room_id: &str) -> Result<bool> {
        self.add_to("moderation_rooms", room_id).await
    }

    /// Stops protecting a room; false if it was not.
    pub async fn unprotect(&self, room_id: &str) -> Result<bool> {
        self.remove_from("moderation_rooms", room_id).await
    }

    /// The followed lists, oldest first.
    pub async fn lists(&self) -> Result<Vec<String>> {
        self.rooms_of("moderation_lists").await
    }

    /// Follows a list; false if it already was.
    pub async fn watch(&self, room_id: &str) -> Result<bool> {
        self.add_to("moderation_lists", room_id).await
    }

    /// Stops following a list and forgets its rules; false if it was not followed.
    pub async fn unwatch(&self, room_id: &str) -> Result<bool> {
        sqlx::query("DELETE FROM moderation_rules WHERE list_room = $1")
            .bind(room_id)
            .execute(self.pool())
            .await?;
        self.remove_from("moderation_lists", room_id).await
    }

    /// Every stored rule.
    pub async fn rules(&self) -> Result<Vec<Rule>> {
        let rows = sqlx::query(
            "SELECT list_room, kind, state_key, entity, reason, sha256, recommendation
             FROM moderation_rules ORDER BY list_room, kind, state_key",
        )
        .fetch_all(self.pool())
        .await?;
        let mut rules = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get("kind")?;
            let Some(kind) = Kind::parse(&kind) else {
                continue;
            };
            let recommendation: String = row.try_get("recommendation")?;
            let Some(recommendation) = Recommendation::parse(&recommendation) else {
                continue;
            };
            rules.push(Rule {
                list: row.try_get("list_room")?,
                kind,
                state_key: row.try_get("state_key")?,
                entity: row.try_get("entity")?,
                reason: row.try_get("reason")?,
                recommendation,
                sha256: row.try_get("sha256")?,
            });
        }
        Ok(rules)
    }

    /// Stores a rule, replacing the one under its key.
    pub async fn put_rule(&self, rule: &Rule) -> Result<()> {
        sqlx::query(
            "INSERT INTO moderation_rules
             (list_room, kind, state_key, entity, reason, sha256, recommendation)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (list_room, kind, state_key)
             DO UPDATE SET entity = excluded.entity, reason = excluded.reason,
             sha256 = excluded.sha256, recommendation = excluded.recommendation",
        )
        .bind(&rule.list)
        .bind(rule.kind.as_str())
        .bind(&rule.state_key)
        .bind(&rule.entity)
        .bind(&rule.reason)
        .bind(rule.sha256.as_deref())
        .bind(rule.recommendation.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets the rule under a key.
    pub async fn delete_rule(&self, list: &str, kind: Kind, state_key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM moderation_rules WHERE list_room = $1 AND kind = $2 AND state_key = $3",
        )
        .bind(list)
        .bind(kind.as_str())
        .bind(state_key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Replaces every rule of `list` (after reading its whole state).
    pub async fn replace_rules(&self, list: &str, rules: &[Rule]) -> Result<()> {
        let mut tx = self.store.begin().await?;
        sqlx::query("DELETE FROM moderation_rules WHERE list_room = $1")
            .bind(list)
            .execute(&mut *tx)
            .await?;
        for rule in rules {
            sqlx::query(
                "INSERT INTO moderation_rules
                 (list_room, kind, state_key, entity, reason, sha256, recommendation)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&rule.list)
            .bind(rule.kind.as_str())
            .bind(&rule.state_key)
            .bind(&rule.entity)
            .bind(&rule.reason)
            .bind(rule.sha256.as_deref())
            .bind(rule.recommendation.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Remembers that the bot banned `user_id` from `room_id` because of a rule.
    pub async fn record_ban(&self, ban: &Ban) -> Result<()> {
        sqlx::query(
            "INSERT INTO moderation_bans (room_id, user_id, list_room, entity) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id)
             DO UPDATE SET list_room = excluded.list_room, entity = excluded.entity",
        )
        .bind(&ban.room_id)
        .bind(&ban.user_id)
        .bind(&ban.list_room)
        .bind(&ban.entity)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The bans the bot made because of rules of `list_room` with `entity`.
    pub async fn bans_for(&self, list_room: &str, entity: &str) -> Result<Vec<Ban>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, list_room, entity FROM moderation_bans
             WHERE list_room = $1 AND entity = $2 ORDER BY room_id, user_id",
        )
        .bind(list_room)
        .bind(entity)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ban_of).collect()
    }

    /// Every ban the bot made because of a rule.
    pub async fn bans(&self) -> Result<Vec<Ban>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, list_room, entity FROM moderation_bans ORDER BY room_id, user_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ban_of).collect()
    }

    /// Forgets a ban (lifted, or replaced by hand).
    pub async fn forget_ban(&self, room_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM moderation_bans WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every protection settings row: (room or `*`, protection, settings).
    pub async fn protections(&self) -> Result<Vec<(String, String, Map<String, Value>)>> {
        let rows = sqlx::query("SELECT room_id, name, settings FROM moderation_protections")
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let settings: String = row.try_get("settings")?;
            let settings = match serde_json::from_str(&settings) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
            out.push((row.try_get("room_id")?, row.try_get("name")?, settings));
        }
        Ok(out)
    }

    /// Stores the settings of one protection in one room (or `*`).
    pub async fn put_protection(
        &self,
        room_id: &str,
        name: &str,
        settings: &Map<String, Value>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO moderation_protections (room_id, name, settings) VALUES ($1, $2, $3)
             ON CONFLICT (room_id, name) DO UPDATE SET settings = excluded.settings",
        )
        .bind(room_id)
        .bind(name)
        .bind(Value::Object(settings.clone()).to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checks on SQLite and on a real PostgreSQL.
    async fn stores() -> Vec<Store> {
        let postgres = trestle_tests::postgres::fresh_database().await;
        vec![
            Store::in_memory().await.unwrap(),
            Store::connect(&postgres).await.unwrap(),
        ]
    }

    #[tokio::test]
    async fn rooms_lists_rules_and_bans_round_trip() {
        for store in stores().await {
            rooms_lists_rules_and_bans(Db::open(store).await.unwrap()).await;
        }
    }

    async fn rooms_lists_rules_and_bans(db: Db) {
        assert!(db.protect("!a:hs").await.unwrap());
        assert!(!db.protect("!a:hs").await.unwrap());
        assert!(db.watch("!l:hs").await.unwrap());
        assert_eq!(db.protected_rooms().await.unwrap(), vec!["!a:hs"]);
        let rule = Rule::ban("!l:hs", Kind::User, "k", "@s*:hs", "spam");
        db.put_rule(&rule).await.unwrap();
        db.put_rule(&Rule {
            reason: "more spam".into(),
            ..rule.clone()
        })
        .await
        .unwrap();
        let rules = db.rules().await.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].reason, "more spam");
        // A hashed takedown keeps its hash and recommendation.
        let hashed = Rule {
            state_key: "h".into(),
            entity: String::new(),
            recommendation: Recommendation::Takedown,
            sha256: Some("W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk".into()),
            ..rule.clone()
        };
        db.put_rule(&hashed).await.unwrap();
        assert_eq!(db.rules().await.unwrap()[0], hashed);
        db.delete_rule("!l:hs", Kind::User, "h").await.unwrap();
        let ban = Ban {
            room_id: "!a:hs".into(),
            user_id: "@sam:hs".into(),
            list_room: "!l:hs".into(),
            entity: "@s*:hs".into(),
        };
        db.record_ban(&ban).await.unwrap();
        assert_eq!(
            db.bans_for("!l:hs", "@s*:hs").await.unwrap(),
            vec![ban.clone()]
        );
        assert!(db.bans_for("!l:hs", "@t*:hs").await.unwrap().is_empty());
        assert_eq!(db.bans().await.unwrap(), vec![ban]);
        db.forget_ban("!a:hs", "@sam:hs").await.unwrap();
        assert!(db.bans_for("!l:hs", "@s*:hs").await.unwrap().is_empty());
        db.replace_rules("!l:hs", &[]).await.unwrap();
        assert!(db.rules().await.unwrap().is_empty());
        db.put_rule(&rule).await.unwrap();
        assert!(db.unwatch("!l:hs").await.unwrap());
        assert!(
            db.rules().await.unwrap().is_empty(),
            "unwatching forgets the rules"
        );
        assert!(db.unprotect("!a:hs").await.unwrap());
        assert!(db.protected_rooms().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn settings_and_protections_round_trip() {
        for store in stores().await {
            settings_and_protections(Db::open(store).await.unwrap()).await;
        }
    }

    async fn settings_and_protections(db: Db) {
        assert_eq!(db.setting("management_room").await.unwrap(), None);
        db.set_setting("management_room", "!m:hs").await.unwrap();
        db.set_setting("management_room", "!n:hs").await.unwrap();
        assert_eq!(
            db.setting("management_room").await.unwrap().as_deref(),
            Some("!n:hs")
        );
        let mut settings = Map::new();
        settings.insert("enabled".into(), Value::Bool(true));
        db.put_protection(ALL_ROOMS, "flood", &settings)
            .await
            .unwrap();
        db.put_protection(ALL_ROOMS, "flood", &settings)
            .await
            .unwrap();
        let rows = db.protections().await.unwrap();
        assert_eq!(rows, vec![("*".into(), "flood".into(), settings)]);
    }
}
