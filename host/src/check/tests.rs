//! The registration's flags against what a plugin takes, and a plugin's own check run with
//! its section's settings.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{future::Future, pin::Pin};

use trestle::{
    Plugin, Router,
    plugin::{Finding, PluginSettings},
};

use super::{plugin_findings, registration_findings};
use crate::config::Config;

fn quiet(_: &PluginSettings<'_>) -> trestle::Result<Router> {
    Ok(Router::new())
}

/// Says which `target` its settings name, or why they do not read (as a plugin's check reads them).
fn check_target(
    settings: &PluginSettings<'_>,
) -> Pin<Box<dyn Future<Output = Vec<Finding>> + Send>> {
    #[derive(serde::Deserialize, Default)]
    struct Settings {
        target: String,
    }
    let finding = match settings.read_for_check(|s: Settings| Ok(s)) {
        Ok(s) => Finding::Ok(format!("target {}", s.target)),
        Err(finding) => finding,
    };
    Box::pin(async move { vec![finding] })
}

const TYPING: Plugin = Plugin::new("typing", "typing", "typing_", quiet)
    .with_ephemeral("typing notifications")
    .with_check(check_target);

fn config(dir: &std::path::Path, section: &str) -> Config {
    let path = dir.join("trestle.yaml");
    let yaml = format!(
        "homeserver:\n  server_name: x\n  url: http://127.0.0.1:9\nplugins:\n  typing:\n{section}"
    );
    std::fs::write(&path, yaml).unwrap();
    Config::load(&path).unwrap()
}

fn fails(findings: &[Finding]) -> Vec<&str> {
    findings
        .iter()
        .filter_map(|f| match f {
            Finding::Fail(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_plugin_that_takes_ephemeral_events_wants_them_in_its_registration() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "    settings:\n      target: irc.example.org\n");
    // A fresh registration asks for them, under both names.
    let findings = plugin_findings(&config, &TYPING).await;
    assert!(fails(&findings).is_empty(), "{findings:?}");
    assert!(
        findings.iter().any(|f| matches!(f, Finding::Ok(s)
            if s.contains("receive_ephemeral") && s.contains("de.sorunome.msc2409.push_ephemeral")
                && s.contains("typing notifications"))),
        "{findings:?}"
    );
    // The plugin's own check ran on the section's settings.
    assert!(
        findings.contains(&Finding::Ok("target irc.example.org".into())),
        "{findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::Note(s) if s.contains("`plugins.typing.encryption`"))),
        "{findings:?}"
    );

    // A file that does not: the finding names the file, the field and what to set.
    let path = config.registration_path("typing");
    let mut registration = trestle::Registration::from_file(&path).unwrap();
    registration.receive_ephemeral = Some(false);
    registration.push_ephemeral_unstable = None;
    registration.write_file(&path).unwrap();
    let findings = plugin_findings(&config, &TYPING).await;
    let failed = fails(&findings);
    assert_eq!(failed.len(), 1, "{findings:?}");
    assert!(
        failed[0].contains(&path.display().to_string()),
        "{}",
        failed[0]
    );
    assert!(
        failed[0].contains("field `receive_ephemeral` is not true"),
        "{}",
        failed[0]
    );
    assert!(
        failed[0].contains("set `receive_ephemeral: true`"),
        "{}",
        failed[0]
    );

    // Only the unstable name: a note to set the stable one too.
    registration.push_ephemeral_unstable = Some(true);
    let findings = registration_findings(&config, &TYPING, &registration, false);
    assert!(
        matches!(&findings[..], [Finding::Note(s)] if s.contains("set `receive_ephemeral: true` there too")),
        "{findings:?}"
    );

    // Settings the plugin cannot read: its check says so, with the file and field.
    let config = self::config(dir.path(), "    settings:\n      target: [1]\n");
    let findings = plugin_findings(&config, &TYPING).await;
    assert!(
        fails(&findings)
            .iter()
            .any(|f| f.starts_with("typing: settings: ")
                && f.contains("field `plugins.typing.settings`")),
        "{findings:?}"
    );
}

#[tokio::test]
async fn encryption_wants_msc3202_and_msc4190() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "    encryption: true\n");
    let quiet = Plugin::new("typing", "typing", "typing_", quiet);
    let mut registration = quiet.generate_registration_with_bot(None, "x");
    registration.receive_ephemeral = Some(true);
    let findings = registration_findings(&config, &quiet, &registration, true);
    let failed = fails(&findings);
    assert_eq!(failed.len(), 1, "{findings:?}");
    assert!(
        failed[0].contains("`org.matrix.msc3202: true` and `io.element.msc4190: true`"),
        "{}",
        failed[0]
    );
    registration.msc3202 = Some(true);
    registration.msc4190 = Some(true);
    let findings = registration_findings(&config, &quiet, &registration, true);
    assert!(fails(&findings).is_empty(), "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::Ok(s) if s.contains("to-device events"))),
        "{findings:?}"
    );
}
