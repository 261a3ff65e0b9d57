//! `runtime.threads` in the configuration shapes the runtime `trestle run` starts: the
//! process shows that many worker threads, or none beside the main thread for `1`.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use trestle_tests::synapse::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

/// Kills the process when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `trestle run` with `runtime` appended to a fresh configuration; returns once it
/// listens, with its port.
fn start(dir: &Path, runtime: &str) -> Running {
    let config = dir.join("trestle.yaml");
    let port = free_port();
    let status = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["init", "--server-name", "localhost", "--force", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{runtime}\n")).unwrap();
    let log = std::fs::File::create(dir.join("trestle.log")).unwrap();
    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "trestle run exited ({status}): {}",
                std::fs::read_to_string(dir.join("trestle.log")).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "trestle run never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The names of the process's threads.
fn threads(child: &Running) -> Vec<String> {
    let tasks = format!("/proc/{}/task", child.0.id());
    std::fs::read_dir(tasks)
        .unwrap()
        .map(|task| {
            let comm = task.unwrap().path().join("comm");
            std::fs::read_to_string(comm).unwrap().trim().to_owned()
        })
        .collect()
}

fn workers(child: &Running) -> usize {
    threads(child)
        .iter()
        .filter(|name| *name == "tokio-rt-worker")
        .count()
}

#[test]
fn threads_sets_the_runtime_workers() {
    let dir = tempfile::tempdir().unwrap();
    // More than this machine's CPUs, so the default (one per CPU) cannot pass for it.
    let child = start(dir.path(), "runtime:\n  threads: 5");
    assert_eq!(workers(&child), 5, "{:?}", threads(&child));
}

#[test]
fn one_thread_runs_the_plugins_on_the_main_thread() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), "runtime:\n  threads: 1");
    let names = threads(&child);
    assert_eq!(workers(&child), 0, "{names:?}");
    assert!(names.iter().any(|name| name == "trestle"), "{names:?}");
}

#[test]
fn zero_threads_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    let status = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["init", "--server-name", "localhost"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\nruntime:\n  threads: 0\n")).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trestle.yaml: field `runtime.threads`: expected at least 1"),
        "{stderr}"
    );
}
