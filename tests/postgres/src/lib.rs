//! A real PostgreSQL for tests.
//!
//! [`fresh_database`] hands each caller a new, empty database on a throwaway PostgreSQL server. The
//! server is private to the test process: started on first use (parallel tests in one binary share
//! it), on a free port on 127.0.0.1, with its data in a temporary directory, and it dies with the
//! process. It comes from the Debian packages that `scripts/install-postgres.sh` installs:
//! `$TRESTLE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`. A missing or broken PostgreSQL
//! is a test failure, never a skip.
//!
//! PostgreSQL refuses to run as root; as root, the cluster belongs to (and the server runs as) the
//! `postgres` system user that the Debian package creates.
//!
//! How the server cannot outlive the test process: it is spawned directly (not daemonized by
//! `pg_ctl`) with a parent-death signal (`PR_SET_PDEATHSIG`, SIGQUIT: PostgreSQL's immediate
//! shutdown), so the kernel stops it when the test process is gone, however it ended. At a normal
//! exit an `atexit` handler also stops it and deletes its directory; a directory left behind by a
//! killed test process is deleted by the next test process that starts a server.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::chown;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};

/// How long the server may take to accept connections after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often to try a new port when the one picked was taken before the server could bind it.
const START_ATTEMPTS: usize = 3;
/// Log lines shown in panic messages.
const LOG_LINES: usize = 40;
/// The cluster's superuser (`initdb -U`); authentication is `trust`.
const SUPERUSER: &str = "trestle";
/// Temporary directories are named `<temp dir>/trestle-pg-XXXXXX`.
const DIR_PREFIX: &str = "trestle-pg-";
/// A server directory without a `lock` file this old is debris of a failed start.
const UNLOCKED_DIR_MAX_AGE: Duration = Duration::from_secs(600);

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
/// The running server's pid, its exit status once its thread has reaped it, and its directory;
/// for the `atexit` handler.
static EXIT_CLEANUP: OnceLock<(u32, ExitSlot, PathBuf)> = OnceLock::new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(1);

/// Set to the server's exit status (as text) when it has exited and been reaped.
type ExitSlot = Arc<Mutex<Option<String>>>;

/// The test process's PostgreSQL server.
struct Server {
    port: u16,
    /// Holds `data/` (the cluster), `postgres.log`, the Unix socket and `lock`.
    dir: PathBuf,
    /// `dir/lock`, flock-ed while this process lives: tells other test processes the directory is
    /// in use.
    _lock: File,
}

/// A fresh, empty database on a throwaway local PostgreSQL server; returns its URL
/// (`postgres://trestle@127.0.0.1:PORT/dbname`).
///
/// The first call in a test process starts the server (about a second); every call creates a new
/// database with a unique name. Panics, with the server log's tail where there is one, if
/// PostgreSQL is not installed (run `scripts/install-postgres.sh`) or does not start.
pub async fn fresh_database() -> String {
    let server = match SERVER.get() {
        Some(server) => server,
        // Starting blocks (initdb, waiting for the server), so keep it off the async threads.
        None => match tokio::task::spawn_blocking(|| SERVER.get_or_init(start)).await {
            Ok(server) => server,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("starting PostgreSQL: {e}"),
            },
        },
    };
    let server = match server {
        Ok(server) => server,
        Err(e) => panic!("no PostgreSQL for the tests: {e}"),
    };

    let name = format!(
        "trestle_test_{}",
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = PgConnection::connect_with(&server.options("postgres"))
        .await
        .unwrap_or_else(|e| server.fail(&format!("connecting to PostgreSQL: {e}")));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| server.fail(&format!("creating database {name}: {e}")));
    let _ = conn.close().await;
    format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", server.port)
}

impl Server {
    fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    fn fail(&self, message: &str) -> ! {
        panic!("{message}{}", log_tail(&self.dir))
    }
}

/// Starts the server: finds PostgreSQL, creates the directory and cluster, spawns `postgres` and
/// waits until it accepts connections. Runs once per process; an error is kept and repeated to
/// every later caller.
fn start() -> Result<Server, String> {
    let started = Instant::now();
    let bin = bin_dir()?;
    let owner = server_user()?;
    remove_stale_dirs();

    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .map_err(|e| format!("creating the PostgreSQL temp dir: {e}"))?
        .keep();
    let lock = create_lock(&dir)?;
    if let Some((uid, gid)) = owner {
        chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("giving {} to the postgres user: {e}", dir.display()))?;
    }
    let data = dir.join("data");

    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
        .arg("--no-locale")
        .current_dir(&dir)
        .stdin(Stdio::null());
    child_setup(&mut initdb, owner, libc::SIGTERM);
    let out = initdb
        .output()
        .map_err(|e| format!("running {}: {e}", bin.join("initdb").display()))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let initdb_done = started.elapsed();

    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        match spawn_and_wait(&bin, &dir, port, owner) {
            Ok((pid, exit)) => {
                register_exit_cleanup(pid, exit, &dir);
                eprintln!(
                    "PostgreSQL started on 127.0.0.1:{port} in {} ms (initdb {} ms), in {}",
                    started.elapsed().as_millis(),
                    initdb_done.as_millis(),
                    dir.display()
                );
                return Ok(Server {
                    port,
                    dir,
                    _lock: lock,
                });
            }
            Err(e)
                if attempt < START_ATTEMPTS
                    && fs::read_to_string(dir.join("postgres.log"))
                        .is_ok_and(|log| log.contains("could not bind")) =>
            {
                eprintln!("PostgreSQL could not bind port {port} ({e}); trying another port");
            }
            Err(e) => return Err(format!("{e}{}", log_tail(&dir))),
        }
    }
    unreachable!()
}

/// Spawns `postgres` on `port` and waits until it accepts connections; returns its pid and where
/// its exit status will appear.
fn spawn_and_wait(
    bin: &Path,
    dir: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<(u32, ExitSlot), String> {
    let data = dir.join("data");
    let log = File::create(dir.join("postgres.log"))
        .map_err(|e| format!("creating postgres.log: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cloning log handle: {e}"))?;
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(dir)
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off"])
        .args(["-c", "max_connections=200"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    child_setup(&mut cmd, owner, libc::SIGQUIT);

    // The parent-death signal fires when the *thread* that spawned the child ends, not the
    // process; test threads (and tokio's blocking threads) come and go. So a thread of its own
    // spawns the server and then stays, reaping it, for as long as it runs.
    let (spawned_tx, spawned_rx) = mpsc::channel();
    let exit = ExitSlot::default();
    let exit2 = Arc::clone(&exit);
    std::thread::Builder::new()
        .name(format!("postgres-{port}"))
        .spawn(move || {
            let mut child = match cmd.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                    return;
                }
            };
            let _ = spawned_tx.send(Ok(child.id()));
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            *exit2
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
        })
        .map_err(|e| format!("spawning the postgres thread: {e}"))?;
    let pid = spawned_rx
        .recv()
        .map_err(|_| "the postgres thread died".to_string())?
        .map_err(|e| format!("spawning {}: {e}", bin.join("postgres").display()))?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited(&exit) {
            return Err(format!("postgres exited during start-up ({status})"));
        }
        if is_ready(&data, pid) {
            return Ok((pid, exit));
        }
        if Instant::now() >= deadline {
            // SAFETY: plain syscall; the pid is still our unreaped child (or a zombie).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return Err(format!(
                "PostgreSQL did not accept connections within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exited(exit: &ExitSlot) -> Option<String> {
    exit.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Whether the postmaster `pid` says it accepts connections: line 8 of `postmaster.pid` is
/// `ready` (what `pg_ctl -w` checks).
fn is_ready(data: &Path, pid: u32) -> bool {
    let Ok(pidfile) = fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = pidfile.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

/// In the child, before exec: drop to `owner` (uid, gid) if given, then ask for `signal` when our
/// spawning thread dies. The order matters: changing credentials clears the parent-death signal.
fn child_setup(cmd: &mut Command, owner: Option<(u32, u32)>, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls;
    // it allocates nothing (errors are raw OS errors).
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = owner
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Our parent died before the prctl: nothing will signal us, so don't start.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The directory with `initdb` and `postgres`: `$TRESTLE_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("TRESTLE_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "TRESTLE_PG_BIN={} has no initdb and postgres: PostgreSQL is not installed \
                 there. Run scripts/install-postgres.sh (it prints the right directory).",
                dir.display()
            ))
        };
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            let dir = entry.path().join("bin");
            has_server(&dir).then_some((version, dir))
        })
        .max();
    match newest {
        Some((_, dir)) => Ok(dir),
        None => Err("PostgreSQL is not installed: no initdb and postgres under \
                     /usr/lib/postgresql/*/bin, and TRESTLE_PG_BIN is not set. Run \
                     scripts/install-postgres.sh (as root; it installs the Debian packages)."
            .to_string()),
    }
}

/// `Some((uid, gid))` of the `postgres` user when we are root (PostgreSQL refuses to run as root),
/// `None` (run as ourselves) otherwise.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both ours and sized as passed.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(
            "running as root, which PostgreSQL refuses, and there is no `postgres` user \
                    to run it as. Run scripts/install-postgres.sh (the Debian package creates \
                    the user)."
                .to_string(),
        );
    }
    Ok(Some((pwd.pw_uid, pwd.pw_gid)))
}

/// Creates `dir/lock` already flock-ed (locked as `lock.tmp`, then renamed), so no other process
/// ever sees it unlocked while we live.
fn create_lock(dir: &Path) -> Result<File, String> {
    let tmp = dir.join("lock.tmp");
    let file = File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    if !try_lock(&file) {
        return Err(format!("could not lock {}", tmp.display()));
    }
    fs::rename(&tmp, dir.join("lock")).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    Ok(file)
}

fn try_lock(file: &File) -> bool {
    // SAFETY: plain syscall on a descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Deletes the server directories of test processes that are gone (their `lock` is not held),
/// first killing any server still running in one.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let stale = match File::open(dir.join("lock")) {
            Ok(lock) => try_lock(&lock),
            Err(e) if e.kind() == io::ErrorKind::NotFound => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > UNLOCKED_DIR_MAX_AGE),
            Err(_) => false,
        };
        if stale {
            kill_server_in(&dir);
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// SIGKILLs the postmaster of `dir/data` if one is still running.
fn kill_server_in(dir: &Path) {
    let data = dir.join("data");
    let Some(pid) = fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|f| f.lines().next()?.trim().parse::<libc::pid_t>().ok())
    else {
        return;
    };
    let is_that_server = fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let data = data.as_os_str().as_encoded_bytes();
        cmdline.windows(data.len()).any(|w| w == data)
    });
    if is_that_server {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// At a normal process exit: stop the server (immediate shutdown), wait briefly until it is gone,
/// delete its directory.
fn register_exit_cleanup(pid: u32, exit: ExitSlot, dir: &Path) {
    extern "C" fn cleanup() {
        let Some((pid, exit, dir)) = EXIT_CLEANUP.get() else {
            return;
        };
        if exited(exit).is_none() {
            // SAFETY: plain syscall; the pid is our child and not yet reaped (its thread reaps it
            // and then fills `exit`).
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while exited(exit).is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = fs::remove_dir_all(dir);
    }
    if EXIT_CLEANUP.set((pid, exit, dir.to_path_buf())).is_ok() {
        // SAFETY: registers a plain function that does not unwind.
        unsafe { libc::atexit(cleanup) };
    }
}

/// The tail of the server's log, for panic messages.
fn log_tail(dir: &Path) -> String {
    let log = dir.join("postgres.log");
    match fs::read_to_string(&log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "\n--- last lines of {} ---\n{}",
                log.display(),
                lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
            )
        }
        Err(_) => String::new(),
    }
}

/// A free TCP port on 127.0.0.1 (bind port 0, read, drop); the Synapse harness takes its ports
/// here too.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}
