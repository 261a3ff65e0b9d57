//! The timeline's JSON API as a test client sees it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The texts of a page of posts, in order.
#[allow(dead_code)] // not every test file reads pages
pub fn texts(page: &Value) -> Vec<&str> {
    page["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect()
}

/// The JSON API as one user (or nobody).
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// Asks `GET path` every 200 ms until `done` holds for the answer (returned); panics with
    /// `what` and the last answer after `timeout`.
    #[allow(dead_code)] // not every test file polls
    pub async fn poll(
        &self,
        path: &str,
        what: &str,
        timeout: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = std::time::Instant::now();
        loop {
            let value = self.ok(Method::GET, path, None).await;
            if done(&value) {
                return value;
            }
            assert!(started.elapsed() < timeout, "{what}: {value}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    pub async fn post(&self, text: &str) -> Value {
        self.ok(Method::POST, "/api/posts", Some(json!({ "text": text })))
            .await
    }
}
