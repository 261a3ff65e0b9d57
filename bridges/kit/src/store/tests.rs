//! The kit's double puppeting rows on SQLite and on a real PostgreSQL server (from
//! `trestle-postgres-harness`: a missing PostgreSQL is a failure, never a skip).

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use trestle::Store;

use super::{BridgeStore, LoginRow};

fn login(user: &str, remote: &str) -> LoginRow {
    LoginRow {
        user_id: user.into(),
        login_id: "net".into(),
        remote_user: remote.into(),
        remote_name: remote.into(),
        data: String::new(),
        state: "CONNECTED".into(),
        state_reason: None,
    }
}

async fn double_puppets_follow_logins(store: Store) {
    let bridge = BridgeStore {
        store: store.clone(),
        appservice: "toy".into(),
    };
    let other = BridgeStore {
        store,
        appservice: "other".into(),
    };
    bridge.migrate().await.unwrap();
    bridge.upsert_login(&login("@a:x", "ada")).await.unwrap();
    other.upsert_login(&login("@a:x", "ada")).await.unwrap();
    assert!(!bridge.double_puppet_on("@a:x").await.unwrap());
    assert_eq!(bridge.double_puppet_of_remote("ada").await.unwrap(), None);

    // On: the remote user of their login is them; twice on changes nothing.
    assert!(bridge.set_double_puppet("@a:x", true).await.unwrap());
    assert!(!bridge.set_double_puppet("@a:x", true).await.unwrap());
    assert!(bridge.double_puppet_on("@a:x").await.unwrap());
    let found = bridge.double_puppet_of_remote("ada").await.unwrap();
    assert_eq!(found.as_deref(), Some("@a:x"));
    assert_eq!(bridge.double_puppet_of_remote("bob").await.unwrap(), None);
    // Another appservice in the same database has its own.
    assert!(!other.double_puppet_on("@a:x").await.unwrap());
    assert_eq!(other.double_puppet_of_remote("ada").await.unwrap(), None);

    // A deleted message leaves the map.
    bridge
        .map_message("lobby", "r1", "!r:x", "$e")
        .await
        .unwrap();
    bridge.forget_message("lobby", "r1").await.unwrap();
    assert_eq!(bridge.event_for_remote("lobby", "r1").await.unwrap(), None);

    // Off.
    assert!(bridge.set_double_puppet("@a:x", false).await.unwrap());
    assert!(!bridge.set_double_puppet("@a:x", false).await.unwrap());
    assert_eq!(bridge.double_puppet_of_remote("ada").await.unwrap(), None);
}

#[tokio::test]
async fn double_puppets_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    double_puppets_follow_logins(Store::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn double_puppets_on_postgres() {
    let url = trestle_postgres_harness::fresh_database().await;
    double_puppets_follow_logins(Store::connect(&url).await.unwrap()).await;
}
