//! The bridge's part of `trestle check` against a real ngircd: a network that answers is
//! reported reachable and registered; one that does not, with the reason, the field and the file.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/ngircd.rs"]
mod ngircd;

use std::path::Path;

use ngircd::{Ngircd, free_port};
use serde_json::json;
use trestle::plugin::{Finding, PluginSettings};

async fn check(settings: serde_json::Value) -> Vec<Finding> {
    let config = Path::new("/etc/trestle/trestle.yaml");
    trestle_irc::PLUGIN
        .run_check(&PluginSettings::new(config, "irc", Some(&settings), 40))
        .await
}

fn network(name: &str, port: u16) -> serde_json::Value {
    json!({"name": name, "host": "127.0.0.1", "port": port, "nick": "bridge", "channels": ["#a"]})
}

#[tokio::test]
async fn each_network_is_reached_and_registers_or_the_finding_says_what_to_change() {
    let server = Ngircd::start().await;
    let closed = free_port();
    let findings =
        check(json!({"networks": [network("up", server.port), network("down", closed)]})).await;
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(
        matches!(&findings[0], Finding::Ok(s)
            if s.contains(&format!("network `up` (127.0.0.1:{})", server.port))
                && s.contains("registered the check's connection as bridge-check")),
        "{findings:?}"
    );
    assert!(
        matches!(&findings[1], Finding::Fail(s)
            if s.contains(&format!("network `down` (127.0.0.1:{closed})"))
                && s.contains("could not connect")
                && s.contains("`plugins.irc.settings.networks[1]` in /etc/trestle/trestle.yaml")),
        "{findings:?}"
    );

    // No network: nothing to reach, said as a note.
    let findings = check(json!({"networks": []})).await;
    assert!(
        matches!(&findings[..], [Finding::Note(s)] if s.contains("`plugins.irc.settings.networks`")),
        "{findings:?}"
    );
}
