//! Who is in the channels, as the bots hear it: joins, member lists, parts, quits, kicks,
//! nick changes and modes, each kept in the hub and shown in the channel's portal.

use trestle_bridge::{NetworkResult, RemoteMembership};

use super::ghost_join;
use crate::{
    hub::{Kit, is_member},
    ids::{ChatId, UserId},
    irc::{connection::Client, naming::irc_lowercase},
    moderation,
};

/// Someone joined a channel: tracked, and their ghost joins the portal.
pub(super) async fn joined(
    bridge: &Kit,
    network: &str,
    channel: &str,
    nick: &str,
    mask: &str,
) -> NetworkResult<()> {
    let irc = bridge.network();
    irc.track_join(network, channel, nick, mask);
    irc.set_member(network, channel, nick, true);
    if !irc.is_own_nick(network, nick) {
        ghost_join(bridge, network, channel, nick).await?;
    }
    Ok(())
}

/// A channel's member list, after the bot joined it.
pub(super) async fn names(
    bridge: &Kit,
    network: &str,
    channel: &str,
    nicks: Vec<String>,
    prefixes: Vec<String>,
) -> NetworkResult<()> {
    let irc = bridge.network();
    let names: Vec<(String, String)> = nicks.into_iter().zip(prefixes).collect();
    irc.track_names(network, channel, &names);
    for (nick, _) in &names {
        irc.set_member(network, channel, nick, true);
        if !irc.is_own_nick(network, nick) {
            ghost_join(bridge, network, channel, nick).await?;
        }
    }
    // The channel's operators and voiced users get their power levels (a portal's
    // made, or the bot is back).
    moderation::sync_power_levels(bridge, network, channel).await
}

pub(super) async fn parted(
    bridge: &Kit,
    network: &str,
    channel: &str,
    nick: &str,
    reason: String,
) -> NetworkResult<()> {
    let irc = bridge.network();
    irc.set_member(network, channel, nick, false);
    if irc.is_own_nick(network, nick) {
        return Ok(());
    }
    let reason = (!reason.is_empty()).then_some(reason);
    bridge
        .remote_membership(
            &ChatId::channel(network, channel),
            &UserId::new(network, nick),
            RemoteMembership::Leave(reason),
        )
        .await
}

/// Someone left the network: their ghost leaves every portal they were in.
pub(super) async fn quit(
    bridge: &Kit,
    network: &str,
    nick: &str,
    reason: &str,
) -> NetworkResult<()> {
    let irc = bridge.network();
    for channel in irc.channels_of(network, nick) {
        irc.set_member(network, &channel, nick, false);
        if !irc.is_own_nick(network, nick) {
            bridge
                .remote_membership(
                    &ChatId::channel(network, &channel),
                    &UserId::new(network, nick),
                    RemoteMembership::Leave(Some(reason.to_owned())),
                )
                .await?;
        }
    }
    Ok(())
}

/// Someone was kicked: the bot rejoins, a Matrix user's connection takes them out of the
/// portal, and an IRC user's ghost is kicked from it.
pub(super) async fn kicked(
    bridge: &Kit,
    network: &str,
    client: &Client,
    channel: &str,
    nick: &str,
    by: String,
    reason: &str,
) -> NetworkResult<()> {
    let irc = bridge.network();
    irc.set_member(network, channel, nick, false);
    let owner = irc.nick_owner(network, nick);
    if irc_lowercase(nick) == irc_lowercase(&client.state().nick) {
        // The bot was kicked: back in, so the portal keeps working.
        client.join(channel);
    } else if let Some(user) = owner.filter(|u| !u.is_empty()) {
        // A Matrix user's own connection: they leave the portal too.
        let why = if reason.is_empty() {
            format!("kicked on IRC by {by}")
        } else {
            format!("kicked on IRC by {by}: {reason}")
        };
        moderation::puppet_removed(bridge, network, channel, &user, why).await?;
    } else if !irc.is_own_nick(network, nick)
        && ghost_in_portal(bridge, network, channel, nick).await
    {
        // The bot kicks, naming the IRC kicker: a ghost rarely has the power to.
        let reason = if reason.is_empty() {
            by
        } else {
            format!("{by}: {reason}")
        };
        bridge
            .remote_membership(
                &ChatId::channel(network, channel),
                &UserId::new(network, nick),
                RemoteMembership::Kick {
                    by: None,
                    reason: Some(reason),
                },
            )
            .await?;
    }
    Ok(())
}

/// A nick changed: the old nick's ghost leaves and the new one's joins where the user is.
pub(super) async fn renamed(
    bridge: &Kit,
    network: &str,
    old: &str,
    new: &str,
) -> NetworkResult<()> {
    let irc = bridge.network();
    irc.track_nick(network, old, new);
    for channel in irc.channels_of(network, old) {
        irc.set_member(network, &channel, old, false);
        irc.set_member(network, &channel, new, true);
        if !irc.is_own_nick(network, new) {
            let chat = ChatId::channel(network, &channel);
            bridge
                .remote_membership(
                    &chat,
                    &UserId::new(network, old),
                    RemoteMembership::Leave(Some(format!("now known as {new}"))),
                )
                .await?;
            ghost_join(bridge, network, &channel, new).await?;
        }
    }
    Ok(())
}

/// Channel modes: ranks become power levels, bans take Matrix users' connections out.
pub(super) async fn modes(
    bridge: &Kit,
    network: &str,
    channel: &str,
    by: &str,
    changes: Vec<(bool, char, Option<String>)>,
) -> NetworkResult<()> {
    let irc = bridge.network();
    for (adding, mode, argument) in changes {
        let Some(argument) = argument else { continue };
        if moderation::mode_level(mode).is_some() {
            irc.track_mode(network, channel, &argument, adding, mode);
            let level = moderation::member_level(irc, network, channel, &argument);
            moderation::set_power_levels(bridge, network, channel, &[(argument, level)]).await?;
        } else if mode == 'b' && adding {
            moderation::irc_ban(bridge, network, channel, by, &argument).await?;
        }
    }
    Ok(())
}

/// Whether the ghost of `nick` is in the channel's portal (a ghost kicked from Matrix first
/// is not kicked again when the IRC kick comes back).
async fn ghost_in_portal(bridge: &Kit, network: &str, channel: &str, nick: &str) -> bool {
    let Ok(Some(portal)) = bridge.portal(&ChatId::channel(network, channel)).await else {
        return false;
    };
    let Ok(ghost) = bridge.ghost_user_id(&UserId::new(network, nick)) else {
        return false;
    };
    is_member(bridge, &portal.room_id, &ghost).await
}
