//! Moderation across the bridge: channel ranks (`~&@%+`) as Matrix power levels, Matrix kicks
//! and bans of ghosts as IRC `KICK` and `MODE +b`, IRC kicks and bans of Matrix users' own
//! connections as kicks from the portal.
//!
//! What the bot sees (each member's channel modes, each nick's `user@host`) is kept by the hub
//! (`hub/channels.rs`); this module says what it means: power levels, which of our
//! connections may kick, which masks match whom.

use trestle::ruma::{
    UserId as MatrixUserId,
    events::{StateEventType, room::message::RoomMessageEventContent},
};

use trestle_bridge::{MatrixMembership, NetworkResult};

use crate::{
    hub::{Hub, Kit, Puppet, is_member},
    ids::{ChatId, UserId},
    irc::{
        connection::Client,
        message::{Command, Message},
        naming::irc_lowercase,
    },
    users,
};

/// The Matrix power level a channel mode gives (with `mode_power_levels`).
pub(crate) fn mode_level(mode: char) -> Option<i64> {
    match mode {
        'q' | 'a' | 'o' => Some(50),
        'h' => Some(25),
        'v' => Some(10),
        _ => None,
    }
}

/// The power level a member's modes give: the highest.
fn level_of(modes: &str) -> i64 {
    modes.chars().filter_map(mode_level).max().unwrap_or(0)
}

/// Whether `nick` may kick and ban in `channel` (half-operator or more).
fn has_ops(hub: &Hub, network: &str, channel: &str, nick: &str) -> bool {
    hub.member_modes(network, channel, nick)
        .is_some_and(|m| m.contains(['q', 'a', 'o', 'h']))
}

/// The power level a member's modes give.
pub(crate) fn member_level(hub: &Hub, network: &str, channel: &str, nick: &str) -> i64 {
    hub.member_modes(network, channel, nick)
        .map_or(0, |modes| level_of(&modes))
}

/// `nick!user@host` of a nick, with `*` for what is not known.
fn full_mask(hub: &Hub, network: &str, nick: &str) -> String {
    let host = hub.host(network, nick);
    format!("{nick}!{}", host.unwrap_or_else(|| "*@*".to_owned()))
}

/// A ban mask for `nick`: `*!*@host`, narrowed to `*!user@host` and then `nick!*@*` when a
/// wider one would also ban one of our own connections (which share a host with the bridge).
fn ban_mask(hub: &Hub, network: &str, nick: &str) -> String {
    let ours: Vec<String> = hub
        .own_nicks(network)
        .iter()
        .map(|n| full_mask(hub, network, n))
        .collect();
    let host = hub.host(network, nick);
    let candidates = host
        .as_deref()
        .and_then(|h| h.split_once('@'))
        .map(|(user, host)| vec![format!("*!*@{host}"), format!("*!{user}@{host}")])
        .unwrap_or_default();
    candidates
        .into_iter()
        .find(|mask| !ours.iter().any(|own| mask_matches(mask, own)))
        .unwrap_or_else(|| format!("{nick}!*@*"))
}

/// Whether an IRC mask (`*` and `?` wildcards) matches `nick!user@host`, case-insensitively.
pub(crate) fn mask_matches(mask: &str, full: &str) -> bool {
    let mask: Vec<char> = irc_lowercase(mask).chars().collect();
    let text: Vec<char> = irc_lowercase(full).chars().collect();
    // Greedy matching with one remembered star, as in glob matching.
    let (mut m, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if m < mask.len() && (mask[m] == '?' || mask[m] == text[t]) {
            m += 1;
            t += 1;
        } else if m < mask.len() && mask[m] == '*' {
            star = Some((m, t));
            m += 1;
        } else if let Some((sm, st)) = star {
            m = sm + 1;
            t = st + 1;
            star = Some((sm, st + 1));
        } else {
            return false;
        }
    }
    mask[m..].iter().all(|c| *c == '*')
}

/// Sets the power levels of ghosts in a channel's portal, as the bot, in one state event;
/// nothing when they are as asked already. Our own nicks are skipped.
pub(crate) async fn set_power_levels(
    bridge: &Kit,
    network: &str,
    channel: &str,
    levels: &[(String, i64)],
) -> NetworkResult<()> {
    let irc = bridge.network();
    if !irc.cfg.settings.mode_power_levels {
        return Ok(());
    }
    let Some(portal) = bridge.portal(&ChatId::channel(network, channel)).await? else {
        return Ok(());
    };
    let app = bridge.app()?;
    let Some(mut content) = app
        .state_content::<serde_json::Value>(&portal.room_id, StateEventType::RoomPowerLevels, "")
        .await?
    else {
        return Ok(());
    };
    let Some(users) = content["users"].as_object_mut() else {
        return Ok(());
    };
    let mut changed = false;
    for (nick, level) in levels {
        if irc.is_own_nick(network, nick) {
            continue;
        }
        let ghost = bridge.ghost_user_id(&UserId::new(network, nick))?;
        let old = users
            .get(ghost.as_str())
            .and_then(|l| l.as_i64())
            .unwrap_or(0);
        if old == *level {
            continue;
        }
        changed = true;
        if *level == 0 {
            users.remove(ghost.as_str());
        } else {
            users.insert(ghost.to_string(), (*level).into());
        }
    }
    if changed {
        app.bot()
            .send_state_json(&portal.room_id, "m.room.power_levels", "", content, None)
            .await?;
    }
    Ok(())
}

/// The ghosts of a channel get the power levels their modes give (a portal was made, the bot
/// joined again, someone joined the portal).
pub(crate) async fn sync_power_levels(
    bridge: &Kit,
    network: &str,
    channel: &str,
) -> NetworkResult<()> {
    let ranked: Vec<(String, i64)> = bridge
        .network()
        .channel_modes(network, channel)
        .into_iter()
        .map(|(nick, modes)| (nick, level_of(&modes)))
        .filter(|(_, l)| *l > 0)
        .collect();
    if ranked.is_empty() {
        return Ok(());
    }
    set_power_levels(bridge, network, channel, &ranked).await
}

/// A Matrix user kicked, banned or unbanned an IRC user's ghost in a portal (the homeserver
/// checked their power): the channel follows, through the kicker's own connection when it
/// has operator status there, else the bot's (naming the kicker). With neither, the room is
/// told it did not reach IRC.
pub(crate) async fn matrix_kick(
    bridge: &Kit,
    network: &str,
    channel: &str,
    target: &UserId,
    change: &MatrixMembership<'_, Hub>,
) -> NetworkResult<()> {
    let irc = bridge.network();
    let room = &change.portal.room_id;
    let unban = change.membership == "leave" && change.previous.as_deref() == Some("ban");
    // A `leave` of a ghost that was not in the room (an invite withdrawn) is no kick.
    let kick = change.membership == "leave" && change.previous.as_deref() == Some("join");
    if !(unban || kick || change.membership == "ban") {
        return Ok(());
    }
    // Worked out the same way as when banning, so an unban lifts that ban while the host
    // is still known.
    let mask = ban_mask(irc, network, &target.nick);
    let Some((client, reason)) = operator(bridge, network, channel, change).await? else {
        let what = if unban { "unban" } else { "kick" };
        let notice = format!(
            "Could not {what} {} on IRC: neither your connection nor the bridge's has operator status in {channel}.",
            target.nick
        );
        bridge
            .app()?
            .bot()
            .send(room, &RoomMessageEventContent::notice_plain(notice))
            .await?;
        return Ok(());
    };
    if unban {
        client.raw(Message::new(Command::Mode, &[channel, "-b", &mask]));
        return Ok(());
    }
    if change.membership == "ban" {
        client.raw(Message::new(Command::Mode, &[channel, "+b", &mask]));
    }
    client.raw(Message::new(
        Command::Kick,
        &[channel, &target.nick, &reason],
    ));
    Ok(())
}

/// The connection that acts for the sender of `change` as a channel operator, with the reason
/// to give: their own when it has operator status there, else the bot's (the reason naming
/// them); `None` when neither has.
async fn operator(
    bridge: &Kit,
    network: &str,
    channel: &str,
    change: &MatrixMembership<'_, Hub>,
) -> NetworkResult<Option<(Client, String)>> {
    let irc = bridge.network();
    let own = bridge
        .connection(change.sender, network)
        .filter(|p| has_ops(irc, network, channel, &p.client.state().nick));
    if let Some(puppet) = own {
        let reason = change.reason.clone().unwrap_or_default();
        return Ok(Some((puppet.client.clone(), reason)));
    }
    let bot = irc.bot(network)?;
    if !has_ops(irc, network, channel, &bot.state().nick) {
        return Ok(None);
    }
    let who = bridge
        .display_name(&change.portal.room_id, change.sender)
        .await;
    let reason = match &change.reason {
        Some(reason) if !reason.is_empty() => format!("{who}: {reason}"),
        _ => who,
    };
    Ok(Some((bot, reason)))
}

/// A Matrix user kicked or banned another Matrix user who has a connection in the channel: IRC
/// sees a `KICK` when the kicker's connection or the bot can give one, else the kicked user's
/// connection parts. (No IRC ban: the Matrix ban keeps them out of the portal, and so of the
/// channel.)
pub(crate) async fn matrix_kick_puppet(
    bridge: &Kit,
    network: &str,
    channel: &str,
    puppet: &Puppet,
    change: &MatrixMembership<'_, Hub>,
) -> NetworkResult<()> {
    match operator(bridge, network, channel, change).await? {
        Some((client, reason)) => {
            let nick = puppet.client.state().nick;
            client.raw(Message::new(Command::Kick, &[channel, &nick, &reason]));
        }
        None => {
            let reason = change.reason.clone().unwrap_or_else(|| "kicked".into());
            puppet.client.part(channel, &reason);
        }
    }
    Ok(())
}

/// One of our Matrix users' connections was kicked from a channel on IRC: the user is kicked
/// from the portal by the bot, naming the IRC kicker, and their wait to be disconnected starts.
pub(crate) async fn puppet_removed(
    bridge: &Kit,
    network: &str,
    channel: &str,
    user: &str,
    reason: String,
) -> NetworkResult<()> {
    let Some(portal) = bridge.portal(&ChatId::channel(network, channel)).await? else {
        return Ok(());
    };
    let user = MatrixUserId::parse(user)?;
    if !is_member(bridge, &portal.room_id, &user).await {
        return Ok(());
    }
    bridge
        .app()?
        .bot()
        .kick(&portal.room_id, &user, Some(&reason))
        .await?;
    users::left_portal(bridge, network, &user).await
}

/// A ban set on IRC: the Matrix users whose own connections in that channel it matches are
/// taken out of it and kicked from the portal. (A Matrix ban would outlive the IRC one, which
/// channel operators lift on their own; with a kick, the user can try again, and a connection
/// still banned is refused at the join, which kicks them again.)
pub(crate) async fn irc_ban(
    bridge: &Kit,
    network: &str,
    channel: &str,
    by: &str,
    mask: &str,
) -> NetworkResult<()> {
    let irc = bridge.network();
    let members = irc.channel_members(network, channel);
    for (user, client) in irc.puppets_on(network) {
        let nick = client.state().nick;
        if !members
            .iter()
            .any(|m| irc_lowercase(m) == irc_lowercase(&nick))
        {
            continue;
        }
        if mask_matches(mask, &full_mask(irc, network, &nick)) {
            let reason = format!("banned on IRC by {by} ({mask})");
            client.part(channel, &reason);
            puppet_removed(bridge, network, channel, &user, reason).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_like_irc_servers_do() {
        assert!(mask_matches("*!*@host.example", "Dave!~d@HOST.example"));
        assert!(mask_matches("dave!*@*", "DAVE!x@y"));
        assert!(mask_matches("al?ce*!*@*", "alice[m]!u@h"));
        assert!(!mask_matches("*!*@other", "dave!d@host"));
        assert!(!mask_matches("bob!*@*", "bobby!b@h"));
        assert!(mask_matches("*", "anything!a@b"));
        assert!(mask_matches("a*b*c!*@*", "aXbYbZc!u@h"));
    }

    #[test]
    fn the_highest_mode_sets_the_level() {
        assert_eq!(level_of("ov"), 50);
        assert_eq!(level_of("v"), 10);
        assert_eq!(level_of(""), 0);
    }
}
