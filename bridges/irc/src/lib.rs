//! The IRC bridge: IRC channels as Matrix rooms (portals), IRC users as Matrix ghosts, and
//! Matrix users on IRC through their own connections (after `login`) or relayed by the bot.
//!
//! Built on the bridge kit (`trestle_bridge`): this crate writes the IRC side
//! ([`hub::Hub`], the kit's `Network`), the kit does portals, ghosts, the message map and
//! management rooms.
//!
//! # Modules
//!
//! The parts share state through the hub ([`hub::Hub`]: settings, our connections, what the
//! bot sees of channels, remembered messages), which they reach through the kit's handle
//! ([`hub::Kit`]), never by calling back into `network`. Each module uses (`use crate::…`)
//! only modules on lines below its own, so none uses one that uses it back, directly or
//! through others; a test (`layering.rs`) reads the sources and holds the crate to it.
//!
//! ```text
//! network      → events, moderation, users, hub, text, ids, irc   (the kit's Network trait)
//! check        → hub, settings, irc                                (its part of `trestle check`)
//! thirdparty   → hub, ids
//! events       → moderation, status, hub, ids, irc                 (IRC into Matrix)
//! moderation   → users, hub, ids, irc                              (kicks, bans, power levels)
//! users        → hub, ids, irc                                     (Matrix users' connections)
//! status       → hub, ids                                          (the bots' state in portals)
//! hub          → settings, irc                                     (the shared state)
//! settings     → irc
//! text         → irc
//! ids          → irc
//! irc                                                              (the protocol alone)
//! ```
//!
//! `lib` itself builds the router from `network`, `events` and `thirdparty`.

mod check;
pub mod events;
pub mod hub;
pub mod ids;
pub mod irc;
pub mod moderation;
pub mod network;
pub mod settings;
pub mod status;
pub mod text;
pub mod thirdparty;
pub mod users;

use trestle::{Plugin, Router, plugin::PluginSettings};

use trestle_bridge::{Bridge, BridgeConfig};

pub use settings::{NetworkSettings, Settings};

/// The plugin, for the `trestle` host. With no networks configured it runs and bridges nothing.
pub const PLUGIN: Plugin = Plugin::new("irc", "irc", "irc_", build)
    .with_check(check::check)
    .with_protocols(&["irc"])
    .with_settings_help(
        "settings:\n  \
         relay: true                    # the bot speaks for Matrix users without their own IRC connection\n  \
         connection_wait: 30            # seconds a user's messages wait for their own connection at start\n  \
         mode_power_levels: true        # +o/+h/+v give ghosts power 50/25/10\n  \
         alias_pattern: \"irc_{network}_{channel}\"\n  \
         ghost_pattern: \"irc_{network}_{nick}\"\n  \
         nick_pattern: \"{name}[m]\"      # nicks of Matrix users; {name} is their display name\n  \
         media_links:                   # signed links to Matrix media, served by the bridge\n    \
         # public_url: https://bridge.example.org/irc   # where IRC users reach it (default: the registration's url)\n    \
         lifetime: 604800               # seconds a link stays valid\n    \
         max_size: 52428800             # the largest file served, in bytes\n    \
         # key: a-long-random-secret    # default: made once and kept in the store\n  \
         # media_url: https://matrix.example.org   # instead: an address serving media without authentication\n  \
         # paste_over_lines: 10         # longer messages go to IRC as a link to the text\n  \
         # provisioning_secret: change-me\n  \
         delivery_status: true          # read receipts and status events for delivered messages\n  \
         # bridge_state_url: https://status.example/push   # where connection state changes are posted\n  \
         bridge_state_debounce_ms: 10000   # a connection lost for less is no outage\n  \
         policy_lists: []               # policy list rooms; users and rooms they ban are not bridged\n  \
         networks: []\n  \
         # - name: libera\n  \
         #   host: irc.libera.chat\n  \
         #   port: 6697\n  \
         #   tls: true\n  \
         #   tls_ca_file: /etc/ssl/irc-ca.pem   # certificates to trust besides the system's\n  \
         #   nick: trestle\n  \
         #   channels: [\"#trestle\"]\n  \
         #   sasl_account: trestle\n  \
         #   sasl_password: secret\n  \
         #   auto_connect: true         # Matrix users joining a portal get their own connection\n  \
         #   idle_timeout: 3600         # seconds in no portal before it closes",
    );

fn build(settings: &PluginSettings<'_>) -> trestle::Result<Router> {
    router(settings.get()?)
}

/// The bridge's router for `settings`.
pub fn router(settings: Settings) -> trestle::Result<Router> {
    let checked = settings.check().map_err(trestle::Error::Config)?;
    let mut config = BridgeConfig::default()
        .relay(checked.settings.relay)
        .connection_wait(checked.settings.connection_wait)
        .media_links(checked.settings.media_links.clone())
        .delivery_status(checked.settings.delivery_status)
        .bridge_state_debounce_ms(checked.settings.bridge_state_debounce_ms);
    if let Some(url) = &checked.settings.bridge_state_url {
        config = config.bridge_state_url(url.clone());
    }
    if let Some(secret) = &checked.settings.provisioning_secret {
        config = config.provisioning_secret(secret.clone());
    }
    for admin in &checked.settings.admins {
        config = config.admin(admin.clone());
    }
    for list in &checked.settings.policy_lists {
        config = config.policy_list(list.clone());
    }
    // The topic goes to IRC from the process that holds the connections, handed there with the
    // kit's events where processes share the store.
    let bridge = Bridge::new(hub::Hub::new(checked), config)
        .on_type("m.room.topic", |bridge, event| async move {
            events::matrix_topic(&bridge, event).await
        });
    let lookup = thirdparty::Lookup(bridge.handle());
    Ok(bridge.router().thirdparty(lookup))
}

#[cfg(test)]
mod layering;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_help_reads_as_settings() {
        #[derive(serde::Deserialize)]
        struct Section {
            settings: Settings,
        }
        let section: Section = serde_saphyr::from_str(PLUGIN.settings_help).unwrap();
        let links = &section.settings.media_links;
        assert_eq!((links.lifetime, links.max_size), (604_800, 52_428_800));
        assert!(router(section.settings).is_ok());
    }

    #[test]
    fn defaults_build_and_bad_settings_are_refused() {
        assert!(PLUGIN.router().is_ok());
        let bad = Settings {
            alias_pattern: "nothing".into(),
            ..Settings::default()
        };
        assert!(router(bad).is_err());
        let network = NetworkSettings {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..NetworkSettings::new("net", "irc.example", 6697)
        };
        let plain = Settings {
            networks: vec![network.clone()],
            ..Settings::default()
        };
        let error = router(plain).err().expect("refused").to_string();
        assert!(
            error.contains("tls_ca_file is set but tls is not"),
            "{error}"
        );
        let missing = Settings {
            networks: vec![NetworkSettings {
                tls: true,
                ..network
            }],
            ..Settings::default()
        };
        let error = router(missing).err().expect("refused").to_string();
        assert!(error.contains("not a readable file"), "{error}");
    }
}
