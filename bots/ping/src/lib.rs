//! The ping bot: `!ping` is answered with `pong` and how long the message took from its
//! sender's homeserver to the bot — a quick check that a room, the homeserver and the
//! appservice path are healthy.

use trestle::{
    Plugin, Router,
    plugin::PluginSettings,
    router::{Command, CommandSpec, Event, Reply},
    ruma::{MilliSecondsSinceUnixEpoch, events::room::message::RoomMessageEventContent},
};

/// The plugin, for the `trestle` host.
pub const PLUGIN: Plugin = Plugin::new("ping", "ping", "ping_", build);

fn build(_: &PluginSettings<'_>) -> trestle::Result<Router> {
    Ok(router())
}

/// The ping bot's routes. It joins rooms it is invited to.
pub fn router() -> Router {
    Router::new().accept_invites(true).help(true).command(
        CommandSpec::new("ping")
            .about("Answers pong, with how long your message took to reach the bot."),
        ping,
    )
}

async fn ping(
    _: Command,
    message: Event<RoomMessageEventContent>,
    reply: Reply,
) -> trestle::Result<()> {
    let now = MilliSecondsSinceUnixEpoch::now().get();
    let sent = message.origin_server_ts.get();
    let took = u64::from(now).saturating_sub(u64::from(sent));
    reply.text(&format!("pong ({took} ms)")).await?;
    Ok(())
}
