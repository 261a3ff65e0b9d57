//! A moderation bot in the manner of Draupnir and Mjolnir: it follows policy lists
//! (`m.policy.rule.user`, `m.policy.rule.room`, `m.policy.rule.server` state in list rooms)
//! and applies their bans and takedowns in the rooms it protects — user bans (hashed rules
//! too), server bans as `m.room.server_acl`, leaving banned rooms, rejecting banned users'
//! invites — lifting them when a rule is removed; runs protections (word filter,
//! flood, mention spam, join flood, first-message link spam, mass invites) per room; takes commands in a
//! management room, where it also reports everything it does.
//!
//! The management room is the `management_room` setting, or else the first room a configured
//! admin (with no admins configured: any user of this homeserver) invites the bot to. Commands
//! there are accepted from the configured admins and from members with `command_power` in it.
//! It may be encrypted (with the plugin's encryption on): a command from a device its owner did
//! not cross-sign is refused there. See docs/moderation.md.

mod bot;
mod commands;
mod db;
mod enforce;
mod events;
pub mod protections;

use serde::Deserialize;
use trestle::{Appservice, Plugin, Router, plugin::PluginSettings, ruma::UserId};

pub use bot::Moderation;

/// The plugin, for the `trestle` host.
pub const PLUGIN: Plugin = Plugin::new("moderation", "moderation", "moderation_", build)
    .with_settings_help(
        "settings:\n  \
         command_prefix: \"!\"          # what commands start with\n  \
         management_room: null         # a room ID or alias (\"#mod:example.org\"); null: the first room an admin invites the bot to\n  \
         admins: []                    # may always give commands ([\"@you:example.org\"]); empty: any local user may claim the management room\n  \
         command_power: 50             # the power level in the management room that commands need\n  \
         exempt_power: 50              # protections leave users with this power level in a room alone\n  \
         other_bots: []                # other appservices' bots in the management room that take commands with the same prefix",
    );

/// The moderation bot's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// What commands start with.
    pub command_prefix: String,
    /// The management room (ID or alias). Unset, the first room an admin invites the bot to.
    pub management_room: Option<String>,
    /// Users who may always give commands.
    pub admins: Vec<String>,
    /// The power level in the management room that commands need.
    pub command_power: i64,
    /// Protections leave users with at least this power level in a room alone.
    pub exempt_power: i64,
    /// Bots of other appservices that take commands with the same prefix: in a management
    /// room where one of them is, the bot answers only its own commands and those named for
    /// it. The host's other plugins are known without this.
    pub other_bots: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            command_prefix: "!".to_owned(),
            management_room: None,
            admins: Vec::new(),
            command_power: 50,
            exempt_power: 50,
            other_bots: Vec::new(),
        }
    }
}

fn build(settings: &PluginSettings<'_>) -> trestle::Result<Router> {
    let settings: Settings = settings.get()?;
    validate(&settings)?;
    Ok(router(settings))
}

fn validate(settings: &Settings) -> trestle::Result<()> {
    for (field, users) in [
        ("admins", &settings.admins),
        ("other_bots", &settings.other_bots),
    ] {
        for user in users {
            UserId::parse(user.as_str()).map_err(|e| {
                trestle::Error::Config(format!("moderation settings: {field}: `{user}`: {e}"))
            })?;
        }
    }
    if let Some(room) = &settings.management_room
        && !(room.starts_with('!') || room.starts_with('#'))
    {
        return Err(trestle::Error::Config(format!(
            "moderation settings: management_room: `{room}` is neither a room ID (!…) nor an alias (#…)"
        )));
    }
    if settings.command_prefix.is_empty() {
        return Err(trestle::Error::Config(
            "moderation settings: command_prefix: must not be empty".into(),
        ));
    }
    Ok(())
}

/// The bot's routes with these settings.
pub fn router(settings: Settings) -> Router {
    let bot = Moderation::new(settings.clone());
    let service_bot = bot.clone();
    // Checked by `validate` when the host builds the plugin.
    let other_bots = settings
        .other_bots
        .iter()
        .filter_map(|user| UserId::parse(user.as_str()).ok());
    Router::new()
        .command_prefix(settings.command_prefix)
        .declare_commands(commands::specs())
        .other_bots(other_bots)
        .on(events::on_event)
        .singleton("moderation", move |app| catch_up(service_bot.clone(), app))
        .with_state(bot)
}

/// At start: opens the tables, joins the management room, reads every followed list again
/// (rules may have changed while the bot was down) and applies the rules everywhere.
async fn catch_up(bot: Moderation, app: Appservice) -> trestle::Result<()> {
    bot.db(&app).await?;
    match bot.management_room(&app).await {
        Ok(Some(room)) => {
            if let Err(error) = app.bot().join(&room).await {
                tracing::warn!(%room, %error, "could not join the management room");
            }
        }
        Ok(None) => tracing::info!("no management room yet: invite the bot to one"),
        Err(error) => tracing::warn!(%error, "could not resolve the management room"),
    }
    let lists = bot.model().lists.clone();
    for list in lists {
        let Ok(room) = trestle::ruma::RoomId::parse(&list) else {
            continue;
        };
        if let Err(error) = bot.sync_list(&app, &room).await {
            bot.report(
                &app,
                &format!("⚠ could not read the policy list {list}: {error}"),
            )
            .await;
        }
    }
    if let Err(error) = bot.lift_stale_bans(&app).await {
        bot.report(&app, &format!("⚠ could not lift stale bans: {error}"))
            .await;
    }
    bot.enforce_all(&app).await;
    app.stopping().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_build_a_router() {
        let router = PLUGIN.router().unwrap();
        let names: Vec<&str> = router.commands().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), commands::specs().len(), "{names:?}");
        assert!(names.contains(&"protections"), "{names:?}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        let bad = Settings {
            admins: vec!["not-a-user".into()],
            ..Settings::default()
        };
        assert!(validate(&bad).unwrap_err().to_string().contains("admins"));
        let bad = Settings {
            management_room: Some("mod".into()),
            ..Settings::default()
        };
        assert!(
            validate(&bad)
                .unwrap_err()
                .to_string()
                .contains("management_room")
        );
        let bad = Settings {
            other_bots: vec!["hookshot".into()],
            ..Settings::default()
        };
        assert!(
            validate(&bad)
                .unwrap_err()
                .to_string()
                .contains("other_bots")
        );
        assert!(validate(&Settings::default()).is_ok());
    }
}
