//! The XMPP bridge: multi-user chat rooms (XEP-0045) as Matrix rooms (portals), XMPP users as
//! Matrix ghosts, Matrix users on XMPP as JIDs of the bridge's component (XEP-0114), and
//! direct chats both ways; rooms' archives (XEP-0313) fill new portals and catch up what the
//! bridge missed. Typing and read markers, joins, kicks, bans and nick changes, affiliations and
//! roles (as power levels) and avatars cross too, and the `xmpp` third-party protocol finds
//! rooms and users by JID. A Matrix user may log in with their own XMPP account: what they send
//! from their own clients (message carbons, XEP-0280) shows as their own Matrix account.
//!
//! Built on the bridge kit (`trestle_bridge`): this crate writes the XMPP side
//! ([`hub::Hub`], the kit's `Network`), the kit does portals, ghosts, the message map and
//! management rooms. The bridge is one component of the XMPP server: one stream, over which it
//! sends as any JID of its domain, so a Matrix user `@bob:example.org` is
//! `bob@<domain>` without an account anywhere.
//!
//! # Modules
//!
//! Each module uses (`use crate::…`) only modules on lines below its own, so none uses one
//! that uses it back:
//!
//! ```text
//! network      → accounts, events, files, moderation, occupants, powers, chatstates, archive, users, hub, ids, xmpp  (the kit's Network trait: Matrix into XMPP)
//! check        → settings                        (its part of `trestle check`: the component port)
//! events       → files, moderation, occupants, powers, presence, chatstates, avatars, archive, users, hub, ids, xmpp   (XMPP into Matrix: the component's service)
//! accounts     → hub                            (users' own XMPP accounts: their connections, carbons)
//! moderation   → hub, ids                       (moderation in rooms, XEP-0425 ↔ redactions of others' messages)
//! occupants    → users, hub, ids, xmpp          (leaves, kicks, bans and nick changes, both ways)
//! powers       → hub, ids                       (affiliations and roles ↔ power levels)
//! presence     → users, hub, ids                (presence both ways, where enabled)
//! avatars      → hub, ids, xmpp                 (avatars both ways, through vCards)
//! thirdparty   → hub, ids                       (the `xmpp` third-party protocol: rooms and users by JID)
//! chatstates   → hub, ids, xmpp                 (typing and chat markers ↔ typing and read receipts)
//! archive      → files, hub, ids, xmpp          (rooms' archives, MAM: the kit's history; their files fetched)
//! files        → hub, ids, xmpp                 (files both ways: out-of-band URLs, HTTP upload)
//! users        → hub, ids                       (Matrix users' JIDs and the rooms they are in)
//! hub          → store, settings, ids, xmpp     (the shared state; the bridge's requests and their answers)
//! store                                         (the bridge's own tables: what outlives a restart)
//! settings                                      (the settings, checked)
//! ids                                           (chats, users, names both ways)
//! xmpp                                          (the protocol alone: stream and stanzas)
//! ```
//!
//! `lib` itself builds the router from `network`, `events` and `thirdparty`.

pub mod accounts;
pub mod archive;
pub mod avatars;
pub mod chatstates;
mod check;
pub mod events;
pub mod files;
pub mod hub;
pub mod ids;
pub mod moderation;
pub mod network;
pub mod occupants;
pub mod powers;
pub mod presence;
pub mod settings;
pub mod store;
pub mod thirdparty;
pub mod users;
pub mod xmpp;

use std::path::Path;

use trestle::{Plugin, Router, plugin::PluginSettings};
use trestle_bridge::Bridge;

pub use settings::Settings;
pub use trestle::plugin::Secret;

/// The plugin, for the `trestle` host: off unless its section enables it (it needs an XMPP
/// server's component to do anything). Without `server` and `secret` it runs and bridges
/// nothing.
pub const PLUGIN: Plugin = Plugin::new("xmpp", "xmpp", "xmpp_", build)
    .off_by_default()
    .with_protocols(&[thirdparty::PROTOCOL])
    .with_check(check::check)
    .with_settings_help(
        "settings:\n  \
         # server: localhost:5347          # the XMPP server's component port (XEP-0114)\n  \
         domain: matrix.localhost         # the component's domain: Matrix users are <localpart>@ it\n  \
         # secret: {env: TRESTLE_XMPP_SECRET}   # the component secret: inline, {env: NAME} or {file: PATH}\n  \
         bot_nick: Matrix                 # the bridge's own occupant in each room\n  \
         reconnect_delay: 5               # seconds between attempts to connect\n  \
         # upload_service: upload.localhost   # HTTP upload (XEP-0363); found through discovery if unset\n  \
         # upload_url: http://localhost:5280/file_share/   # its files, fetched even from loopback\n  \
         # client_server: localhost:5222  # the client port, for logins with users' own accounts (plain TCP)\n  \
         presence: false                  # presence both ways\n  \
         bridge:                          # the bridge kit's settings\n    \
         connection_wait: 30            # seconds a user's messages wait for their JID at start\n    \
         delivery_status: true          # read receipts and status events for delivered messages\n    \
         # provisioning_secret: change-me\n    \
         admins: []\n    \
         policy_lists: []               # policy list rooms; users they ban are not bridged",
    );

fn build(settings: &PluginSettings<'_>) -> trestle::Result<Router> {
    router_in(settings.get()?, settings.config_path())
}

/// The bridge's router for `settings` (a secret in a file is read relative to the current
/// directory).
pub fn router(settings: Settings) -> trestle::Result<Router> {
    router_in(settings, Path::new("."))
}

/// The bridge's router for `settings` read from the configuration file `config`.
fn router_in(settings: Settings, config: &Path) -> trestle::Result<Router> {
    let checked = settings.check(config).map_err(trestle::Error::Config)?;
    let config = checked.settings.bridge.clone();
    // Handed to the holder of the component with the kit's events (where processes share the
    // store), since only it speaks to XMPP.
    let bridge = Bridge::new(hub::Hub::new(checked), config)
        .on_type("m.room.topic", |bridge, event| async move {
            events::matrix_topic(&bridge, event).await
        })
        .on_type("m.room.power_levels", |bridge, event| async move {
            powers::matrix_levels(&bridge, event).await
        })
        .on_type("m.presence", |bridge, event| async move {
            presence::matrix_presence(&bridge, event).await
        });
    let handle = bridge.handle();
    let lookup = thirdparty::Lookup(bridge.handle());
    Ok(bridge
        .router()
        .thirdparty(lookup)
        .service("xmpp", move |app| {
            let handle = handle.clone();
            async move { events::run(handle, app).await }
        }))
}

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
        assert_eq!(section.settings.domain, "matrix.localhost");
        assert!(router(section.settings).is_ok());
    }

    #[test]
    fn defaults_build_and_bad_settings_are_refused() {
        assert!(PLUGIN.router().is_ok());
        let half = Settings {
            server: Some("localhost:5347".into()),
            ..Settings::default()
        };
        let error = router(half).err().expect("refused").to_string();
        assert!(error.contains("secret is not"), "{error}");
    }
}
