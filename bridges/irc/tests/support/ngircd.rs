//! A real ngircd for tests: started on a free port with its own configuration in a temporary
//! directory, killed when dropped; plus a TCP gate to hold a client off while the test sets up.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};

/// A running ngircd.
pub struct Ngircd {
    pub port: u16,
    /// With TLS: its port, and the server's self-signed certificate (PEM) to trust.
    pub tls: Option<(u16, PathBuf)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("TRESTLE_NGIRCD") {
        return path.into();
    }
    for candidate in [
        "/usr/sbin/ngircd",
        "/usr/bin/ngircd",
        "/usr/local/sbin/ngircd",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("ngircd is not installed: run scripts/install-ngircd.sh (or set TRESTLE_NGIRCD)");
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Ngircd {
    pub async fn start() -> Ngircd {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Ngircd {
            port: free_port(),
            tls: None,
            dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// A server that also listens with TLS, on a certificate made for the test (with the
    /// `openssl` command) for `127.0.0.1`.
    pub async fn start_with_tls() -> Ngircd {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let config = dir.path().join("cert.cnf");
        std::fs::write(
            &config,
            "[req]\ndistinguished_name = dn\nx509_extensions = v3\nprompt = no\n\
             [dn]\nCN = localhost\n\
             [v3]\nbasicConstraints = critical,CA:FALSE\n\
             subjectAltName = DNS:localhost,IP:127.0.0.1\n\
             keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n",
        )
        .expect("write cert.cnf");
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(&cert)
            .arg("-config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(made.success(), "openssl could not make a certificate");
        let mut server = Ngircd {
            port: free_port(),
            tls: Some((free_port(), cert)),
            dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let config = self.dir.path().join("ngircd.conf");
        std::fs::write(
            &config,
            format!(
                "[Global]\nName = irc.test\nInfo = trestle test server\nListen = 127.0.0.1\n\
                 Ports = {port}\nMotdPhrase = hello\nAdminInfo1 = test\nAdminInfo2 = test\n\
                 AdminEMail = test@example.org\n\
                 [Limits]\nMaxConnectionsIP = 0\nMaxNickLength = 30\nPingTimeout = 120\nPongTimeout = 20\n\
                 [Options]\nPAM = no\nIdent = no\nDNS = no\n{tls}",
                port = self.port,
                tls = self.tls_section(),
            ),
        )
        .expect("write ngircd.conf");
        let child = Command::new(binary())
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ngircd");
        self.child = Some(child);
        let ports = [Some(self.port), self.tls.as_ref().map(|(p, _)| *p)];
        for _ in 0..200 {
            let mut up = true;
            for port in ports.iter().flatten() {
                up &= TcpStream::connect(("127.0.0.1", *port)).await.is_ok();
            }
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("ngircd did not start listening on port {}", self.port);
    }

    fn tls_section(&self) -> String {
        match &self.tls {
            Some((port, cert)) => format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {port}\n",
                cert.display(),
                self.dir.path().join("key.pem").display()
            ),
            None => String::new(),
        }
    }

    /// Kills the server at once (SIGKILL): every client's connection breaks.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP forwarder to the server that can refuse new connections (it accepts and closes them),
/// so a test decides when the bridge may come back after an outage.
pub struct Gate {
    pub port: u16,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    pub async fn new(upstream: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().expect("gate address").port();
        let open = Arc::new(AtomicBool::new(true));
        let is_open = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue;
                }
                let target = SocketAddr::from(([127, 0, 0, 1], upstream));
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Gate { port, open, task }
    }

    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}
