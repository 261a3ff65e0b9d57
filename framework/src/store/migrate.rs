//! Plugins' own tables, versioned like the framework's.

use sqlx::Executor;

use super::{Backend, Store, now_ms};
use crate::{Error, Result};

/// One schema change of a plugin: SQL for each dialect, applied once, in version order.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Increasing from 1; never reuse or reorder a version once released.
    pub version: i64,
    /// The change for SQLite; several statements may be separated by `;`.
    pub sqlite: &'static str,
    /// The same change for PostgreSQL.
    pub postgres: &'static str,
}

impl Store {
    /// Applies the `migrations` of `namespace` (a plugin's name) that this database has not
    /// seen, each in its own transaction together with its record, so a crash midway leaves
    /// the schema at a known version. Call it before the plugin's first query; running it
    /// again is cheap and changes nothing.
    pub async fn migrate(&self, namespace: &str, migrations: &[Migration]) -> Result<()> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM plugin_migrations WHERE namespace = $1")
                .bind(namespace)
                .fetch_one(self.pool())
                .await?;
        let applied = applied.unwrap_or(0);
        for pair in migrations.windows(2) {
            if pair[1].version <= pair[0].version {
                return Err(Error::Other(format!(
                    "migrations of `{namespace}`: version {} after {}; versions must increase",
                    pair[1].version, pair[0].version
                )));
            }
        }
        let known = migrations.last().map_or(0, |m| m.version);
        if applied > known {
            // A downgrade: this build would read tables whose shape it does not know. The
            // framework's own tables refuse the same way (sqlx's migrator).
            return Err(Error::Other(format!(
                "the database's tables of `{namespace}` are at version {applied}, newer than this \
                 build knows ({known}): run the newer trestle again, or restore the backup taken \
                 before the upgrade"
            )));
        }
        for migration in migrations {
            if migration.version <= applied {
                continue;
            }
            let sql = match self.backend() {
                Backend::Sqlite => migration.sqlite,
                Backend::Postgres => migration.postgres,
            };
            let mut tx = self.begin().await?;
            tx.execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(|error| {
                    Error::Other(format!(
                        "migration {} of `{namespace}` failed: {error}",
                        migration.version
                    ))
                })?;
            sqlx::query(
                "INSERT INTO plugin_migrations (namespace, version, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(namespace)
            .bind(migration.version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = Migration {
        version: 1,
        sqlite: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        postgres: "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
    };
    const V2: Migration = Migration {
        version: 2,
        sqlite: "ALTER TABLE notes ADD COLUMN author TEXT; CREATE INDEX notes_author ON notes (author)",
        postgres: "ALTER TABLE notes ADD COLUMN author TEXT; CREATE INDEX notes_author ON notes (author)",
    };

    #[tokio::test]
    async fn applies_each_version_once_and_in_order() {
        let store = Store::in_memory().await.unwrap();
        store.migrate("notes", &[V1]).await.unwrap();
        store.migrate("notes", &[V1]).await.unwrap();
        store.migrate("notes", &[V1, V2]).await.unwrap();
        sqlx::query("INSERT INTO notes (body, author) VALUES ('hi', 'ada')")
            .execute(store.pool())
            .await
            .unwrap();
        let versions: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM plugin_migrations WHERE namespace = 'notes' ORDER BY version",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(versions, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_failed_migration_names_itself_and_is_not_recorded() {
        let store = Store::in_memory().await.unwrap();
        let bad = Migration {
            version: 1,
            sqlite: "CREATE TABLE broken (",
            postgres: "CREATE TABLE broken (",
        };
        let error = store.migrate("bad", &[bad]).await.unwrap_err().to_string();
        assert!(error.contains("migration 1 of `bad`"), "{error}");
        store.migrate("bad", &[V1]).await.unwrap();
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let store = Store::in_memory().await.unwrap();
        store.migrate("notes", &[V1, V2]).await.unwrap();
        let error = store.migrate("notes", &[V1]).await.unwrap_err().to_string();
        assert!(
            error.contains("at version 2, newer than this build knows (1)"),
            "{error}"
        );
        // Other plugins' versions are their own.
        let other = Migration {
            version: 1,
            sqlite: "CREATE TABLE other (id INTEGER)",
            postgres: "CREATE TABLE other (id BIGINT)",
        };
        store.migrate("other", &[other]).await.unwrap();
    }

    #[tokio::test]
    async fn versions_out_of_order_are_refused() {
        let store = Store::in_memory().await.unwrap();
        let error = store.migrate("x", &[V2, V1]).await.unwrap_err().to_string();
        assert!(error.contains("versions must increase"), "{error}");
    }
}
