//! What several tests of the `trestle` command share: where a plugin's registration file is.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The registration file of `plugin` under the configuration `config`, as
/// `trestle registration <plugin> --path` makes it (if missing) and prints its path.
pub fn registration_path(config: &Path, plugin: &str) -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_trestle"))
        .arg("--config")
        .arg(config)
        .args(["registration", plugin, "--path"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}
