//! Notifications: webhooks into rooms, room messages out to webhooks, and RSS, Atom and JSON
//! feeds, none of which repeats or loses an item.
//!
//! - `!webhook create NAME` makes a secret URL (sent privately) whose POSTs become messages
//!   from a ghost named NAME; see [`hooks`].
//! - `!forward add URL` sends the room's messages to a URL, signed, through a durable queue;
//!   see [`forward`].
//! - `!feed add URL [minutes]` posts a feed's new entries once each; see [`feeds`].
//!
//! Everything is kept in the bot's own tables ([`db`]), so a restart picks up where it was.

pub mod db;
pub mod dm;
pub mod error;
pub mod feeds;
pub mod forward;
pub mod hooks;
pub mod render;
pub mod rounds;
pub mod sign;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use trestle::{
    Appservice, Plugin, Router,
    fetch::{FetchPolicy, Fetcher},
    intent::SendOptions,
    plugin::PluginSettings,
    router::CommandSpec,
    ruma::RoomId,
};

pub use error::{ApiError, Error, Result};

/// The plugin, for the `trestle` host.
pub const PLUGIN: Plugin = Plugin::new("notify", "notify", "notify_", build).with_settings_help(
    "settings:
  command_prefix: \"!\"            # what commands start with
  public_url: null               # base of webhook URLs; default: this plugin's registration url
  min_power: 50                  # power level needed to manage webhooks, forwards and feeds
  max_body_bytes: 1048576        # largest webhook body accepted
  rate_per_minute: 60            # webhook calls per minute, per webhook (0: no limit)
  rate_burst: 20                 # calls allowed at once before the rate applies
  allow_private_addresses: false # let feeds and forwards reach private/loopback addresses
  max_redirects: 5               # redirects followed when fetching
  max_fetch_bytes: 5242880       # largest feed read
  fetch_timeout_secs: 30         # per request to a feed or forwarding target
  feed_interval_secs: 600        # default time between polls of a feed
  feed_min_interval_secs: 60     # shortest interval `!feed add` accepts
  feed_max_new_items: 10         # most entries posted from one poll; older new ones are skipped
  feed_failure_notice_after: 5   # failed polls in a row before the room is told
  forward_max_backoff_secs: 600  # longest wait between retries of a forward",
);

/// The notification bot's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// What commands start with.
    pub command_prefix: String,
    /// The base of webhook URLs; unset, the plugin's registration `url`.
    pub public_url: Option<String>,
    /// The power level needed to manage webhooks, forwards and feeds.
    pub min_power: i64,
    /// The largest webhook body accepted.
    pub max_body_bytes: usize,
    /// Webhook calls per minute per webhook; 0 for no limit.
    pub rate_per_minute: u32,
    /// Webhook calls allowed at once before the rate applies.
    pub rate_burst: u32,
    /// Whether feeds and forwards may reach private and loopback addresses.
    pub allow_private_addresses: bool,
    /// Redirects followed when fetching.
    pub max_redirects: usize,
    /// The largest feed read.
    pub max_fetch_bytes: usize,
    /// Seconds one request to a feed or forwarding target may take.
    pub fetch_timeout_secs: u64,
    /// The default seconds between polls of a feed.
    pub feed_interval_secs: u64,
    /// The shortest interval `!feed add` accepts, in seconds.
    pub feed_min_interval_secs: u64,
    /// The most entries posted from one poll.
    pub feed_max_new_items: usize,
    /// Failed polls in a row before the room is told.
    pub feed_failure_notice_after: i64,
    /// The longest wait between retries of a forward, in seconds.
    pub forward_max_backoff_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            command_prefix: "!".to_owned(),
            public_url: None,
            min_power: 50,
            max_body_bytes: 1024 * 1024,
            rate_per_minute: 60,
            rate_burst: 20,
            allow_private_addresses: false,
            max_redirects: 5,
            max_fetch_bytes: 5 * 1024 * 1024,
            fetch_timeout_secs: 30,
            feed_interval_secs: 600,
            feed_min_interval_secs: 60,
            feed_max_new_items: 10,
            feed_failure_notice_after: 5,
            forward_max_backoff_secs: 600,
        }
    }
}

/// What the handlers, routes and services share.
#[derive(Clone, Debug)]
pub struct Shared(Arc<SharedInner>);

/// The inside of [`Shared`].
#[derive(Debug)]
pub struct SharedInner {
    /// The settings.
    pub settings: Settings,
    /// The client for feeds and forwards.
    pub fetcher: Fetcher,
    /// Webhook rate limits.
    pub limiter: hooks::inbound::Limiter,
    /// Wakes the forwarding service when a delivery is queued.
    pub forward_wake: tokio::sync::Notify,
    /// Wakes the feed poller when a feed is added.
    pub feed_wake: tokio::sync::Notify,
    /// Set once the tables are known to be up to date.
    schema: tokio::sync::OnceCell<()>,
}

impl std::ops::Deref for Shared {
    type Target = SharedInner;
    fn deref(&self) -> &SharedInner {
        &self.0
    }
}

impl Shared {
    /// The shared parts for `settings`.
    pub fn new(settings: Settings) -> Result<Self> {
        let fetcher = Fetcher::new(FetchPolicy {
            allow_private: settings.allow_private_addresses,
            max_redirects: settings.max_redirects,
            max_bytes: settings.max_fetch_bytes,
            timeout: Duration::from_secs(settings.fetch_timeout_secs.max(1)),
        })?;
        let limiter = hooks::inbound::Limiter::new(settings.rate_per_minute, settings.rate_burst);
        Ok(Shared(Arc::new(SharedInner {
            settings,
            fetcher,
            limiter,
            forward_wake: tokio::sync::Notify::new(),
            feed_wake: tokio::sync::Notify::new(),
            schema: tokio::sync::OnceCell::new(),
        })))
    }

    /// Brings the tables up to date the first time it is called; after that it costs nothing,
    /// which matters on the webhook path.
    pub async fn ready(&self, app: &Appservice) -> Result<()> {
        self.schema.get_or_try_init(|| db::ready(app)).await?;
        Ok(())
    }
}

fn build(settings: &PluginSettings<'_>) -> trestle::Result<Router> {
    let settings: Settings = settings.get()?;
    router_with(settings).map_err(|e| trestle::Error::Config(format!("notify: {e}")))
}

/// The bot's routes with default settings.
pub fn router() -> Router {
    router_with(Settings::default()).expect("the default settings are valid")
}

/// The bot's routes, web endpoints and services with `settings`.
pub fn router_with(settings: Settings) -> Result<Router> {
    let prefix = settings.command_prefix.clone();
    let power = settings.min_power;
    let shared = Shared::new(settings)?;
    let (web, forwarder, poller) = (shared.clone(), shared.clone(), shared.clone());
    let router = Router::<Shared>::new()
        .accept_invites(true)
        .help(true)
        .command(
            CommandSpec::new("webhook")
                .usage(hooks::USAGE)
                .about("Webhooks that post here: create one, then POST to its secret URL.")
                .min_power(power),
            hooks::command,
        )
        .command(
            CommandSpec::new("forward")
                .usage(forward::USAGE)
                .about("Sends this room's messages to a URL, signed, retried until delivered.")
                .min_power(power),
            forward::command,
        )
        .command(
            CommandSpec::new("feed")
                .usage(feeds::USAGE)
                .about("Posts new entries of RSS, Atom and JSON feeds.")
                .min_power(power),
            feeds::command,
        )
        .on_type("m.room.message", forward::on_message)
        .web(move |app| hooks::inbound::routes(app, web.clone()))
        .singleton("forward", move |app| forward::run(app, forwarder.clone()))
        .singleton("feeds", move |app| feeds::poll::run(app, poller.clone()))
        .with_state(shared)
        .command_prefix(prefix);
    Ok(router)
}

/// Sends `message` to `room` as the bot.
pub(crate) async fn reply(
    app: &Appservice,
    room: &RoomId,
    message: &render::Message,
) -> Result<()> {
    app.bot()
        .send_json(
            room,
            "m.room.message",
            message.content(),
            SendOptions::default(),
        )
        .await?;
    Ok(())
}

/// Whether `body` is the command `<prefix><name>`.
pub(crate) fn is_command(body: &str, prefix: &str, name: &str) -> bool {
    body.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// A management command (`!webhook`, `!forward`, `!feed`) with everything its handler needs:
/// the room, who asked, the subcommand and the rest of the line.
pub(crate) struct Manage {
    pub app: Appservice,
    pub shared: Shared,
    pub room: trestle::ruma::OwnedRoomId,
    pub sender: trestle::ruma::OwnedUserId,
    /// The first word after the command.
    pub sub: String,
    /// Everything after it, layout kept.
    pub rest: String,
}

impl trestle::router::FromEventContext<Shared> for Manage {
    fn from_event_context(
        ctx: &trestle::router::EventContext,
        shared: &Shared,
    ) -> std::result::Result<Self, trestle::router::Rejection> {
        use trestle::router::{Command, Room, Sender};
        let command = Command::from_event_context(ctx, shared)?;
        let Room(room) = Room::from_event_context(ctx, shared)?;
        let Sender(sender) = Sender::from_event_context(ctx, shared)?;
        let (sub, rest) = hooks::split_word(&command.args);
        Ok(Manage {
            app: ctx.appservice().clone(),
            shared: shared.clone(),
            room,
            sender,
            sub,
            rest,
        })
    }
}

/// Answers a management command in the room: its result, or what went wrong in words.
pub(crate) async fn answer(app: &Appservice, room: &RoomId, outcome: Result<String>) -> Result<()> {
    let text = match outcome {
        Ok(text) | Err(Error::Invalid(text)) => text,
        Err(other) => {
            tracing::warn!(error = %other, "command failed");
            format!("That did not work: {other}")
        }
    };
    reply(app, room, &render::Message::markdown("m.notice", &text)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_settings_are_the_defaults() {
        #[derive(Deserialize)]
        struct Section {
            settings: Settings,
        }
        let section: Section = serde_saphyr::from_str(PLUGIN.settings_help).unwrap();
        assert_eq!(
            format!("{:?}", section.settings),
            format!("{:?}", Settings::default())
        );
        assert!(PLUGIN.router().is_ok());
    }

    #[test]
    fn commands_are_recognised_with_their_prefix() {
        assert!(is_command("!feed add x", "!", "feed"));
        assert!(is_command("!feed", "!", "feed"));
        assert!(!is_command("!feeds", "!", "feed"));
        assert!(!is_command("feed add", "!", "feed"));
    }
}
