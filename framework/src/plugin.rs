//! What a host needs to know to run a plugin: its name, its users, and its router.

use trestle_registration::Registration;

use crate::Router;

/// A bundled plugin: a bot or a bridge that the `trestle` host can run.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Plugin {
    /// The plugin's name, also its appservice id.
    pub name: &'static str,
    /// The bot's localpart.
    pub bot_localpart: &'static str,
    /// The prefix of the plugin's ghosts' localparts.
    pub ghost_prefix: &'static str,
    /// Builds the plugin's router.
    pub router: fn() -> Router,
}

impl Plugin {
    /// A plugin from its parts.
    pub const fn new(
        name: &'static str,
        bot_localpart: &'static str,
        ghost_prefix: &'static str,
        router: fn() -> Router,
    ) -> Self {
        Plugin {
            name,
            bot_localpart,
            ghost_prefix,
            router,
        }
    }

    /// A fresh registration for this plugin on `server_name`, pushed to at `url`.
    pub fn generate_registration(&self, url: Option<String>, server_name: &str) -> Registration {
        Registration::generate(
            self.name,
            url,
            self.bot_localpart,
            self.ghost_prefix,
            server_name,
        )
    }
}
