//! `trestle init` writes the configuration readable by its owner only: the file may hold
//! secrets inline, like the registration files beside it (mode 0600). And `trestle plugins
//! --enabled` follows the file it wrote.

#![cfg(unix)]
// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

fn init(config: &Path, force: bool) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.arg("--config").arg(config).args([
        "init",
        "--server-name",
        "localhost",
        "--homeserver-url",
        "http://127.0.0.1:8008",
    ]);
    if force {
        command.arg("--force");
    }
    command.output().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_configuration_is_written_for_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    let output = init(&config, false);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(mode(&config), 0o600, "{:o}", mode(&config));
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("server_name: localhost")
    );

    // A file left readable by everyone is narrowed when it is replaced.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = init(&config, true);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(mode(&config), 0o600, "{:o}", mode(&config));
    // And an existing file is not replaced without --force.
    let output = init(&config, false);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--force"));
}

fn plugins(config: &Path, enabled: bool) -> Vec<String> {
    let mut command = Command::new(BIN);
    command.arg("--config").arg(config).arg("plugins");
    if enabled {
        command.arg("--enabled");
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `plugins --enabled` lists what `run` would run: the demo registers only those with Synapse,
/// so that it pings no appservice nobody serves.
#[test]
fn plugins_enabled_follows_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    assert!(init(&config, false).status.success());
    let all = plugins(&config, false);
    assert!(
        all.iter().any(|p| p == "xmpp") && all.iter().any(|p| p == "echo"),
        "{all:?}"
    );
    // The XMPP bridge is off by default: `init` writes its section with `enabled: false`.
    let enabled = plugins(&config, true);
    assert!(!enabled.iter().any(|p| p == "xmpp"), "{enabled:?}");
    assert_eq!(enabled.len(), all.len() - 1, "{enabled:?}");

    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen(
        "  echo:\n    enabled: true",
        "  echo:\n    enabled: false",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let enabled = plugins(&config, true);
    assert!(!enabled.iter().any(|p| p == "echo"), "{enabled:?}");
    assert_eq!(enabled.len(), all.len() - 2, "{enabled:?}");
}
