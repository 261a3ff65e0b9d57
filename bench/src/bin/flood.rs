//! A flood against a slow handler: the inbox must grow on disk, not in memory.
//!
//! Pushes `--events` events in transactions of `--batch` (one in flight, as Synapse does) to
//! an appservice whose handler takes `--handler-ms` per event, then waits until all are
//! handled. Prints the inbox depth and the process's memory as it goes, and the high-water
//! mark at the end. The pusher runs in the same process; it holds one transaction at a time.
//!
//! `cargo run --release -p trestle-bench --bin flood -- --events 100000`

use std::{
    error::Error,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tokio::net::TcpListener;
use trestle::{
    Appservice, Registration, Router, Store,
    router::{RawEvent, State},
};
use trestle_bench::rss_kib;

#[derive(Parser)]
struct Args {
    /// Events to push.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per transaction.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Rooms the events are spread over.
    #[arg(long, default_value_t = 20)]
    rooms: u64,
    /// Milliseconds the handler takes per event.
    #[arg(long, default_value_t = 5)]
    handler_ms: u64,
}

async fn slow(_: RawEvent, State((handled, ms)): State<(Arc<AtomicU64>, u64)>) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    handled.fetch_add(1, Ordering::Relaxed);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flood: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("flood.db").display()
    ))
    .await?;
    let registration = Registration::generate("flood", None, "floodbot", "flood_", "localhost");
    let handled = Arc::new(AtomicU64::new(0));
    let router = Router::new()
        .on(slow)
        .with_state((handled.clone(), args.handler_ms));
    // No homeserver: the handler sends nothing.
    let app = Appservice::builder(registration.clone(), "http://127.0.0.1:9", "localhost")
        .router(router)
        .store(store)
        .build()
        .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(app.clone().run(listener, std::future::pending()));

    let (rss_start, _) = rss_kib();
    let peak_depth = Arc::new(AtomicU64::new(0));
    let sampler = {
        let app = app.clone();
        let peak_depth = peak_depth.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let depth = app.inbox_depth().await.unwrap_or(-1);
                peak_depth.fetch_max(depth.max(0) as u64, Ordering::Relaxed);
                let (rss, hwm) = rss_kib();
                println!(
                    "t={:>5.1}s inbox_depth={depth:>6} rss={:.1}MiB peak={:.1}MiB",
                    started.elapsed().as_secs_f64(),
                    rss as f64 / 1024.0,
                    hwm as f64 / 1024.0
                );
            }
        })
    };

    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut n = 0;
    for txn in 0..args.events.div_ceil(args.batch) {
        let events: Vec<_> = (0..args.batch.min(args.events - n))
            .map(|i| {
                let k = n + i;
                json!({"type": "org.trestle.flood", "room_id": format!("!r{}:localhost", k % args.rooms),
                       "sender": "@u:localhost", "event_id": format!("$e{k}"), "origin_server_ts": 1,
                       "content": {"n": k, "padding": "x".repeat(200)}})
            })
            .collect();
        n += events.len() as u64;
        let response = http
            .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
            .bearer_auth(&registration.hs_token)
            .json(&json!({ "events": events }))
            .send()
            .await?;
        assert!(response.status().is_success());
    }
    let pushed = started.elapsed();
    println!(
        "pushed {n} events in {pushed:.1?} ({:.0}/s)",
        n as f64 / pushed.as_secs_f64()
    );
    while handled.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = started.elapsed();
    sampler.abort();
    let (rss_end, hwm) = rss_kib();
    println!(
        "handled {n} events in {done:.1?}; inbox peak depth ≥ {}; RSS at start {:.1} MiB, at end {:.1} MiB, high-water mark {:.1} MiB",
        peak_depth.load(Ordering::Relaxed),
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}
