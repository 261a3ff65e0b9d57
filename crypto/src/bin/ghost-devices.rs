//! What a ghost's own device costs: creates N ghost devices (device, Olm account, keys uploaded,
//! cross-signing keys made and uploaded, device signed, matrix-sdk-sqlite store) against a mock homeserver that answers instantly, then opens them
//! all again in a fresh process, as after a restart. Prints time, resident memory, open files
//! and disk per ghost. Linux only (reads /proc).
//!
//! ```text
//! cargo run --release -p trestle-crypto --bin ghost-devices -- [GHOSTS [OPEN [DIR]]]
//! ```
//!
//! `GHOSTS` (200) devices are made; at most `OPEN` (64, `Settings::open_ghosts`) ghost machines
//! stay open; `DIR` keeps the crypto state (a temporary directory, deleted, by default).
//!
//! The homeserver's own work (Synapse creating the device, storing the keys) is not in these
//! numbers; docs/e2ee.md has what it adds.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use serde_json::{Value, json};
use trestle::{
    Appservice, Registration, Router, Store,
    axum::{self, Json, routing},
    ruma::OwnedUserId,
};
use trestle_crypto::{Crypto, Settings};

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reopen") {
        let (ghosts, open) = (args[1].parse()?, args[2].parse()?);
        return phase("reopen", ghosts, open, Path::new(&args[3])).await;
    }
    let ghosts: usize = args.first().map(|n| n.parse()).transpose()?.unwrap_or(200);
    let open: usize = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(64);
    let kept = args.get(2).map(PathBuf::from);
    let temp = tempfile_dir()?;
    let dir = kept.clone().unwrap_or_else(|| temp.clone());
    println!(
        "{ghosts} ghosts, at most {open} open, crypto state in {}",
        dir.display()
    );
    phase("create", ghosts, open, &dir).await?;

    let ghosts_dir = dir.join("ghosts");
    let (bytes, files) = disk_usage(&ghosts_dir)?;
    println!(
        "disk: {:.0} KB per ghost ({} files per ghost)",
        bytes as f64 / 1024.0 / ghosts as f64,
        files / ghosts
    );

    // Opening again in a fresh process: the memory numbers are not muddied by what the first
    // phase freed but the allocator kept.
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--reopen", &ghosts.to_string(), &open.to_string()])
        .arg(&dir)
        .status()?;
    if kept.is_none() {
        std::fs::remove_dir_all(&temp)?;
    }
    if !status.success() {
        return Err("the reopening phase failed".into());
    }
    Ok(())
}

/// Sets up the bot's device, then `ghosts` ghosts' devices, and prints what that cost.
async fn phase(name: &str, ghosts: usize, open: usize, dir: &Path) -> Result<(), Error> {
    let homeserver = mock_homeserver().await?;
    let mut registration = Registration::generate("bench", None, "bot", "g_", "bench");
    registration.msc3202 = Some(true);
    registration.msc4190 = Some(true);
    let app = Appservice::builder(registration, homeserver, "bench")
        .router(Router::new())
        .store(Store::in_memory().await?)
        .build()
        .await?;
    let mut settings = Settings::default();
    settings.open_ghosts = open;
    let crypto = Crypto::with_settings(dir, settings);
    crypto.ghost_device(&app, app.bot_user_id()).await?;
    let (rss_before, files_before) = (rss_kb()?, open_files()?);
    let started = Instant::now();
    for i in 0..ghosts {
        let ghost = OwnedUserId::try_from(format!("@g_{i}:bench"))?;
        crypto.ghost_device(&app, &ghost).await?;
    }
    let elapsed = started.elapsed();
    let (rss_after, files_after) = (rss_kb()?, open_files()?);
    let per = |total: f64| total / ghosts as f64;
    println!(
        "{name}: {:.2} ms, {:.0} KB resident, {:.1} open files per ghost \
         (resident {} MB -> {} MB, open files {files_before} -> {files_after}, {} ghosts open)",
        per(elapsed.as_secs_f64() * 1000.0),
        per((rss_after - rss_before) as f64),
        per((files_after - files_before) as f64),
        rss_before / 1024,
        rss_after / 1024,
        crypto.open_ghosts().await,
    );
    drop(crypto);
    Ok(())
}

/// A homeserver that accepts devices, keys, cross-signing keys and signatures: just enough for
/// an Olm machine to set up.
async fn mock_homeserver() -> Result<String, Error> {
    async fn upload(Json(body): Json<Value>) -> Json<Value> {
        let uploaded = body["one_time_keys"]
            .as_object()
            .map_or(0, |keys| keys.len());
        Json(json!({"one_time_key_counts": {"signed_curve25519": uploaded}}))
    }
    let router = axum::Router::new()
        .route(
            "/_matrix/client/v3/devices/{device_id}",
            routing::put(|| async { Json(json!({})) }),
        )
        .route("/_matrix/client/v3/keys/upload", routing::post(upload))
        .route(
            "/_matrix/client/v3/keys/device_signing/upload",
            routing::post(|| async { Json(json!({})) }),
        )
        .route(
            "/_matrix/client/v3/keys/signatures/upload",
            routing::post(|| async { Json(json!({"failures": {}})) }),
        )
        .route(
            "/_matrix/client/v3/keys/query",
            routing::post(|| async { Json(json!({"device_keys": {}, "failures": {}})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = Arc::new(router);
    tokio::spawn(async move { axum::serve(listener, (*router).clone()).await });
    Ok(url)
}

fn tempfile_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("trestle-ghost-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// This process's resident memory in KB.
fn rss_kb() -> Result<i64, Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// How many files this process has open.
fn open_files() -> Result<i64, Error> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as i64)
}

/// The bytes and the number of files under `dir`.
fn disk_usage(dir: &Path) -> Result<(u64, usize), Error> {
    let (mut bytes, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let (b, f) = disk_usage(&entry.path())?;
            (bytes, files) = (bytes + b, files + f);
        } else {
            (bytes, files) = (bytes + entry.metadata()?.len(), files + 1);
        }
    }
    Ok((bytes, files))
}
