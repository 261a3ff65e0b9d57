//! What `trestle check` finds about one plugin before it asks the homeserver anything: its
//! encryption mode, the flags of its registration file, and the plugin's own check of what it
//! needs (a bridge's network). Each finding names the file and the field to change.

use trestle::{
    Plugin, Registration,
    plugin::{Finding, PluginSettings},
};

use crate::{
    config::{Config, PluginSection},
    ensure_registration,
};

/// Everything the host can find about `plugin` without the homeserver: its encryption mode,
/// its registration's flags and the plugin's own check.
pub async fn plugin_findings(config: &Config, plugin: &Plugin) -> Vec<Finding> {
    let name = plugin.name;
    let section = config.plugins.get(name);
    let encryption = section.is_some_and(PluginSection::encryption);
    let mut findings = vec![encryption_finding(config, name, encryption)];
    match ensure_registration(config, plugin) {
        Ok(registration) => findings.extend(registration_findings(
            config,
            plugin,
            &registration,
            encryption,
        )),
        Err(error) => findings.push(Finding::Fail(format!("{name}: registration: {error}"))),
    }
    let settings = section.map_or(PluginSettings::none(), |s| {
        s.plugin_settings(&config.path, name)
    });
    findings.extend(plugin.run_check(&settings).await);
    findings
}

fn encryption_finding(config: &Config, name: &str, on: bool) -> Finding {
    let field = format!("`plugins.{name}.encryption` in {}", config.path.display());
    if on {
        Finding::Ok(format!(
            "{name}: encryption on ({field}): it works in encrypted rooms"
        ))
    } else {
        Finding::Note(format!(
            "{name}: encryption off ({field}): it sees nothing in encrypted rooms; set it to true \
             to work there (docs/e2ee.md)"
        ))
    }
}

/// The registration's flags against what the plugin takes from the homeserver: ephemeral
/// events ([MSC2409](https://github.com/matrix-org/matrix-spec-proposals/pull/2409), stable
/// name `receive_ephemeral`) where it uses them or runs with encryption (to-device events come
/// that way when the homeserver pushes them), and MSC3202 and MSC4190 with encryption.
pub fn registration_findings(
    config: &Config,
    plugin: &Plugin,
    registration: &Registration,
    encryption: bool,
) -> Vec<Finding> {
    let name = plugin.name;
    let file = config.registration_path(name);
    let file = file.display();
    let restart = "then give the file to the homeserver again and restart it (it reads registrations at start)";
    let mut findings = Vec::new();
    let uses = match (plugin.ephemeral, encryption) {
        (Some(what), true) => Some(format!("{what} and to-device events")),
        (Some(what), false) => Some(what.to_owned()),
        (None, true) => Some("to-device events (when the homeserver pushes them)".to_owned()),
        (None, false) => None,
    };
    if let Some(uses) = uses {
        let stable = registration.receive_ephemeral == Some(true);
        let unstable = registration.push_ephemeral_unstable == Some(true);
        findings.push(match (stable, unstable) {
            (true, true) => Finding::Ok(format!(
                "{name}: {file} asks for ephemeral events ({uses}): `receive_ephemeral` and its \
                 MSC2409 name `de.sorunome.msc2409.push_ephemeral` are true"
            )),
            (true, false) => Finding::Ok(format!(
                "{name}: {file} asks for ephemeral events ({uses}) with `receive_ephemeral`"
            )),
            (false, true) => Finding::Note(format!(
                "{name}: {file} asks for ephemeral events ({uses}) only by MSC2409's name \
                 `de.sorunome.msc2409.push_ephemeral`: Synapse reads it, homeservers that follow \
                 the spec read `receive_ephemeral`; set `receive_ephemeral: true` there too"
            )),
            (false, false) => Finding::Fail(format!(
                "{name}: {file}: field `receive_ephemeral` is not true (nor MSC2409's \
                 `de.sorunome.msc2409.push_ephemeral`): the homeserver sends the plugin no {uses}; \
                 set `receive_ephemeral: true` there, {restart}"
            )),
        });
    }
    if encryption {
        let missing: Vec<&str> = [
            ("org.matrix.msc3202", registration.msc3202),
            ("io.element.msc4190", registration.msc4190),
        ]
        .into_iter()
        .filter(|(_, on)| *on != Some(true))
        .map(|(field, _)| field)
        .collect();
        findings.push(if missing.is_empty() {
            Finding::Ok(format!(
                "{name}: {file} has `org.matrix.msc3202` (device lists and key counts) and \
                 `io.element.msc4190` (devices the plugin makes), as encryption needs"
            ))
        } else {
            let set: Vec<String> = missing.iter().map(|f| format!("`{f}: true`")).collect();
            Finding::Fail(format!(
                "{name}: {file}: encryption needs {}, which the file does not have: set it there, \
                 {restart}",
                set.join(" and ")
            ))
        });
    }
    findings
}

#[cfg(test)]
mod tests;
