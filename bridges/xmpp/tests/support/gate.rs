//! A gate on a TCP port: open, it forwards connections to another port; closed, it cuts those
//! it forwards and drops new ones at once. The bridge's component connects through one, so a
//! test decides when the bridge can reach the server.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A running gate; it stops when dropped.
pub struct Gate {
    /// Where to connect.
    pub port: u16,
    open: Arc<AtomicBool>,
    forwarding: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Gate {
    /// An open gate to `target` on loopback.
    pub async fn start(target: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let forwarding = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let open = open.clone();
            let forwarding = forwarding.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    forwarding.lock().unwrap().push(task);
                }
            }
        });
        Gate {
            port,
            open,
            forwarding,
            accepting,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes the gate: connections through it are cut, new ones dropped.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for task in self.forwarding.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Opens the gate again.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
        self.accepting.abort();
    }
}
