//! The bridge's part of `trestle check` against a real Prosody: the component port answers the
//! stream header for the bridge's domain; a domain the server has no component for, or a port
//! where nothing listens, is a failure naming the field and the file.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::path::Path;

use serde_json::json;
use support::prosody::{COMPONENT, Prosody, SECRET};
use trestle::plugin::{Finding, PluginSettings};
use trestle_tests::synapse::free_port;

async fn check(settings: serde_json::Value) -> Vec<Finding> {
    let config = Path::new("/etc/trestle/trestle.yaml");
    trestle_xmpp::PLUGIN
        .run_check(&PluginSettings::new(config, "xmpp", Some(&settings), 40))
        .await
}

#[tokio::test]
async fn the_component_port_answers_for_the_domain_or_the_finding_says_what_to_change() {
    let server = Prosody::start(&[]).await;
    let address = server.component_address();
    let findings = check(json!({"server": address, "domain": COMPONENT, "secret": SECRET})).await;
    assert!(
        matches!(&findings[..], [Finding::Ok(s)]
            if s.contains(&format!("component port {address} answers the stream header for the component `{COMPONENT}`"))),
        "{findings:?}"
    );

    let findings =
        check(json!({"server": address, "domain": "elsewhere.localhost", "secret": SECRET})).await;
    assert!(
        matches!(&findings[..], [Finding::Fail(s)]
            if s.contains("no component `elsewhere.localhost` (stream error host-unknown)")
                && s.contains("`plugins.xmpp.settings.domain` in /etc/trestle/trestle.yaml")),
        "{findings:?}\n{}",
        server.log_tail()
    );

    let closed = format!("127.0.0.1:{}", free_port());
    let findings = check(json!({"server": closed, "domain": COMPONENT, "secret": SECRET})).await;
    assert!(
        matches!(&findings[..], [Finding::Fail(s)]
            if s.contains("could not connect") && s.contains("`plugins.xmpp.settings.server` in /etc/trestle/trestle.yaml")),
        "{findings:?}"
    );

    // Not configured: a note saying what to set.
    let findings = check(json!({})).await;
    assert!(
        matches!(&findings[..], [Finding::Note(s)] if s.contains("set `server` and `secret`")),
        "{findings:?}"
    );
}
