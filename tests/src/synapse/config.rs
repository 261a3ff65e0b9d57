//! Turns the `homeserver.yaml` that `synapse.app.homeserver --generate-config` writes into a
//! test-friendly configuration, with plain line-based YAML edits (no YAML library needed).
//!
//! Rule: a top-level key (a line starting with `key:` in column 0) owns every following line that is
//! indented, starts with `-`, is a comment or is blank. The harness drops the generated blocks of the
//! keys it sets itself, and drops its own blocks of the keys that the caller's extra YAML sets, so
//! each key appears once and the caller always wins (PyYAML would silently keep the last duplicate;
//! this keeps the file readable and unambiguous).

use std::path::PathBuf;

/// A rate limit nobody reaches in a test.
const GENEROUS: &str = "{per_second: 100000, burst_count: 1000000}";

/// The top-level keys of a YAML mapping, in order.
pub(crate) fn top_level_keys(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(top_level_key)
        .map(str::to_owned)
        .collect()
}

fn top_level_key(line: &str) -> Option<&str> {
    let first = line.chars().next()?;
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return None;
    }
    let (key, _) = line.split_once(':')?;
    let key = key.trim_end();
    key.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .then_some(key)
}

/// Removes the blocks of the given top-level keys; everything else is kept verbatim.
pub(crate) fn remove_top_level_keys(yaml: &str, keys: &[String]) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut skipping = false;
    for line in yaml.lines() {
        if let Some(key) = top_level_key(line) {
            skipping = keys.iter().any(|k| k == key);
        } else if skipping && !is_continuation(line) {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn is_continuation(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with([' ', '\t', '-', '#'])
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A Synapse that federates: its federation listener (TLS, as Synapse only ever speaks
/// federation over TLS) and the certificate it presents.
pub(crate) struct Federation {
    /// The port of the TLS listener, which is also the port in the server name.
    pub(crate) port: u16,
    pub(crate) certificate: PathBuf,
    pub(crate) private_key: PathBuf,
}

/// The settings the harness adds to every Synapse.
pub(crate) fn harness_settings(
    port: u16,
    registrations: &[PathBuf],
    federation: Option<&Federation>,
) -> String {
    let mut y = String::new();
    y.push_str("# ---- added by trestle_tests::synapse ----\n");
    y.push_str(&format!(
        "listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    \
         x_forwarded: false\n    resources:\n      - names: [client, federation]\n        compress: false\n"
    ));
    if let Some(federation) = federation {
        y.push_str(&federation_settings(federation));
    }
    if registrations.is_empty() {
        y.push_str("app_service_config_files: []\n");
    } else {
        y.push_str("app_service_config_files:\n");
        for r in registrations {
            y.push_str(&format!("  - {}\n", quoted(&r.to_string_lossy())));
        }
    }
    // Where browsers reach it: single sign-on sends them back here.
    y.push_str(&format!("public_baseurl: \"http://127.0.0.1:{port}/\"\n"));
    y.push_str(
        "enable_registration: true\n\
         enable_registration_without_verification: true\n\
         trusted_key_servers: []\n\
         suppress_key_server_warning: true\n\
         report_stats: false\n",
    );
    for key in [
        "rc_message",
        "rc_registration",
        "rc_registration_token_validity",
        "rc_joins_per_room",
        "rc_3pid_validation",
        "rc_third_party_invite",
        "rc_room_creation",
        "rc_delayed_event_mgmt",
        "rc_media_create",
        "rc_reports",
        "rc_user_directory",
        "rc_profile",
        "rc_key_requests",
    ] {
        y.push_str(&format!("{key}: {GENEROUS}\n"));
    }
    y.push_str(&format!(
        "rc_login:\n  address: {GENEROUS}\n  account: {GENEROUS}\n  failed_attempts: {GENEROUS}\n"
    ));
    y.push_str(&format!(
        "rc_joins:\n  local: {GENEROUS}\n  remote: {GENEROUS}\n"
    ));
    y.push_str(&format!(
        "rc_invites:\n  per_room: {GENEROUS}\n  per_user: {GENEROUS}\n  per_issuer: {GENEROUS}\n"
    ));
    y.push_str(&format!("rc_presence:\n  per_user: {GENEROUS}\n"));
    y.push_str(
        "experimental_features:\n  msc2409_to_device_messages_enabled: true\n  \
         msc3202_transaction_extensions: true\n",
    );
    y
}

/// The second listener (continuing `listeners:`) and the top-level keys of a federating Synapse.
/// Its peers are on loopback with self-signed certificates: certificates go unchecked, and the
/// loopback ranges, which Synapse refuses to reach by default (`ip_range_blacklist`, which
/// federation uses too while `federation_ip_range_blacklist` is unset), are allowed.
fn federation_settings(federation: &Federation) -> String {
    format!(
        "  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: true\n    \
         x_forwarded: false\n    resources:\n      - names: [federation]\n        compress: false\n\
         tls_certificate_path: {certificate}\n\
         tls_private_key_path: {key}\n\
         federation_verify_certificates: false\n\
         ip_range_whitelist: ['127.0.0.0/8', '::1/128']\n",
        port = federation.port,
        certificate = quoted(&federation.certificate.to_string_lossy()),
        key = quoted(&federation.private_key.to_string_lossy()),
    )
}

/// The final `homeserver.yaml`: the generated file without the keys set later (and without
/// `log_config`, so that Synapse logs to stderr, unbuffered), then the harness settings without the
/// keys `extra` sets, then `extra`.
pub(crate) fn build(
    generated: &str,
    port: u16,
    registrations: &[PathBuf],
    federation: Option<&Federation>,
    extra: &str,
) -> String {
    let ours = harness_settings(port, registrations, federation);
    let extra_keys = top_level_keys(extra);
    let mut drop_from_generated = top_level_keys(&ours);
    drop_from_generated.extend(extra_keys.iter().cloned());
    drop_from_generated.push("log_config".to_owned());

    let mut out = remove_top_level_keys(generated, &drop_from_generated);
    out.push_str(&remove_top_level_keys(&ours, &extra_keys));
    if !extra.trim().is_empty() {
        out.push_str("# ---- extra YAML from the test ----\n");
        out.push_str(extra);
        if !extra.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = "# comment\nserver_name: \"localhost\"\nlisteners:\n  - bind_addresses:\n    - ::1\n    \
                             - 127.0.0.1\n    port: 8008\n    type: http\nlog_config: \"/x/log.config\"\n\
                             trusted_key_servers:\n  - server_name: \"matrix.org\"\n\n\n# vim:ft=yaml";

    #[test]
    fn keys_are_replaced_not_duplicated() {
        let out = build(
            GENERATED,
            1234,
            &[PathBuf::from("/r/a.yaml")],
            None,
            "rc_message: {per_second: 1, burst_count: 2}",
        );
        let keys = top_level_keys(&out);
        for k in &keys {
            assert_eq!(
                keys.iter().filter(|x| *x == k).count(),
                1,
                "duplicate {k} in\n{out}"
            );
        }
        assert!(keys.contains(&"server_name".to_owned()));
        assert!(!keys.contains(&"log_config".to_owned()));
        assert!(out.contains("port: 1234"));
        assert!(!out.contains("8008"));
        assert!(!out.contains("matrix.org"));
        assert!(out.contains("  - \"/r/a.yaml\"\n"));
        assert!(out.contains("rc_message: {per_second: 1, burst_count: 2}\n"));
        assert!(out.contains("rc_registration: {per_second: 100000"));
    }

    #[test]
    fn a_federating_synapse_gets_a_second_listener_and_loopback_peers() {
        let federation = Federation {
            port: 4321,
            certificate: PathBuf::from("/d/tls.crt"),
            private_key: PathBuf::from("/d/tls.key"),
        };
        let out = build(GENERATED, 1234, &[], Some(&federation), "");
        let keys = top_level_keys(&out);
        assert_eq!(keys.iter().filter(|k| *k == "listeners").count(), 1);
        // Both listeners belong to `listeners:`: the TLS one follows the plain one.
        let listeners = out.split("listeners:\n").nth(1).unwrap();
        let block: String = listeners
            .lines()
            .take_while(|l| l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(block.contains("port: 1234"), "{block}");
        assert!(block.contains("- port: 4321"), "{block}");
        assert!(block.contains("tls: true"), "{block}");
        assert!(out.contains("tls_certificate_path: \"/d/tls.crt\"\n"));
        assert!(out.contains("federation_verify_certificates: false\n"));
        assert!(out.contains("ip_range_whitelist: ['127.0.0.0/8', '::1/128']\n"));
    }

    #[test]
    fn missing_final_newline_is_added() {
        let out = remove_top_level_keys("a: 1\nb:\n  - x\nc: 3", &["b".to_owned()]);
        assert_eq!(out, "a: 1\nc: 3\n");
    }
}
