//! The scale-out benchmark of `docs/scaling.md`: events/s of the echo appservice
//! (`bench-echo`, found next to this executable) with one, two and three processes sharing one
//! PostgreSQL database. A mock homeserver on loopback spreads its transactions over the
//! processes in turn, as a load balancer would, with one transaction in flight to each (as
//! Synapse keeps one in flight per appservice, a balancer in front of several processes lets
//! each take one); the rooms, and so the handling, are divided between the processes by the
//! store's leases. The figure is the echoes the homeserver got per second, with the CPU time
//! per event of the processes and, apart, of the PostgreSQL server (when it runs on this
//! machine), and the server's commits and write-ahead log per event: the terms of the model
//! for more machines in `docs/scaling.md`.
//!
//! ```sh
//! cargo build --release -p trestle-bench
//! cargo run --release -p trestle-bench --bin bench-scale -- --database postgres://…
//! ```
//!
//! Each run uses a fresh schema of the database (`--database`, which must allow `CREATE
//! SCHEMA`); without it, a throwaway PostgreSQL server is started (`TRESTLE_PG_BIN`, as the
//! tests do). Not a test: run it on an idle machine.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use trestle::Registration;
use trestle_bench::{
    arrivals::Arrivals,
    child::AppProcess,
    cpu_time_of,
    homeserver::{Homeserver, Session},
    load::{Command, Load, bot_joins},
    server::ServerUse,
};

#[derive(Parser)]
struct Args {
    /// The PostgreSQL database the processes share (a schema per run is made in it); a
    /// throwaway server when unset.
    #[arg(long)]
    database: Option<String>,
    /// How many processes, one figure each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    processes: Vec<usize>,
    /// Messages per run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Messages per transaction.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Rooms the messages are spread over: the unit the processes divide.
    #[arg(long, default_value_t = 60)]
    rooms: usize,
    /// Milliseconds each handler takes (work besides the store's, which more processes
    /// spread).
    #[arg(long, default_value_t = 0)]
    handler_delay_ms: u64,
    /// Give up on a run when no echo arrived for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_s: u64,
    /// Keep the processes' logs (each run's directory is printed) instead of removing them:
    /// with `RUST_LOG`, for finding where a run waits.
    #[arg(long)]
    keep_logs: bool,
}

const BOT: &str = "@benchbot:localhost";

/// What one run measured.
struct Figure {
    processes: usize,
    events_per_s: f64,
    elapsed: Duration,
    cpu_us_per_event: f64,
    /// What the run cost the PostgreSQL server.
    server: ServerUse,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn bench_echo() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .map(|dir| dir.join("bench-echo"))
        .unwrap_or_default();
    if !path.exists() {
        return Err(format!(
            "bench-echo is not next to {}: build it first with `cargo build --release -p trestle-bench`",
            exe.display()
        ));
    }
    Ok(path)
}

/// Pushes `bodies` to the process at `url`, one at a time, as transactions `first`, `first +
/// step`, …: ids shared by all the processes (one homeserver), never repeated.
async fn push_all(
    url: String,
    hs_token: String,
    bodies: Vec<(usize, Bytes)>,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    for (txn, body) in bodies {
        let response = http
            .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
            .bearer_auth(&hs_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("pushing transaction {txn} to {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "transaction {txn} was answered {} by {url}",
                response.status()
            ));
        }
    }
    Ok(())
}

/// One run: `n` processes on a fresh schema, the load spread over them.
async fn run_with(
    args: &Args,
    database: &str,
    n: usize,
    homeserver: &Homeserver,
    homeserver_url: &str,
    work: &Path,
) -> Result<Figure, String> {
    let binary = bench_echo()?;
    let scope = format!("scale{n}_{}", std::process::id());
    let (as_token, hs_token) = (format!("as-{scope}"), format!("hs-{scope}"));
    let session = Arc::new(Session::new(&as_token, BOT, "localhost"));
    homeserver.start_session(session.clone());
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    for i in 0..n {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        // One appservice: the same id and tokens, each process at its own address.
        let mut registration = Registration::generate(
            "bench",
            Some(url.clone()),
            "benchbot",
            "bench_",
            "localhost",
        );
        registration.as_token = as_token.clone();
        registration.hs_token = hs_token.clone();
        let path = work.join(format!("registration-{n}-{i}.yaml"));
        registration.write_file(&path).map_err(|e| e.to_string())?;
        let extra = [
            "--database".to_owned(),
            database.to_owned(),
            "--scope".to_owned(),
            scope.clone(),
            "--handler-delay-ms".to_owned(),
            args.handler_delay_ms.to_string(),
        ];
        let log = work.join(format!("{n}-{i}-bench-echo.log"));
        let addr = ([127, 0, 0, 1], port).into();
        processes.push(
            AppProcess::start(&[], &binary, &path, homeserver_url, &extra, &log, addr).await?,
        );
        urls.push(url);
    }
    // The bot joins the rooms first, through the first process.
    let mut txn = 0;
    push_all(
        urls[0].clone(),
        hs_token.clone(),
        vec![(txn, bot_joins(BOT, args.rooms))],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load = Load {
        command: Command::Echo,
        events: args.events,
        batch: args.batch,
        rooms: args.rooms,
        tag: format!("s{n}"),
    };
    let mut shares: Vec<Vec<(usize, Bytes)>> = vec![Vec::new(); n];
    for (i, body) in load.transactions().into_iter().enumerate() {
        txn += 1;
        shares[i % n].push((txn, body));
    }
    let arrivals = Arc::new(Arrivals::new(args.events, Instant::now()));
    session.expect(arrivals.clone());
    let pids: Vec<u32> = processes.iter().map(AppProcess::pid).collect();
    let cpu_before: Duration = pids.iter().filter_map(|&p| cpu_time_of(p)).sum();
    let server_before = ServerUse::read(database).await?;
    let started = Instant::now();
    let pushers: Vec<_> = shares
        .into_iter()
        .zip(&urls)
        .map(|(share, url)| tokio::spawn(push_all(url.clone(), hs_token.clone(), share)))
        .collect();
    for pusher in pushers {
        pusher.await.map_err(|e| e.to_string())??;
    }
    let stall = Duration::from_secs(args.stall_s);
    let (mut seen, mut progress) = (0, Instant::now());
    while arrivals.arrived() < args.events {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = arrivals.arrived();
        if now > seen {
            (seen, progress) = (now, Instant::now());
        } else if progress.elapsed() > stall {
            return Err(format!(
                "{n} processes: only {now} of {} echoes arrived; none for {stall:?} (logs in {})",
                args.events,
                work.display()
            ));
        }
    }
    let elapsed = arrivals
        .last()
        .unwrap_or(started)
        .saturating_duration_since(started);
    let cpu: Duration = pids.iter().filter_map(|&p| cpu_time_of(p)).sum();
    for process in processes {
        process.stop().await;
    }
    // The processes' backends publish their statistics as they end, and the postmaster reaps
    // them (their CPU time becomes its children's).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = ServerUse::read(database).await?.since(&server_before);
    Ok(Figure {
        processes: n,
        events_per_s: args.events as f64 / elapsed.as_secs_f64().max(1e-9),
        elapsed,
        cpu_us_per_event: cpu.saturating_sub(cpu_before).as_secs_f64() * 1e6 / args.events as f64,
        server,
    })
}

/// The server's CPU time per event in a run, when the server runs on this machine.
fn server_cpu_per_event(figure: &Figure, events: usize) -> Option<f64> {
    figure
        .server
        .cpu
        .map(|cpu| cpu.as_secs_f64() * 1e6 / events as f64)
}

async fn run(args: Args) -> Result<(), String> {
    let database = match &args.database {
        Some(url) => url.clone(),
        None => trestle_postgres_harness::fresh_database().await,
    };
    let homeserver = Homeserver::default();
    let homeserver_url = homeserver.serve_on_loopback().await?;
    let work = tempfile::Builder::new()
        .prefix("trestle-bench-scale-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} messages in transactions of {} over {} rooms, handlers {} ms, {cpus} CPUs",
        args.events, args.batch, args.rooms, args.handler_delay_ms
    );
    let mut figures: Vec<Figure> = Vec::new();
    for &n in &args.processes {
        let figure = run_with(&args, &database, n, &homeserver, &homeserver_url, &work).await?;
        println!(
            "{n} processes: {:.0} events/s ({:.1} s), CPU {:.0} µs/event over all processes; \
             PostgreSQL: CPU {}, {:.2} commits and {:.0} bytes of WAL per event",
            figure.events_per_s,
            figure.elapsed.as_secs_f64(),
            figure.cpu_us_per_event,
            server_cpu_per_event(&figure, args.events)
                .map_or("not on this machine".into(), |us| format!(
                    "{us:.0} µs/event"
                )),
            figure.server.commits as f64 / args.events as f64,
            figure.server.wal_bytes as f64 / args.events as f64,
        );
        figures.push(figure);
    }
    println!(
        "\n| processes | events/s | × one process | CPU µs/event | PostgreSQL CPU µs/event | commits/event | WAL bytes/event |\n|---|---|---|---|---|---|---|"
    );
    let one = figures
        .iter()
        .find(|f| f.processes == 1)
        .map(|f| f.events_per_s);
    for figure in &figures {
        let ratio = one.map_or(String::from("–"), |one| {
            format!("{:.2}", figure.events_per_s / one)
        });
        let server_cpu =
            server_cpu_per_event(figure, args.events).map_or("–".into(), |us| format!("{us:.0}"));
        println!(
            "| {} | {:.0} | {ratio} | {:.0} | {server_cpu} | {:.2} | {:.0} |",
            figure.processes,
            figure.events_per_s,
            figure.cpu_us_per_event,
            figure.server.commits as f64 / args.events as f64,
            figure.server.wal_bytes as f64 / args.events as f64,
        );
    }
    // The model of docs/scaling.md: what one core of each side handles, from the CPU each
    // spends per event; processes on more machines multiply the first, not the second.
    for figure in &figures {
        if let Some(server) = server_cpu_per_event(figure, args.events) {
            println!(
                "{} processes: one core of Trestle handles {:.0} events/s, one core of PostgreSQL {:.0}",
                figure.processes,
                1e6 / figure.cpu_us_per_event.max(1e-9),
                1e6 / server.max(1e-9)
            );
        }
    }
    if args.keep_logs {
        println!("logs kept in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-scale: {error}");
            ExitCode::FAILURE
        }
    }
}
