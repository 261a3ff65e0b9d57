//! The benchmark driver: plays the homeserver on loopback, starts each appservice under test
//! (`null-appservice` and `bench-echo`, found next to this executable) as a child process,
//! pushes transactions to it with one in flight, times the echoes and watches its memory.
//!
//! Every scenario gets a fresh process of each appservice, in alternating order, `--runs`
//! times; the table gives the medians and Trestle's figures as ratios to the null
//! appservice's. See `docs/benchmarks.md`.
//!
//! ```sh
//! cargo build --release -p trestle-bench
//! cargo run --release -p trestle-bench --bin bench
//! ```

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use trestle::Registration;
use trestle_bench::{
    child::{AppProcess, Sample, Sampler},
    cpu_time_of,
    homeserver::{Homeserver, Session},
    load::{Command, Load, Outcome, Phase, Pusher, bot_joins},
    memory_of,
    report::{Row, Target, markdown},
};

mod args;

use args::{App, Args, Scenario};

/// Figures by (appservice, name), one value per run.
#[derive(Default)]
struct Figures(HashMap<(App, &'static str), Vec<f64>>);

impl Figures {
    fn add(&mut self, app: App, name: &'static str, value: f64) {
        self.0.entry((app, name)).or_default().push(value);
    }

    fn row(&self, name: &'static str, label: &str, decimals: usize) -> Row {
        let mut row = Row::new(label, decimals);
        row.null = self.0.get(&(App::Null, name)).cloned().unwrap_or_default();
        row.trestle = self
            .0
            .get(&(App::Trestle, name))
            .cloned()
            .unwrap_or_default();
        row
    }
}

const BOT: &str = "@benchbot:localhost";

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

struct Driver {
    args: Args,
    homeserver: Homeserver,
    homeserver_url: String,
    bin_dir: PathBuf,
    work: PathBuf,
    started: usize,
    figures: Figures,
}

/// A started appservice, ready for load.
struct Running {
    process: AppProcess,
    session: Arc<Session>,
    pusher: Pusher,
    idle_kib: u64,
}

impl Driver {
    async fn start(&mut self, app: App, extra: &[String]) -> Result<Running, String> {
        self.started += 1;
        let n = self.started;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let registration = Registration::generate(
            "bench",
            Some(url.clone()),
            "benchbot",
            "bench_",
            "localhost",
        );
        let path = self.work.join(format!("registration-{n}.yaml"));
        registration.write_file(&path).map_err(|e| e.to_string())?;
        let session = Arc::new(Session::new(&registration.as_token, BOT, "localhost"));
        self.homeserver.start_session(session.clone());
        let log = self.work.join(format!("{n}-{}.log", app.binary()));
        let binary = self.bin_dir.join(app.binary());
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let pin = self.args.pin.then_some(["taskset", "-c", APP_CPU]);
        let wrap: Vec<String> = pin
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .chain(
                self.args
                    .wrap
                    .iter()
                    .flat_map(|w| w.split_whitespace().map(str::to_owned)),
            )
            .collect();
        let process = AppProcess::start(
            &wrap,
            &binary,
            &path,
            &self.homeserver_url,
            extra,
            &log,
            addr,
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(self.args.settle_ms)).await;
        let idle = memory_of(process.pid()).unwrap_or_default();
        let idle_kib = idle.rss_kib;
        self.figures.add(app, "idle", mb(idle_kib));
        self.figures.add(app, "idle.anon", mb(idle.anon_kib));
        self.figures.add(app, "idle.file", mb(idle.file_kib));
        if let Some(command) = &self.args.at_idle {
            at_idle(command, process.pid())?;
        }
        let mut pusher = Pusher::new(&url, &registration.hs_token);
        pusher.push(bot_joins(BOT, self.args.rooms)).await?;
        if self.args.warmup > 0 {
            let warmup = self.load(Command::Echo, self.args.warmup, 50, "w");
            let stall = self.stall();
            Phase::new(warmup, &session)
                .run(&mut pusher, stall)
                .await
                .map_err(|e| format!("warm-up: {e}; see {}", process.log().display()))?;
        }
        Ok(Running {
            process,
            session,
            pusher,
            idle_kib,
        })
    }

    fn load(&self, command: Command, events: usize, batch: usize, tag: &str) -> Load {
        Load {
            command,
            events,
            batch,
            rooms: self.args.rooms,
            tag: tag.into(),
        }
    }

    fn stall(&self) -> Duration {
        Duration::from_secs(self.args.stall_s)
    }

    /// Runs `load` against `running`, sampling its memory every 50 ms.
    async fn measure(
        &self,
        running: &mut Running,
        load: Load,
    ) -> Result<(Outcome, Vec<Sample>), String> {
        let phase = Phase::new(load, &running.session);
        let arrivals = phase.arrivals();
        let sampler = Sampler::start(
            running.process.pid(),
            Duration::from_millis(50),
            move || arrivals.arrived(),
        );
        let outcome = phase.run(&mut running.pusher, self.stall()).await;
        let samples = sampler.finish().await;
        let outcome =
            outcome.map_err(|e| format!("{e}; see {}", running.process.log().display()))?;
        Ok((outcome, samples))
    }

    async fn scenario(&mut self, scenario: Scenario, app: App) -> Result<String, String> {
        let a = &self.args;
        let mut extra = match scenario {
            Scenario::Flood => vec!["--handler-delay-ms".into(), a.flood_delay_ms.to_string()],
            _ => Vec::new(),
        };
        if app == App::Trestle {
            extra.extend(
                a.echo_args
                    .iter()
                    .flat_map(|s| s.split_whitespace().map(str::to_owned)),
            );
        }
        let load = match scenario {
            Scenario::Echo => self.load(Command::Echo, a.echo_events, a.echo_batch, "m"),
            Scenario::Echo1 => self.load(Command::Echo, a.echo1_events, 1, "m"),
            Scenario::Ghosts => self.load(Command::Ghost, a.ghosts, a.ghost_batch, ""),
            Scenario::Flood => self.load(Command::Echo, a.flood_events, a.flood_batch, "f"),
        };
        let mut running = self.start(app, &extra).await?;
        let warm_kib = running.process.rss_kib().0;
        let pid = running.process.pid();
        let cpu_before = cpu_time_of(pid).unwrap_or_default();
        let (outcome, samples) = self.measure(&mut running, load).await?;
        let cpu = cpu_time_of(pid)
            .unwrap_or_default()
            .saturating_sub(cpu_before);
        let cpu_us = cpu.as_secs_f64() * 1e6 / outcome.events as f64;
        let peak_kib = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let (end_kib, hwm_kib) = running.process.rss_kib();
        let f = &mut self.figures;
        let mut line = format!(
            "{:.0} events/s, {:.0} txn/s, p50 {:.1} ms, p99 {:.1} ms, pushed in {:.1} s, \
             CPU {cpu_us:.1} µs/event, idle {:.1} MB, peak {:.1} MB",
            outcome.events_per_s,
            outcome.transactions_per_s,
            outcome.p50_ms,
            outcome.p99_ms,
            outcome.push_elapsed.as_secs_f64(),
            mb(running.idle_kib),
            mb(peak_kib)
        );
        match scenario {
            Scenario::Echo => {
                f.add(app, "echo.eps", outcome.events_per_s);
                let push = outcome.push_elapsed.as_secs_f64().max(1e-9);
                f.add(app, "echo.ingest", outcome.events as f64 / push);
                f.add(app, "echo.p50", outcome.p50_ms);
                f.add(app, "echo.p99", outcome.p99_ms);
                f.add(app, "echo.cpu", cpu_us);
                f.add(app, "echo.peak", mb(peak_kib));
                f.add(app, "echo.hwm", mb(hwm_kib));
            }
            Scenario::Echo1 => {
                f.add(app, "echo1.tps", outcome.transactions_per_s);
                f.add(app, "echo1.p50", outcome.p50_ms);
                f.add(app, "echo1.p99", outcome.p99_ms);
                f.add(app, "echo1.cpu", cpu_us);
            }
            Scenario::Ghosts => {
                let ghosts = outcome.events as f64;
                // kB per ghost = MB per 1,000 ghosts.
                let per_ghost = |from: u64| mb(end_kib.saturating_sub(from)) * 1e3 / ghosts;
                f.add(app, "ghosts.eps", outcome.events_per_s);
                f.add(app, "ghosts.p50", outcome.p50_ms);
                f.add(app, "ghosts.p99", outcome.p99_ms);
                f.add(app, "ghosts.cpu", cpu_us);
                f.add(app, "ghosts.idle", per_ghost(running.idle_kib));
                f.add(app, "ghosts.warm", per_ghost(warm_kib));
                let registered = running.session.registered();
                line += &format!(
                    ", {registered} ghosts registered, RSS after {:.1} MB",
                    mb(end_kib)
                );
            }
            Scenario::Flood => {
                let half = outcome.push_elapsed / 2;
                let at = |t: Duration| {
                    samples
                        .iter()
                        .find(|s| s.at >= t)
                        .or(samples.last())
                        .copied()
                };
                let (mid, end) = (at(half), at(outcome.push_elapsed));
                let growth = match (mid, end) {
                    (Some(m), Some(e)) => mb(e.rss_kib) - mb(m.rss_kib),
                    _ => f64::NAN,
                };
                let backlog = end.map_or(0, |e| outcome.events.saturating_sub(e.arrived));
                f.add(app, "flood.peak", mb(peak_kib));
                f.add(app, "flood.growth", growth);
                f.add(app, "flood.backlog", backlog as f64);
                f.add(app, "flood.secs", outcome.elapsed.as_secs_f64());
                line += &format!(
                    ", backlog {backlog} at the end of the push, all echoed in {:.1} s, \
                     RSS growth over the 2nd half of the push {growth:+.1} MB\n    RSS: {}",
                    outcome.elapsed.as_secs_f64(),
                    series(&samples)
                );
            }
        }
        let counters = running.session.counters.summary();
        running.process.stop().await;
        Ok(format!("{line}\n    homeserver saw: {counters}"))
    }
}

/// RSS once a second: `0s 9.1 MB (0 echoed) · 1s …`.
fn series(samples: &[Sample]) -> String {
    let mut out = Vec::new();
    let mut next = Duration::ZERO;
    for s in samples {
        if s.at >= next {
            out.push(format!(
                "{:.0}s {:.1} MB ({} echoed)",
                s.at.as_secs_f64(),
                mb(s.rss_kib),
                s.arrived
            ));
            next += Duration::from_secs(1);
        }
    }
    out.join(" · ")
}

/// Runs `--at-idle`'s command with the appservice's pid, and waits for it.
fn at_idle(command: &str, pid: u32) -> Result<(), String> {
    let mut words = command.split_whitespace();
    let program = words.next().ok_or("--at-idle is empty")?;
    let status = std::process::Command::new(program)
        .args(words)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("--at-idle `{command}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("--at-idle `{command} {pid}` failed: {status}"))
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn binaries_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for app in [App::Null, App::Trestle] {
        if !dir.join(app.binary()).exists() {
            return Err(format!(
                "{} is not next to {}: build all three first with \
                 `cargo build --release -p trestle-bench`",
                app.binary(),
                exe.display()
            ));
        }
    }
    Ok(dir)
}

fn table(figures: &Figures, args: &Args) -> String {
    let echo = format!("echo B={}", args.echo_batch);
    let ghosts = format!("ghosts B={}", args.ghost_batch);
    let rows = [
        figures
            .row("echo.eps", &format!("{echo}: events/s"), 0)
            .target(Target::RatioAtLeast(0.6)),
        figures.row(
            "echo.ingest",
            &format!("{echo}: events/s accepted (pushes answered, handling aside)"),
            0,
        ),
        figures
            .row("echo.p50", &format!("{echo}: p50 latency, ms"), 1)
            .target(Target::Below(50.0)),
        figures
            .row("echo.p99", &format!("{echo}: p99 latency, ms"), 1)
            .target(Target::Below(150.0)),
        figures
            .row("echo.cpu", &format!("{echo}: CPU time per event, µs"), 0)
            .target(Target::RatioAtMost(1.7)),
        figures
            .row("echo1.tps", "echo B=1: transactions/s", 0)
            .target(Target::RatioAtLeast(0.7)),
        figures.row("echo1.p50", "echo B=1: p50 latency, ms", 1),
        figures.row("echo1.p99", "echo B=1: p99 latency, ms", 1),
        figures
            .row("echo1.cpu", "echo B=1: CPU time per event, µs", 0)
            .target(Target::RatioAtMost(1.7)),
        figures
            .row("ghosts.eps", &format!("{ghosts}: events/s"), 0)
            .target(Target::RatioAtLeast(0.8)),
        figures.row("ghosts.p50", &format!("{ghosts}: p50 latency, ms"), 1),
        figures.row("ghosts.p99", &format!("{ghosts}: p99 latency, ms"), 1),
        figures
            .row(
                "ghosts.cpu",
                &format!("{ghosts}: CPU time per event, µs"),
                0,
            )
            .target(Target::RatioAtMost(1.7)),
        figures
            .row("idle", "idle RSS, MB", 1)
            .target(Target::Below(12.0)),
        figures.row("idle.anon", "idle RSS: anonymous (heap, stacks), MB", 1),
        figures.row("idle.file", "idle RSS: file-backed (mapped code), MB", 1),
        figures
            .row(
                "echo.peak",
                &format!("peak RSS during {} echoes, MB", args.echo_events),
                1,
            )
            .target(Target::Below(40.0)),
        figures.row("echo.hwm", "VmHWM after those echoes, MB", 1),
        figures
            .row(
                "ghosts.idle",
                &format!(
                    "memory per 1,000 ghosts, MB (RSS after {} ghosts − idle)",
                    args.ghosts
                ),
                2,
            )
            .target(Target::Below(2.0)),
        figures.row(
            "ghosts.warm",
            "memory per 1,000 ghosts, MB (RSS after − RSS after warm-up)",
            2,
        ),
        figures.row(
            "flood.peak",
            &format!(
                "flood ({} events, {} ms handler): peak RSS, MB",
                args.flood_events, args.flood_delay_ms
            ),
            1,
        ),
        figures.row(
            "flood.growth",
            "flood: RSS growth over the 2nd half of the push, MB",
            1,
        ),
        figures.row(
            "flood.backlog",
            "flood: backlog at the end of the push, events",
            0,
        ),
        figures.row("flood.secs", "flood: until the last echo, s", 1),
    ];
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| !r.null.is_empty() || !r.trestle.is_empty())
        .collect();
    markdown(&rows)
}

/// The CPU `--pin` gives the appservice.
const APP_CPU: &str = "0";

/// Moves every thread of this process to the CPUs other than [`APP_CPU`] (`--pin`). Done
/// with `taskset` rather than a system call so the driver needs no unsafe code, and since the
/// runtime's threads already exist, with `-a` for all of them.
fn pin_driver() -> Result<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Err(format!(
            "--pin needs two CPUs or more; this machine shows {cpus}"
        ));
    }
    let others = if cpus == 2 {
        "1".to_owned()
    } else {
        format!("1-{}", cpus - 1)
    };
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &others, &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("--pin runs taskset (util-linux): {e}"))?;
    if !status.success() {
        return Err(format!(
            "--pin: taskset -a -p -c {others} {pid} failed: {status}"
        ));
    }
    Ok(others)
}

async fn run(args: Args) -> Result<(), String> {
    let bin_dir = binaries_dir()?;
    if args.pin {
        let others = pin_driver()?;
        println!("pinned: appservices on CPU {APP_CPU}, this driver on CPU {others}");
    }
    let homeserver = Homeserver::default();
    let homeserver_url = homeserver.serve_on_loopback().await?;
    let mut driver = Driver {
        args,
        homeserver,
        homeserver_url,
        bin_dir,
        work: tempfile::Builder::new()
            .prefix("trestle-bench-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep(),
        started: 0,
        figures: Figures::default(),
    };
    let began = Instant::now();
    let (runs, scenarios, apps) = (
        driver.args.runs,
        driver.args.scenarios.clone(),
        driver.args.apps.clone(),
    );
    for run in 1..=runs {
        for &scenario in &scenarios {
            let mut order = apps.clone();
            if run % 2 == 0 {
                order.reverse();
            }
            for app in order {
                let line = driver.scenario(scenario, app).await?;
                println!("run {run} {scenario:?} {app:?}: {line}");
            }
        }
    }
    let placement = if driver.args.pin {
        format!("appservice pinned to CPU {APP_CPU}, driver on the others")
    } else {
        "unpinned".to_owned()
    };
    println!(
        "\nmedians of {runs} runs, {placement}, {:.0} s in all\n",
        began.elapsed().as_secs_f64()
    );
    print!("{}", table(&driver.figures, &driver.args));
    // Kept when a scenario fails, for its logs.
    let _ = std::fs::remove_dir_all(&driver.work);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::at_idle;

    #[test]
    fn the_at_idle_command_gets_the_pid_last() {
        // `test 4242 -eq PID` succeeds only when the pid is added as the last argument.
        assert_eq!(at_idle("test 4242 -eq", 4242), Ok(()));
        let failed = at_idle("test 4242 -eq", 17).unwrap_err();
        assert!(failed.contains("`test 4242 -eq 17` failed"), "{failed}");
        assert!(at_idle("  ", 1).is_err());
    }
}
