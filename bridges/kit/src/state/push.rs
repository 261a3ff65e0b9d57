//! Posting published bridge states to the configured URL, in order.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::super::{BridgeHandle, Network};

/// How long one post may take; a receiver that does not answer loses that change, not the
/// ones after it.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

impl<N: Network> BridgeHandle<N> {
    /// Queues a published state for the receiver, if one is configured. One task posts them
    /// one after another, so the receiver sees the changes in the order they happened.
    pub(crate) fn push_state(&self, state: Value) {
        let Some(url) = self.config().bridge_state_url.clone() else {
            return;
        };
        let Ok(app) = self.app() else { return };
        let pushes = self.shared.states.pushes.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let token = app.registration().as_token.clone();
            tokio::spawn(post_all(url, token, receiver));
            sender
        });
        let _ = pushes.send(state);
    }
}

async fn post_all(url: String, token: String, mut states: mpsc::UnboundedReceiver<Value>) {
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .build()
        .unwrap_or_default();
    while let Some(state) = states.recv().await {
        let posted = client
            .post(&url)
            .bearer_auth(&token)
            .json(&state)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = posted {
            tracing::warn!(%url, %error, "could not post a bridge state change");
        }
    }
}
