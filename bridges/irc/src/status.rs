//! The bot's own connection to a network, reported in that network's portals: its users see
//! one notice when it drops and one when it is back (not one per failed reconnect), so they
//! know why IRC has gone quiet and that what they say meanwhile is delivered later.
//!
//! The same states are the bridge state of the bot's connection (published by the kit under
//! the bot's user id and the network's name, debounced like a login's). When it is back, the
//! kit catches up the network's channel portals, which for IRC (no history) is a notice that
//! what was said meanwhile may be missing.
//!
//! Portals rather than a management or admin room: the people who notice IRC going quiet are
//! the portal's members, and the bot is the one relaying the channel to them (heisenbridge
//! tells its network room the same way; mautrix's bridge states go to the user whose login it
//! is, which the kit does for puppets already).

use trestle::ruma::events::room::message::RoomMessageEventContent;

use trestle_bridge::{ConnectionState, NetworkResult};

use crate::{
    hub::{BotState, Kit, lock},
    ids::ChatId,
};

/// The bot registered: after a drop, the portals are told it is back.
pub(crate) async fn bot_up(bridge: &Kit, network: &str) -> NetworkResult<()> {
    let previous = lock(&bridge.network().bot_states).set(network, BotState::Up);
    bridge
        .set_bridge_connection_state(network, ConnectionState::Connected)
        .await?;
    if previous != BotState::Down {
        return Ok(());
    }
    tracing::info!(%network, "the bot's IRC connection is back");
    let text = format!("The bridge's connection to the IRC network {network} is back.");
    announce(bridge, network, &text).await?;
    // IRC keeps no history: the kit tells each channel portal that what was said meanwhile
    // may be missing. Its gates close before the bot's next lines are bridged, so the notice
    // comes before them.
    let chats = bridge
        .portals()
        .await?
        .into_iter()
        .map(|portal| portal.chat)
        .filter(|chat| matches!(chat, ChatId::Channel { network: n, .. } if n == network))
        .collect();
    bridge.catch_up(chats, None).await
}

/// The bot's connection broke: the first time since it was up, the portals are told.
pub(crate) async fn bot_down(bridge: &Kit, network: &str, reason: &str) -> NetworkResult<()> {
    let previous = lock(&bridge.network().bot_states).set(network, BotState::Down);
    tracing::warn!(%network, %reason, "the bot's IRC connection dropped; reconnecting");
    let lost = ConnectionState::TransientDisconnect(reason.to_owned());
    bridge.set_bridge_connection_state(network, lost).await?;
    if previous != BotState::Up {
        return Ok(());
    }
    let text = format!(
        "The bridge's connection to the IRC network {network} was lost ({reason}); reconnecting. \
         What is said here meanwhile reaches IRC once it is back."
    );
    announce(bridge, network, &text).await
}

/// A notice from the bot in each channel portal of the network.
async fn announce(bridge: &Kit, network: &str, text: &str) -> NetworkResult<()> {
    let bot = bridge.app()?.bot();
    let notice = RoomMessageEventContent::notice_plain(text);
    for portal in bridge.portals().await? {
        if !matches!(&portal.chat, ChatId::Channel { network: n, .. } if n == network) {
            continue;
        }
        if let Err(error) = bot.send(&portal.room_id, &notice).await {
            tracing::warn!(room_id = %portal.room_id, %error, "could not report the connection");
        }
    }
    Ok(())
}
