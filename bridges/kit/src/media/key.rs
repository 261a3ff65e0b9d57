//! The signing key of media links when the configuration names none: made once per
//! appservice and kept in the store, so links stay valid across restarts and processes.

use base64::{Engine, engine::general_purpose::STANDARD};
use trestle::store::{Migration, now_ms};

use crate::{BridgeError, NetworkResult, store::BridgeStore};

/// Its own namespace, so the kit's main schema keeps its versions to itself.
const SCHEMA_V1: &str = "
    CREATE TABLE bridge_media_keys (
        appservice TEXT NOT NULL PRIMARY KEY, signing_key TEXT NOT NULL,
        created_at BIGINT NOT NULL)";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sqlite: SCHEMA_V1,
    postgres: SCHEMA_V1,
}];

/// The appservice's key: the stored one, or a new random one stored now. Two processes that
/// start at once both insert; the first wins and both read it.
pub(super) async fn stored(store: &BridgeStore) -> NetworkResult<Vec<u8>> {
    store.store.migrate("bridge_media", MIGRATIONS).await?;
    let fresh: [u8; 32] = rand::random();
    sqlx::query(
        "INSERT INTO bridge_media_keys (appservice, signing_key, created_at)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&store.appservice)
    .bind(STANDARD.encode(fresh))
    .bind(now_ms())
    .execute(store.store.pool())
    .await?;
    let key: String =
        sqlx::query_scalar("SELECT signing_key FROM bridge_media_keys WHERE appservice = $1")
            .bind(&store.appservice)
            .fetch_one(store.store.pool())
            .await?;
    STANDARD.decode(key).map_err(|e| {
        BridgeError::Trestle(trestle::Error::Other(format!(
            "the stored media link key is not base64: {e}"
        )))
    })
}
