//! A headless Chromium driven through the DevTools protocol over a websocket: just enough to
//! open a page, run script in it, wait for conditions and take a screenshot.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// The browser binary: `$TRESTLE_CHROMIUM`, else `chromium` on PATH. Missing is a failure,
/// never a skip: `scripts/install-chromium.sh` installs it.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TRESTLE_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is not installed: no `chromium` on PATH. Run scripts/install-chromium.sh \
                 (or set TRESTLE_CHROMIUM to the browser binary)."
            )
        })
}

/// A running browser with one page; killed when dropped.
pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and connects to its first page.
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1000,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromium");
        // Chromium says where its DevTools endpoint is on stderr.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let browser_ws = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
                seen.push(line);
            }
            panic!("chromium exited before listening:\n{}", seen.join("\n"));
        })
        .await
        .expect("chromium did not start within 60 s");
        // Keep draining stderr so the browser never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_ws
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .unwrap()
            .to_owned();
        let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target in {targets:?}"));
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .expect("connecting to the page's DevTools socket");
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends a DevTools command and returns its result; events in between are ignored.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}"),
        }
    }

    /// As [`Browser::call`], with the browser's refusal as an error (an evaluation whose page
    /// navigated away meanwhile, say).
    pub async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within 60 s"))
                .expect("the DevTools socket closed")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    return Err(error.clone());
                }
                return Ok(value["result"].clone());
            }
        }
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            url,
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                json!(url)
            ),
        )
        .await;
    }

    /// Runs `script` (an expression; promises are awaited) in the page and returns its value.
    pub async fn eval(&mut self, script: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": script, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("script failed: {exception}\n{script}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `script` is truthy; panics with `what` and the page's text after 30 s.
    pub async fn wait_for(&mut self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            // Before the page has loaded the script may throw: that is "not yet".
            // While the page goes from one site to another (a sign-on's redirects) there may
            // be no page to evaluate in: that is "not yet" too.
            let probe = format!(
                "(() => {{ try {{ return Boolean({script}); }} catch (e) {{ return false; }} }})()"
            );
            let value = self
                .try_call(
                    "Runtime.evaluate",
                    json!({ "expression": probe, "awaitPromise": true, "returnByValue": true }),
                )
                .await;
            if value.is_ok_and(|v| v["result"]["value"] == json!(true)) {
                return;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let text = self.eval("document.body.innerText").await;
                panic!("waited 30 s for {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types into an input: sets its value the way the page reads it.
    pub async fn fill(&mut self, selector: &str, text: &str) {
        let script = format!(
            "(() => {{ const e = document.querySelector({}); e.focus(); e.value = {}; \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()",
            json!(selector),
            json!(text)
        );
        assert_eq!(self.eval(&script).await, json!(true), "filling {selector}");
    }

    /// Clicks an element.
    pub async fn click(&mut self, selector: &str) {
        let script = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            json!(selector)
        );
        assert_eq!(
            self.eval(&script).await,
            json!(true),
            "no {selector} to click"
        );
    }

    /// A PNG of the page.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let result = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().unwrap())
            .unwrap()
    }

    /// Closes the browser and waits for it to exit.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}
