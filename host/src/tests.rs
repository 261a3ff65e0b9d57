//! The host's YAML reaches its plugins' stores, and its health answers tell a stall.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use trestle::{
    Plugin, Router,
    store::Durability,
    testing::{JournalProbe, text},
};

use super::Host;
use crate::config::Config;

mod bot;
mod nesting;

fn quiet(_: &trestle::plugin::PluginSettings<'_>) -> trestle::Result<Router> {
    Ok(Router::new())
}

const QUIET: Plugin = Plugin::new("quiet", "quiet", "quiet_", quiet);

/// A host of one plugin on a SQLite file, configured with `extra` YAML.
async fn start(dir: &std::path::Path, extra: &str) -> Host {
    let path = dir.join("trestle.yaml");
    let yaml = format!("homeserver:\n  server_name: x\n  url: http://127.0.0.1:9\n{extra}");
    std::fs::write(&path, yaml).unwrap();
    Host::new(&Config::load(&path).unwrap(), &[QUIET])
        .await
        .unwrap()
}

async fn call(host: &Host, request: Request<Body>) -> (StatusCode, String) {
    let response = host.router().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn push(host: &Host, txn_id: &str) -> Request<Body> {
    let app = host.apps().next().unwrap().1;
    let body = json!({"events": [text(&format!("${txn_id}"), "!r:x", "@u:x", "hi")]});
    Request::put(format!("/quiet/_matrix/app/v1/transactions/{txn_id}"))
        .header(
            "authorization",
            format!("Bearer {}", app.registration().hs_token),
        )
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn synchronous(host: &Host) -> i64 {
    let store = host.apps().next().unwrap().1.store();
    sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn durability_disk_syncs_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "durability: disk\n").await;
    let store = host.apps().next().unwrap().1.store();
    assert_eq!(store.durability(), Durability::Disk);
    assert_eq!(synchronous(&host).await, 2, "FULL");
    assert_eq!(call(&host, push(&host, "1")).await.0, StatusCode::OK);
    assert_eq!(store.journal_syncs(), 1);

    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "").await;
    let store = host.apps().next().unwrap().1.store();
    assert_eq!(store.durability(), Durability::OsCache);
    assert_eq!(synchronous(&host).await, 1, "NORMAL");
    assert_eq!(call(&host, push(&host, "1")).await.0, StatusCode::OK);
    assert_eq!(store.journal_syncs(), 0);
}

#[tokio::test]
async fn a_stalled_journal_is_not_ready_and_refuses_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "").await;
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(
        call(&host, get("/health/ready")).await,
        (StatusCode::OK, "ready".into())
    );
    let store = host.apps().next().unwrap().1.store();
    store.stall_journal(Some("the disk is full".into()));
    assert_eq!(
        call(&host, get("/health/ready")).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "quiet: the disk is full".into()
        )
    );
    let (status, body) = call(&host, push(&host, "1")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("M_UNKNOWN"), "{body}");
    assert_eq!(store.journal_backlog(), 0, "nothing appended");

    store.stall_journal(None);
    assert_eq!(call(&host, get("/health/ready")).await.0, StatusCode::OK);
    assert_eq!(call(&host, push(&host, "1")).await.0, StatusCode::OK);
}
