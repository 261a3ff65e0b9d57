//! `trestle check` against a real Synapse: success, and a clear reason for each way the
//! registration can be wrong; and a configuration typo refused with its line and field.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Output},
};

use trestle::Registration;
use trestle_tests::synapse::{Synapse, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_trestle");

fn trestle(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn init(config: &Path, homeserver: &str, port: u16) {
    let listen = format!("127.0.0.1:{port}");
    let output = trestle(
        config,
        &[
            "init",
            "--force",
            "--server-name",
            "localhost",
            "--homeserver-url",
            homeserver,
            "--listen",
            &listen,
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn registration_path(config: &Path, plugin: &str) -> std::path::PathBuf {
    let output = trestle(config, &["registration", plugin, "--path"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().into()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn check_reports_what_works_and_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    let port = free_port();
    init(&config, "http://127.0.0.1:1", port);
    let echo = registration_path(&config, "echo");
    let ping = registration_path(&config, "ping");
    // Synapse knows the echo plugin, and a ping registration whose hs_token differs from ours.
    let mut stale = Registration::from_file(&ping).unwrap();
    let stale_path = dir.path().join("stale-ping.yaml");
    stale.hs_token = trestle::registration::generate_token();
    stale.write_file(&stale_path).unwrap();
    let synapse = Synapse::start(&[echo.clone(), stale_path]).await;
    init(&config, &synapse.base_url(), port);

    let output = trestle(&config, &["check"]);
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    assert!(report.contains("ok    configuration"), "{report}");
    assert!(
        report.contains(&format!("ok    homeserver {} answers", synapse.base_url())),
        "{report}"
    );
    assert!(
        report.contains("ok    echo: the homeserver reached the plugin"),
        "{report}"
    );
    assert!(
        report.contains("FAIL  ping:") && report.contains("hs_token does not match"),
        "{report}"
    );

    // A plugin the homeserver does not know at all.
    let other = Synapse::start(std::slice::from_ref(&echo)).await;
    drop(synapse);
    init(&config, &other.base_url(), port);
    let report = stdout(&trestle(&config, &["check"]));
    assert!(report.contains("ok    echo"), "{report}");
    assert!(
        report.contains("FAIL  ping:") && report.contains("app_service_config_files"),
        "{report}"
    );

    // With only the echo plugin enabled, everything passes.
    let mut text = std::fs::read_to_string(&config).unwrap();
    for plugin in ["ping", "timeline", "moderation", "notify", "irc"] {
        let enabled = format!("  {plugin}:\n    enabled: true");
        assert!(
            text.contains(&enabled),
            "{plugin} is in the default configuration"
        );
        text = text.replace(&enabled, &format!("  {plugin}:\n    enabled: false"));
    }
    std::fs::write(&config, text).unwrap();
    let output = trestle(&config, &["check"]);
    assert!(output.status.success(), "{}", stdout(&output));

    // No homeserver there.
    init(&config, &format!("http://127.0.0.1:{}", free_port()), port);
    let report = stdout(&trestle(&config, &["check"]));
    assert!(
        report.contains("FAIL  homeserver") && report.contains("not reachable"),
        "{report}"
    );
}

/// Runs `trestle` with `args`, which must fail; returns what it said on stdout and stderr.
fn refused(config: &Path, args: &[&str]) -> String {
    let output = trestle(config, args);
    assert!(!output.status.success());
    format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_typo_in_the_configuration_is_refused_with_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    init(&config, "http://127.0.0.1:8008", free_port());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("  server_name: localhost", "  server_nmae: localhost");
    std::fs::write(&config, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("server_nmae"))
        .unwrap()
        + 1;
    for args in [&["run"][..], &["check"][..]] {
        let said = refused(&config, args);
        assert!(said.contains(&config.display().to_string()), "{said}");
        assert!(said.contains(&format!("line {line}")), "{said}");
        assert!(said.contains("unknown field `server_nmae`"), "{said}");
        assert!(said.contains("expected one of"), "{said}");
    }
}

#[test]
fn a_bad_encryption_value_is_refused_with_its_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trestle.yaml");
    init(&config, "http://127.0.0.1:8008", free_port());
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("    encryption: false", "    encryption: maybe", 1);
    std::fs::write(&config, &text).unwrap();
    let line = text.lines().position(|l| l.contains("maybe")).unwrap() + 1;
    let plugin = text
        .lines()
        .nth(line - 3)
        .unwrap()
        .trim()
        .trim_end_matches(':');
    for args in [&["run"][..], &["check"][..]] {
        let said = refused(&config, args);
        let expected = format!(
            "{}: line {line}: field `plugins.{plugin}.encryption`: expected true, false or a \
             map (enabled, accept_unsigned_devices, verify_users, recovery_key), found \"maybe\"",
            config.display()
        );
        assert!(said.contains(&expected), "{said}");
    }
}
