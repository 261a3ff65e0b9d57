//! A real Prosody for tests: its own configuration, data directory, ports and pidfile in a
//! temporary directory, run in the foreground as a child (never the system's service), with
//! a multi-user chat service (with moderation, XEP-0425: `mod_muc_moderation` of the Debian package
//! `prosody-modules`), message carbons (XEP-0280), an archive, an HTTP upload service (`mod_http_file_share`) and
//! a component for the bridge; killed when dropped.

use std::{
    net::TcpListener as StdListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::net::TcpStream;

/// The users' domain.
pub const DOMAIN: &str = "localhost";
/// The multi-user chat service.
pub const MUC: &str = "conference.localhost";
/// The HTTP upload service (XEP-0363).
pub const UPLOAD: &str = "upload.localhost";
/// The bridge's component.
pub const COMPONENT: &str = "matrix.localhost";
/// The component's secret.
pub const SECRET: &str = "component-secret-for-tests";

/// A running Prosody.
pub struct Prosody {
    /// Clients connect here (plain text: the test server offers no TLS).
    pub c2s_port: u16,
    /// The bridge's component connects here (XEP-0114).
    pub component_port: u16,
    /// The upload service serves files here (HTTP, loopback).
    pub http_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("TRESTLE_PROSODY") {
        return path.into();
    }
    for candidate in ["/usr/bin/prosody", "/usr/local/bin/prosody"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("prosody is not installed: run scripts/install-prosody.sh (or set TRESTLE_PROSODY)");
}

/// `prosodyctl`, beside the server's binary.
fn ctl() -> PathBuf {
    binary().with_file_name("prosodyctl")
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Prosody {
    /// Starts a server with the accounts `users` (each with the password `password`).
    pub async fn start(users: &[&str]) -> Prosody {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Prosody {
            c2s_port: free_port(),
            component_port: free_port(),
            http_port: free_port(),
            dir,
            child: None,
        };
        server.write_config();
        for user in users {
            server.register(user);
        }
        server.spawn().await;
        server
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn write_config(&self) {
        let dir = self.dir.path().display();
        std::fs::create_dir_all(self.dir.path().join("data")).expect("data dir");
        // No TLS, no server-to-server, HTTP for the upload service alone: a server for one test
        // process on loopback. Files are served at 127.0.0.1 (the upload service's name does
        // not resolve), whatever host a request names.
        // `run_as_root`: CI runs as root, and prosodyctl would otherwise switch to a
        // `prosody` user that cannot write the temporary directory.
        let config = format!(
            r#"run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}"
admins = {{}}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "mam"; "vcard"; "carbons"; }}
modules_disabled = {{ "s2s"; "tls"; "posix"; }}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{}}
http_ports = {{ {http} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{}}
http_default_host = "{UPLOAD}"
http_external_url = "http://127.0.0.1:{http}/"
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{dir}/prosody.log" }} }}
VirtualHost "{DOMAIN}"
Component "{MUC}" "muc"
    modules_enabled = {{ "muc_mam"; "muc_moderation" }}
    muc_room_locking = false
    muc_room_default_persistent = true
    muc_room_default_change_subject = true
Component "{UPLOAD}" "http_file_share"
Component "{COMPONENT}"
    component_secret = "{SECRET}"
"#,
            c2s = self.c2s_port,
            component = self.component_port,
            http = self.http_port,
        );
        std::fs::write(self.config(), config).expect("write prosody.cfg.lua");
    }

    fn register(&self, user: &str) {
        let status = Command::new(ctl())
            .arg("--config")
            .arg(self.config())
            .args(["register", user, DOMAIN, &password(user)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run prosodyctl");
        assert!(status.success(), "prosodyctl could not register {user}");
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        for _ in 0..400 {
            let c2s = TcpStream::connect(("127.0.0.1", self.c2s_port))
                .await
                .is_ok();
            let component = TcpStream::connect(("127.0.0.1", self.component_port))
                .await
                .is_ok();
            if c2s && component {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("prosody did not start listening:\n{}", self.log_tail());
    }

    /// Kills the server at once (SIGKILL: no goodbyes to anyone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data (its rooms and archives kept).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The end of the server's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Where the upload service serves its files, for the bridge's `upload_url`.
    pub fn upload_url(&self) -> String {
        format!("http://127.0.0.1:{}/file_share/", self.http_port)
    }

    /// The component's address, for the bridge's settings.
    pub fn component_address(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }
}

/// The password of a test account.
pub fn password(user: &str) -> String {
    format!("{user}-password")
}

impl Drop for Prosody {
    fn drop(&mut self) {
        // A failing test shows what the server saw.
        if std::thread::panicking() {
            eprintln!("---- the end of Prosody's log ----\n{}", self.log_tail());
        }
        self.kill();
    }
}
