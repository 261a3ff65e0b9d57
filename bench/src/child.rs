//! The appservice under test, as a child process: started, watched, measured, stopped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use crate::rss_kib_of;

/// A running appservice under test.
pub struct AppProcess {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl AppProcess {
    /// Starts `[wrap…] binary --registration … --homeserver … [extra…]`, its output going to
    /// `log`, and waits until it accepts connections at `addr`. `wrap` is a command that runs
    /// the binary in the same process, such as `valgrind --tool=callgrind`.
    pub async fn start(
        wrap: &[String],
        binary: &Path,
        registration: &Path,
        homeserver: &str,
        extra: &[String],
        log: &Path,
        addr: SocketAddr,
    ) -> Result<Self, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = match wrap.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("--registration")
            .arg(registration)
            .arg("--homeserver")
            .arg(homeserver)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("the child exited at once")?;
        let mut process = AppProcess {
            child,
            pid,
            log: log.to_owned(),
        };
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(process);
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before listening; see {}",
                    binary.display(),
                    log.display()
                ));
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "{} did not listen at {addr} within 120 s; see {}",
                    binary.display(),
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Resident set size and its high-water mark now, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib_of(self.pid).unwrap_or((0, 0))
    }

    /// Asks it to stop (SIGTERM) and waits up to 60 s, then kills it.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("pid {} did not stop on SIGTERM; killing it", self.pid);
            let _ = self.child.kill().await;
        }
    }
}

/// One sample of a process's memory while a load runs.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Since the sampler started.
    pub at: Duration,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Echoes arrived by then.
    pub arrived: usize,
}

/// Samples a process's resident set size every `interval` until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `pid`; `arrived` says how many echoes arrived so far.
    pub fn start(
        pid: u32,
        interval: Duration,
        arrived: impl Fn() -> usize + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                ticks.tick().await;
                let Some((rss_kib, _)) = rss_kib_of(pid) else {
                    break;
                };
                samples.push(Sample {
                    at: started.elapsed(),
                    rss_kib,
                    arrived: arrived(),
                });
            }
            samples
        });
        Sampler { stop, task }
    }

    /// Stops and returns the samples.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
