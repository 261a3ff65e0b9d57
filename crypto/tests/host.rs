//! The `trestle` host with encryption on in its configuration file (`encryption:` as a map,
//! refusing devices that are not cross-signed), against a real Synapse:
//! the echo plugin's registration asks for devices and key counts, and the bot answers in an
//! encrypted room (matrix-sdk as the client), backing up its room keys under the recovery key
//! read from a file the configuration names. A host without encryption refuses the setting,
//! naming the file and the field, and a malformed recovery key is refused the same way.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use matrix_sdk::ruma::OwnedUserId;
use tokio::{net::TcpListener, sync::oneshot};
use trestle::ruma::api::{AppserviceUserIdentity, client::backup::get_latest_backup_info};
use trestle_host::{Host, config::Config, ensure_registration};
use trestle_tests::{
    appservice::WAIT,
    synapse::{Synapse, free_port},
};

#[path = "support/client.rs"]
mod client;
#[path = "support/setup.rs"]
mod setup;

/// Writes and loads the host's configuration: the echo plugin with encryption, accepting only
/// cross-signed devices (the test's client is one), its recovery key in the file `recovery.key`.
fn config(dir: &Path, port: u16, homeserver: &str) -> Config {
    let text = format!(
        "homeserver:\n  server_name: localhost\n  url: {homeserver}\nlisten: 127.0.0.1:{port}\n\
         plugins:\n  echo:\n    encryption: {{enabled: true, accept_unsigned_devices: false, \
         recovery_key: {{file: recovery.key}}}}\n"
    );
    let path = dir.join("trestle.yaml");
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_runs_a_plugin_with_encryption_from_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let plugins = [trestle_echo::PLUGIN];

    // The registration, written before Synapse starts (it loads them then), asks for what
    // encryption needs.
    let early = config(dir.path(), port, "http://127.0.0.1:1");
    let registration = ensure_registration(&early, &plugins[0]).unwrap();
    assert_eq!(registration.msc3202, Some(true));
    assert_eq!(registration.msc4190, Some(true));
    assert_eq!(registration.receive_ephemeral, Some(true));
    let synapse =
        Synapse::start_with(&[early.registration_path("echo")], setup::SYNAPSE_E2EE).await;
    let config = config(dir.path(), port, &synapse.base_url());

    // A host built without encryption refuses the setting rather than run in plaintext.
    let refused = Host::new(&config, &plugins).await.unwrap_err().to_string();
    assert_eq!(
        refused,
        format!(
            "{}: field `plugins.echo.encryption`: this host was built without end-to-end \
             encryption",
            config.path.display()
        )
    );

    let installer = Some(trestle_crypto::install_in_host as trestle_host::EncryptionInstaller);
    let key_file = dir.path().join("recovery.key");
    std::fs::write(&key_file, "EsT not a key\n").unwrap();
    let malformed = Host::with_encryption(&config, &plugins, installer).await;
    let malformed = malformed.unwrap_err().to_string();
    let expected = format!(
        "{}: field `plugins.echo.encryption`: the recovery key is not valid",
        config.path.display()
    );
    assert!(malformed.starts_with(&expected), "{malformed}");
    let key = trestle_crypto::RecoveryKey::generate().to_base58();
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let host = Host::with_encryption(&config, &plugins, installer)
        .await
        .unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(host.clone().run(listener, async {
        let _ = stopped.await;
    }));
    synapse
        .wait_for_appservice(&registration.id, &registration.as_token, WAIT)
        .await;
    // The bot's device is made when the plugin starts, its state under the data directory.
    let device_file = config.data_dir().join("crypto/echo/device_id");
    let deadline = std::time::Instant::now() + WAIT;
    while !device_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no device for the bot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bot = OwnedUserId::try_from("@echo:localhost").unwrap();
    let mut alice = client::User::register(&synapse, "alice").await;
    let room = alice.encrypted_room_with(&bot).await;
    alice
        .echo_round(&room, &bot, "!echo host-secret", "host-secret")
        .await;

    // Alice's room key and the bot's own reach the bot's backup.
    let as_token = &registration.as_token;
    let bot_client = trestle::client::HomeserverClient::new(synapse.base_url(), as_token).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let request = get_latest_backup_info::v3::Request::new();
        let latest = bot_client
            .send(request, AppserviceUserIdentity::new(&bot))
            .await;
        if latest.is_ok_and(|backup| u64::from(backup.count) >= 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no keys backed up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
