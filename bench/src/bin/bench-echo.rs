//! The benchmark's echo appservice on Trestle, with nothing the real plugins do not get: the
//! durable SQLite store (in a temporary directory), the router, intents and the outbox.
//!
//! - `!echo <rest>` — the bot sends `echo: <rest>` to the room.
//! - `!ghost <rest>` from `@<local>:<server>` — the ghost `@bench_<local>:<server>` sends it
//!   (registered, joined and sending through the outbox).
//!
//! `bench-echo --registration FILE --homeserver URL [--handler-delay-ms MS] [--durability disk]
//! [--max-in-flight N] [--runtime auto|multi|current|workers=N]`,
//! listening at the registration's `url`. Stops on SIGTERM or Ctrl-C. Logs at `warn` unless
//! `RUST_LOG` says otherwise.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser};
use serde_json::json;
use trestle::{
    Appservice, Router, Store,
    intent::SendOptions,
    router::{Command, Room, Sender, State},
    store::{Durability, StoreOptions},
};
use trestle_bench::app_args::{AppArgs, echo_body, load, shutdown_signal};

/// bench-echo's arguments: the appservices' common ones and the runtime's shape.
#[derive(Parser)]
struct EchoArgs {
    #[command(flatten)]
    app: AppArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct RuntimeArgs {
    /// The tokio runtime: `auto` (what `trestle run` starts unless told: one worker thread per
    /// CPU this process may run on, or the main thread alone where that is one CPU,
    /// `trestle::runtime::build`), `multi` (one worker thread per CPU, as `#[tokio::main]`, even
    /// on one), `current` (everything on the main thread) or `workers=N` (multi-thread with N
    /// workers). Blocking work (SQLite's connection threads, `spawn_blocking`) keeps its own
    /// threads in every shape.
    #[arg(long, default_value = "auto", value_parser = parse_runtime)]
    runtime: RuntimeShape,
}

#[derive(Clone, Copy, Debug)]
enum RuntimeShape {
    Auto,
    Multi,
    Current,
    Workers(usize),
}

fn parse_runtime(value: &str) -> Result<RuntimeShape, String> {
    match value {
        "auto" => Ok(RuntimeShape::Auto),
        "multi" => Ok(RuntimeShape::Multi),
        "current" => Ok(RuntimeShape::Current),
        other => match other.strip_prefix("workers=").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(RuntimeShape::Workers(n)),
            _ => Err(format!(
                "`{other}`: expected auto, multi, current or workers=N with N at least 1"
            )),
        },
    }
}

fn runtime(shape: RuntimeShape) -> std::io::Result<tokio::runtime::Runtime> {
    match shape {
        RuntimeShape::Auto => trestle::runtime::build(None),
        // Kept apart from `auto` for the measurement of one worker on one core.
        RuntimeShape::Multi => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        RuntimeShape::Current => trestle::runtime::build(Some(1)),
        RuntimeShape::Workers(n) => trestle::runtime::build(Some(n)),
    }
}

/// How long each handler waits before it answers.
#[derive(Clone, Copy)]
struct Delay(Duration);

async fn pause(delay: Delay) {
    if !delay.0.is_zero() {
        tokio::time::sleep(delay.0).await;
    }
}

fn message(rest: &str) -> serde_json::Value {
    json!({"msgtype": "m.text", "body": echo_body(rest)})
}

/// `!echo <rest>`: the bot answers.
async fn echo(
    cmd: Command,
    Room(room): Room,
    State(delay): State<Delay>,
    app: Appservice,
) -> trestle::Result<()> {
    pause(delay).await;
    app.bot()
        .send_json(
            &room,
            "m.room.message",
            message(&cmd.args),
            SendOptions::default(),
        )
        .await?;
    Ok(())
}

/// `!ghost <rest>`: the sender's ghost answers.
async fn ghost(
    cmd: Command,
    Room(room): Room,
    Sender(sender): Sender,
    State(delay): State<Delay>,
    app: Appservice,
) -> trestle::Result<()> {
    pause(delay).await;
    app.ghost(&format!("bench_{}", sender.localpart()))?
        .send_json(
            &room,
            "m.room.message",
            message(&cmd.args),
            SendOptions::default(),
        )
        .await?;
    Ok(())
}

/// mimalloc rather than the C library's malloc: at fifty events a transaction, glibc's
/// malloc and free were 13% of an echo's CPU, and with mimalloc an event costs a tenth less
/// (`docs/benchmarks.md`, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let EchoArgs {
        app,
        runtime: shape,
    } = EchoArgs::parse();
    let result = match runtime(shape.runtime) {
        Ok(runtime) => runtime.block_on(run(app)),
        Err(error) => Err(format!("starting the runtime: {error}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-echo: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: AppArgs) -> Result<(), String> {
    let (registration, addr) = load(&args)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = match &args.database {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let durability = match args.durability.as_str() {
        "disk" => Durability::Disk,
        _ => Durability::OsCache,
    };
    let mut options = StoreOptions::default().durability(durability);
    if let Some(scope) = &args.scope {
        options = options.scope(scope);
    }
    let store = Store::connect_with(&url, options)
        .await
        .map_err(|e| e.to_string())?;
    let router = Router::new()
        .command("echo", echo)
        .command("ghost", ghost)
        .with_state(Delay(Duration::from_millis(args.handler_delay_ms)));
    let mut builder = Appservice::builder(registration, args.homeserver, "localhost")
        .router(router)
        .store(store);
    if let Some(events) = args.max_in_flight {
        builder = builder.max_in_flight(if events == 0 { usize::MAX } else { events });
    }
    let app = builder.build().await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening at {addr}: {e}"))?;
    app.run(listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    // The temporary directory goes with `dir`.
    Ok(())
}
