//! What the end-to-end tests share: Synapse and a registration set up for encryption, and the
//! appservice started with `trestle-crypto` installed.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use trestle::{Registration, Router};
use trestle_crypto::{Crypto, Settings};
use trestle_tests::appservice::{Harness, WAIT};

/// Synapse's settings for appservice encryption: to-device events and MSC3202 data in
/// transactions.
pub const SYNAPSE_E2EE: &str = "experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
";

/// The running test appservice.
pub struct Started {
    pub harness: Harness,
    pub crypto: Arc<Crypto>,
    pub crypto_dir: tempfile::TempDir,
}

/// Starts Synapse and the appservice `id` (its bot `id`, its ghosts `id_…`) serving `router`
/// with encryption (`settings`), and waits until the bot's device is set up.
pub async fn start(id: &str, router: Router, settings: Settings) -> Started {
    let mut registration = Registration::generate(id, None, id, &format!("{id}_"), "localhost");
    registration.msc3202 = Some(true);
    registration.msc4190 = Some(true);
    let crypto_dir = tempfile::tempdir().unwrap();
    let crypto = Crypto::with_settings(crypto_dir.path(), settings);
    let router = crypto.clone().install(router);
    let harness = Harness::start_with(&mut registration, router, SYNAPSE_E2EE).await;
    wait_for_device(&crypto).await;
    Started {
        harness,
        crypto,
        crypto_dir,
    }
}

/// Waits until `crypto`'s bot device is set up.
pub async fn wait_for_device(crypto: &Crypto) {
    let deadline = Instant::now() + WAIT;
    while crypto.device_id().is_none() {
        assert!(
            Instant::now() < deadline,
            "the bot's device was never set up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
