//! `runtime.threads` in the configuration shapes the runtime `trestle run` starts: the
//! process shows that many worker threads, or none beside the main thread for `1`, and on
//! that one thread the plugins still answer. Unset, one worker per CPU the process may run on,
//! and none beside the main thread where that is one CPU.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use trestle::Registration;
use trestle_tests::synapse::{Synapse, free_port};

#[path = "support/echo_room.rs"]
mod echo_room;
#[path = "support/registration.rs"]
mod registration;

use echo_room::room_with_echo;
use registration::registration_path;

#[path = "support/running.rs"]
mod running;

use running::Running;

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

/// Writes a fresh configuration for `homeserver`, listening at `port`, with `runtime`
/// appended.
fn configure(dir: &Path, homeserver: &str, port: u16, runtime: &str) {
    let config = dir.join("trestle.yaml");
    let status = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["init", "--server-name", "localhost", "--force"])
        .args(["--homeserver-url", homeserver, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{runtime}\n")).unwrap();
}

/// Starts `trestle run` with `runtime` appended to a fresh configuration; returns once it
/// listens.
fn start(dir: &Path, runtime: &str) -> Running {
    let port = free_port();
    configure(dir, "http://127.0.0.1:8008", port, runtime);
    run(dir, port)
}

/// Starts `trestle run` on the configuration in `dir`; returns once it listens at `port`.
fn run(dir: &Path, port: u16) -> Running {
    run_in(dir, port, Command::new(BIN))
}

/// Starts `trestle run` by `command` (the binary, or a command that runs it).
fn run_in(dir: &Path, port: u16, mut command: Command) -> Running {
    let config = dir.join("trestle.yaml");
    let log = std::fs::File::create(dir.join("trestle.log")).unwrap();
    let mut child = Running(
        command
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
fn unset_it_is_one_worker_per_cpu_and_none_on_one_cpu() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), "");
    let expected = if cpus == 1 { 0 } else { cpus };
    assert_eq!(workers(&child), expected, "{:?}", threads(&child));
    drop(child);

    // On one CPU (its affinity set by taskset, which then runs trestle in its place).
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configure(dir.path(), "http://127.0.0.1:8008", port, "");
    let mut pinned = Command::new("taskset");
    pinned.args(["-c", "0", BIN]);
    let child = run_in(dir.path(), port, pinned);
    let names = threads(&child);
    assert_eq!(workers(&child), 0, "{names:?}");
    assert!(names.iter().any(|name| name == "trestle"), "{names:?}");
}

#[test]
fn one_thread_runs_the_plugins_on_the_main_thread() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), "runtime:\n  threads: 1");
    let names = threads(&child);
    assert_eq!(workers(&child), 0, "{names:?}");
    assert!(names.iter().any(|name| name == "trestle"), "{names:?}");
}

#[tokio::test]
async fn the_echo_plugin_answers_on_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let one = "runtime:\n  threads: 1";
    // The registration must exist before Synapse starts, and Synapse's URL is known after.
    configure(dir.path(), "http://127.0.0.1:1", port, one);
    let registration_path = registration_path(&dir.path().join("trestle.yaml"), "echo");
    let registration = Registration::from_file(&registration_path).unwrap();
    let synapse = Synapse::start(std::slice::from_ref(&registration_path)).await;
    configure(dir.path(), &synapse.base_url(), port, one);
    let child = run(dir.path(), port);
    assert_eq!(workers(&child), 0, "{:?}", threads(&child));
    synapse
        .wait_for_appservice(
            &registration.id,
            &registration.as_token,
            Duration::from_secs(30),
        )
        .await;
    let (user, room) = room_with_echo(&synapse).await;
    user.send_text(&room, "!echo on one thread").await;
    user.wait_for_event(&room, Duration::from_secs(30), |e| {
        e["sender"] == "@echo:localhost"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|body| body.contains("on one thread"))
    })
    .await;
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
