//! A Twitter-like timeline whose data lives entirely in Matrix rooms.
//!
//! Each user's timeline is a world-readable room they own, created the first time they post.
//! Posts are `org.trestle.timeline.post` events; replies are threads (`m.thread`), likes are
//! `m.annotation` reactions, and following someone is joining their timeline room. The bot
//! joins timeline rooms and indexes what arrives into its own tables, which a web page (under
//! the plugin's path) and its JSON API read. The page acts on the homeserver with the user's
//! own access token, never through a ghost. Images are uploaded with that token and shown
//! through the plugin's media route; the index's changes reach open pages live, and [`search`]
//! finds posts. `docs/timeline.md` documents the event schema and the API; [`reindex`]
//! rebuilds the index from the rooms alone.

mod api;
mod atom;
pub mod content;
pub mod index;
mod live;
mod matrix;
mod page;
pub mod query;
mod reindex;
pub mod search;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use trestle::{
    Appservice, Plugin, Router,
    plugin::PluginSettings,
    router::{RawEvent, State},
    ruma::{
        OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomVersionId,
        api::{AppserviceUserIdentity, client::alias::create_alias},
    },
};

pub use reindex::{Reindexed, reindex};

/// The plugin, for the `trestle` host.
pub const PLUGIN: Plugin = Plugin::new("timeline", "timeline", "timeline_", build).with_settings_help(
    "settings:\n  \
     alias: \"timeline_{localpart}\"   # each timeline room's alias; empty for none\n  \
     room_version: null               # version of new timeline rooms; the server's default unless set\n  \
     max_post_chars: 500              # the longest post, in characters\n  \
     page_size: 20                    # posts per page of a feed\n  \
     admins: []                       # user ids allowed to rebuild the index (POST /api/reindex)\n  \
     public_url: null                 # the page's address as browsers see it, for single sign-on; else from the request\n  \
     homeserver_public_url: null      # the homeserver's address as browsers see it; else the one Trestle uses",
);

/// The timeline's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The localpart of each timeline room's alias, with `{localpart}` standing for the
    /// owner's; empty for no aliases. The default lies in the plugin's exclusive alias
    /// namespace, so the bot sets it.
    pub alias: String,
    /// The room version of new timeline rooms; the homeserver's default unless set.
    pub room_version: Option<String>,
    /// The longest post, in characters.
    pub max_post_chars: usize,
    /// Posts per page of a feed.
    pub page_size: i64,
    /// Users who may rebuild the index through the API.
    pub admins: Vec<String>,
    /// The page's address as browsers reach it (`https://example.org/timeline/`), which single
    /// sign-on sends them back to; unset, it is made from each request's `Host` (and
    /// `X-Forwarded-Proto`). Also makes the sign-on cookie `Secure` when it is `https`.
    pub public_url: Option<String>,
    /// The homeserver's address as browsers reach it, for single sign-on; unset, the address
    /// Trestle reaches it at.
    pub homeserver_public_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alias: "timeline_{localpart}".to_owned(),
            room_version: None,
            max_post_chars: 500,
            page_size: 20,
            admins: Vec::new(),
            public_url: None,
            homeserver_public_url: None,
        }
    }
}

impl Settings {
    /// Checks the settings, naming the field at fault.
    pub fn validate(&self) -> trestle::Result<()> {
        let bad = |field: &str, why: String| {
            Err(trestle::Error::Config(format!(
                "timeline settings, `{field}`: {why}"
            )))
        };
        if !self.alias.is_empty() && !self.alias.contains("{localpart}") {
            return bad(
                "alias",
                format!("{:?} must contain {{localpart}}", self.alias),
            );
        }
        if let Some(version) = &self.room_version
            && RoomVersionId::try_from(version.as_str()).is_err()
        {
            return bad("room_version", format!("{version:?} is not a room version"));
        }
        if self.max_post_chars == 0 {
            return bad("max_post_chars", "must be at least 1".into());
        }
        if !(1..=100).contains(&self.page_size) {
            return bad(
                "page_size",
                format!("{} is not between 1 and 100", self.page_size),
            );
        }
        for (field, url) in [
            ("public_url", &self.public_url),
            ("homeserver_public_url", &self.homeserver_public_url),
        ] {
            if let Some(url) = url
                && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            {
                return bad(field, format!("{url:?} is not an http(s) URL"));
            }
        }
        for admin in &self.admins {
            if let Err(error) = trestle::ruma::UserId::parse(admin) {
                return bad("admins", format!("{admin:?} is not a user id: {error}"));
            }
        }
        Ok(())
    }

    /// The alias of `localpart`'s timeline room on `server`, if aliases are on.
    pub fn alias_for(&self, localpart: &str, server: &str) -> Option<OwnedRoomAliasId> {
        if self.alias.is_empty() {
            return None;
        }
        let alias = format!("#{}:{server}", self.alias.replace("{localpart}", localpart));
        match RoomAliasId::parse(&alias) {
            Ok(alias) => Some(alias),
            Err(error) => {
                tracing::warn!(alias, %error, "not a valid alias; the timeline room gets none");
                None
            }
        }
    }
}

fn build(settings: &PluginSettings<'_>) -> trestle::Result<Router> {
    let settings: Settings = settings.get()?;
    router(settings)
}

/// The timeline's routes: the indexer, the web page and its API, and a service that fills an
/// empty index from the rooms at start.
pub fn router(settings: Settings) -> trestle::Result<Router> {
    settings.validate()?;
    let settings = Arc::new(settings);
    let hub = live::Hub::default();
    let pages = hub.clone();
    Ok(Router::new()
        .on(on_event)
        .web(
            move |app| match api::Web::new(app, settings.clone(), pages.clone()) {
                Ok(web) => page::routes(web.clone()).merge(api::routes(web)),
                Err(error) => {
                    tracing::error!(%error, "the timeline's web page cannot reach the homeserver");
                    trestle::axum::Router::new()
                }
            },
        )
        .singleton("timeline-backfill", backfill_when_empty)
        .with_state(hub))
}

/// The event types the index reads.
const INDEXED: &[&str] = &[
    content::POST_TYPE,
    "m.reaction",
    "m.room.member",
    "m.room.redaction",
    "m.room.create",
    "m.room.topic",
];

async fn on_event(
    event: RawEvent,
    app: Appservice,
    State(hub): State<live::Hub>,
) -> trestle::Result<()> {
    if !INDEXED.contains(&event.event_type.as_str()) {
        return Ok(());
    }
    index::migrate(&app).await?;
    let value: Value = event.deserialize()?;
    if value["type"] == "m.room.member"
        && value["state_key"] == app.bot_user_id().as_str()
        && value["content"]["membership"] == "invite"
    {
        return invited(&app, &value).await;
    }
    hub.publish(index::apply(&app, &value).await?);
    Ok(())
}

/// Invited to a room (a timeline made by another client, or on another server), the bot joins
/// and reads it; a room that turns out to be no timeline it leaves again.
async fn invited(app: &Appservice, invite: &Value) -> trestle::Result<()> {
    let Some(room_id) = invite["room_id"].as_str() else {
        return Ok(());
    };
    let room_id = OwnedRoomId::try_from(room_id)?;
    // The invite's stripped state usually says what the room is; without it, look inside.
    let stripped = invite["unsigned"]["invite_room_state"].as_array();
    let not_a_timeline = stripped.is_some_and(|state| {
        state
            .iter()
            .any(|e| e["type"] == "m.room.create" && e["content"]["type"] != content::ROOM_TYPE)
    });
    if not_a_timeline {
        tracing::info!(%room_id, "declining an invite to a room that is no timeline");
        return app.bot().leave(&room_id).await;
    }
    app.bot().join(&room_id).await?;
    reindex::room(app, &room_id).await?;
    if index::room_owner(app.store().pool(), room_id.as_str())
        .await?
        .is_none()
    {
        tracing::info!(%room_id, "leaving a room that is no timeline");
        app.bot().leave(&room_id).await?;
    }
    Ok(())
}

/// At start, an empty index (a new database, or a lost one) is filled from the rooms the bot
/// is in. Nothing is cleared, so events indexed meanwhile stay.
async fn backfill_when_empty(app: Appservice) -> trestle::Result<()> {
    index::migrate(&app).await?;
    let rooms: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM timeline_rooms")
        .fetch_one(app.store().pool())
        .await?;
    if rooms == 0 {
        reindex::backfill(&app).await?;
    }
    app.stopping().await;
    Ok(())
}

/// Points `alias` at `room_id`, as the bot. A failure (the alias taken) is logged: the room
/// works without it.
pub(crate) async fn set_alias(app: &Appservice, alias: &OwnedRoomAliasId, room_id: &OwnedRoomId) {
    let request = create_alias::v3::Request::new(alias.clone(), room_id.clone());
    if let Err(error) = app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await
    {
        tracing::warn!(%alias, %room_id, %error, "could not set the timeline room's alias");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_starts_with_default_settings() {
        PLUGIN.router().unwrap();
    }

    #[test]
    fn settings_errors_name_the_field() {
        let error = Settings {
            alias: "fixed".into(),
            ..Settings::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("`alias`"), "{error}");
        let error = Settings {
            room_version: Some("not a version!".into()),
            ..Settings::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("`room_version`"), "{error}");
        let error = Settings {
            public_url: Some("example.org/timeline".into()),
            ..Settings::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("`public_url`"), "{error}");
    }

    #[test]
    fn aliases_follow_the_pattern() {
        let settings = Settings::default();
        assert_eq!(
            settings.alias_for("ada", "example.org").unwrap().as_str(),
            "#timeline_ada:example.org"
        );
        let none = Settings {
            alias: String::new(),
            ..Settings::default()
        };
        assert_eq!(none.alias_for("ada", "example.org"), None);
    }
}
