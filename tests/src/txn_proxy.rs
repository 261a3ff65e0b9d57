//! A recording proxy between Synapse and an appservice.
//!
//! It forwards every request Synapse makes to the appservice and keeps a copy of each transaction
//! (`PUT /_matrix/app/v1/transactions/{txnId}`), so a test can see which ids Synapse used for which
//! events. It can also make transactions fail after the appservice received them, as when an
//! answer is lost on the way back: Synapse then keeps the transaction pending and sends it again.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::synapse::http_client;

const TRANSACTIONS: &str = "/_matrix/app/v1/transactions/";

/// One transaction as Synapse pushed it through the proxy.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The `txnId` of the path.
    pub txn_id: String,
    /// The `event_id`s of its `events`, in order.
    pub event_ids: Vec<String>,
    /// The whole body.
    pub body: Value,
    /// The status Synapse got back.
    pub status: u16,
}

/// The proxy, serving until the test ends.
pub struct TxnProxy {
    url: String,
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    http: reqwest::Client,
    deliveries: Mutex<Vec<Delivery>>,
    fail_after_forwarding: AtomicBool,
}

impl TxnProxy {
    /// Listens on a free loopback port and forwards to `target` (`http://host:port`).
    pub async fn start(target: String) -> TxnProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            target,
            http: http_client(),
            deliveries: Mutex::default(),
            fail_after_forwarding: AtomicBool::new(false),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TxnProxy { url, shared }
    }

    /// What the registration's `url` should be.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// While on, each transaction still reaches the appservice, but Synapse is answered 500.
    pub fn fail_after_forwarding(&self, on: bool) {
        self.shared
            .fail_after_forwarding
            .store(on, Ordering::SeqCst);
    }

    /// Every transaction so far, in the order they arrived.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = shared
        .http
        .request(method.clone(), format!("{}{path}", shared.target))
        .body(body.clone());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let (status, content_type, answer) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            (
                status,
                content_type,
                response.bytes().await.unwrap_or_default(),
            )
        }
        Err(e) => (502, None, Bytes::from(format!("proxy: {e}"))),
    };
    let txn_id = uri
        .path()
        .strip_prefix(TRANSACTIONS)
        .filter(|_| method == Method::PUT);
    let Some(txn_id) = txn_id else {
        let mut response = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            answer,
        )
            .into_response();
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        return response;
    };

    let failing = shared.fail_after_forwarding.load(Ordering::SeqCst);
    let status = if failing { 500 } else { status };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let event_ids = body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    shared.deliveries.lock().unwrap().push(Delivery {
        txn_id: txn_id.to_owned(),
        event_ids,
        body,
        status,
    });
    let answer: Value = match failing {
        true => json!({"errcode": "M_UNKNOWN", "error": "failed by the test proxy"}),
        false => serde_json::from_slice(&answer).unwrap_or(Value::Null),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        axum::Json(answer),
    )
        .into_response()
}
