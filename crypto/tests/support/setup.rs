//! What the end-to-end tests share: Synapse and a registration set up for encryption, and the
//! appservice started with `trestle-crypto` installed.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::oneshot};
use trestle::{Appservice, Registration, Router, Store};
use trestle_crypto::{Crypto, Delivery, Settings};
use trestle_tests::appservice::{Harness, WAIT};

/// Synapse's settings for appservice encryption: to-device events and MSC3202 data in
/// transactions.
pub const SYNAPSE_E2EE: &str = "experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
";

/// Synapse as it comes, without the experimental features: to-device events and device lists
/// are not pushed, so each device fetches them with `/sync`.
pub const SYNAPSE_STOCK: &str = "experimental_features: {}\n";

/// The running test appservice.
///
/// Bind `crypto_dir` by name when destructuring: a `..` pattern drops it at the end of the
/// `let`, which deletes the crypto store under the running appservice.
pub struct Started {
    pub harness: Harness,
    pub crypto: Arc<Crypto>,
    pub crypto_dir: tempfile::TempDir,
}

/// Starts Synapse and the appservice `id` (its bot `id`, its ghosts `id_…`) serving `router`
/// with encryption (`settings`), and waits until the bot's device is set up.
pub async fn start(id: &str, router: Router, settings: Settings) -> Started {
    start_on(id, router, settings, SYNAPSE_E2EE).await
}

/// As [`start`], with `synapse_yaml` for Synapse's configuration instead of [`SYNAPSE_E2EE`].
pub async fn start_on(id: &str, router: Router, settings: Settings, synapse_yaml: &str) -> Started {
    let crypto_dir = tempfile::tempdir().unwrap();
    let crypto = Crypto::with_settings(crypto_dir.path(), settings);
    start_crypto_on(id, router, crypto, crypto_dir, synapse_yaml).await
}

/// As [`start`], with `crypto` (keeping its state in `crypto_dir`).
pub async fn start_with(
    id: &str,
    router: Router,
    crypto: Arc<Crypto>,
    crypto_dir: tempfile::TempDir,
) -> Started {
    start_crypto_on(id, router, crypto, crypto_dir, SYNAPSE_E2EE).await
}

/// As [`start_on`], with the registration Trestle generates now: the bot `@<id>` a user of the
/// namespace apart from a hidden `sender_localpart` (`Registration::generate_with_bot`).
pub async fn start_bot_apart_on(
    id: &str,
    router: Router,
    settings: Settings,
    synapse_yaml: &str,
) -> Started {
    let crypto_dir = tempfile::tempdir().unwrap();
    let crypto = Crypto::with_settings(crypto_dir.path(), settings);
    start_crypto_as(id, true, router, crypto, crypto_dir, synapse_yaml).await
}

async fn start_crypto_on(
    id: &str,
    router: Router,
    crypto: Arc<Crypto>,
    crypto_dir: tempfile::TempDir,
    synapse_yaml: &str,
) -> Started {
    start_crypto_as(id, false, router, crypto, crypto_dir, synapse_yaml).await
}

/// Starts the appservice `id`, whose bot is its sender unless `bot_apart`.
async fn start_crypto_as(
    id: &str,
    bot_apart: bool,
    router: Router,
    crypto: Arc<Crypto>,
    crypto_dir: tempfile::TempDir,
    synapse_yaml: &str,
) -> Started {
    let prefix = format!("{id}_");
    let mut registration = if bot_apart {
        Registration::generate_with_bot(id, None, id, &prefix, "localhost")
    } else {
        Registration::generate(id, None, id, &prefix, "localhost")
    };
    registration.msc3202 = Some(true);
    registration.msc4190 = Some(true);
    let router = crypto.clone().install(router);
    let harness = if bot_apart {
        Harness::start_with_bot(&mut registration, id, router, synapse_yaml).await
    } else {
        Harness::start_with(&mut registration, router, synapse_yaml).await
    };
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

/// Waits until `crypto` has found out how the homeserver delivers to-device events.
pub async fn wait_for_delivery(crypto: &Crypto) -> Delivery {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(delivery) = crypto.delivery() {
            return delivery;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery of to-device events was never decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The appservice started again by [`restart`].
pub struct Restarted {
    pub app: Appservice,
    pub crypto: Arc<Crypto>,
    stop: oneshot::Sender<()>,
    runner: tokio::task::JoinHandle<trestle::Result<()>>,
}

/// Stops the harness's appservice and starts a new one serving `router` for the same
/// registration, on the same store and crypto directory, as after a restart of Trestle.
pub async fn restart(
    harness: &mut Harness,
    crypto_dir: &Path,
    router: Router,
    settings: Settings,
) -> Restarted {
    let crypto = Crypto::with_settings(crypto_dir, settings);
    restart_with(harness, router, crypto).await
}

/// As [`restart`], with `crypto`.
pub async fn restart_with(harness: &mut Harness, router: Router, crypto: Arc<Crypto>) -> Restarted {
    harness.app.idle().await;
    harness.stop().await;
    let store_url = format!("sqlite://{}", harness.dir.path().join("store.db").display());
    let base_url = harness.synapse.base_url();
    let mut builder = Appservice::builder(harness.registration.clone(), base_url, "localhost");
    if let Some(bot) = &harness.bot_localpart {
        builder = builder.bot(bot);
    }
    let app = builder
        .router(crypto.clone().install(router))
        .store(Store::connect(&store_url).await.unwrap())
        .build()
        .await
        .unwrap();
    let port: u16 = harness.url.rsplit(':').next().unwrap().parse().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(app.clone().run(listener, async {
        let _ = stopped.await;
    }));
    wait_for_device(&crypto).await;
    Restarted {
        app,
        crypto,
        stop,
        runner,
    }
}

impl Restarted {
    /// Lets the appservice finish its work, then stops it.
    pub async fn stop(self) {
        self.app.idle().await;
        let _ = self.stop.send(());
        self.runner.await.unwrap().unwrap();
    }
}
