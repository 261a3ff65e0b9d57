//! `trestle init` writes the configuration readable by its owner only: the file may hold
//! secrets inline, like the registration files beside it (mode 0600).

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
