//! Matrix users on IRC: their own connections made when they join a portal, and closed when
//! they have been in none of the network's portals for a while.

use std::time::Duration;

use trestle::ruma::UserId;

use trestle_bridge::{LoginRequest, MatrixMembership, NetworkResult};

use crate::{
    hub::{Hub, Kit, Puppet, is_member},
    ids,
    irc::naming::{irc_lowercase, nick_candidates, sanitize_nick},
};

/// A Matrix user without a connection on `network` joined one of its portals: where the
/// network connects users by itself, they get their own connection now, its nick made from
/// their display name. It is registered with the kit before this returns, so the messages
/// they send next (handled after this join, in the room's order) go out through it: queued
/// until it is registered and in the channel, never relayed meanwhile. When it cannot be made,
/// they stay relayed (where relay is on).
pub(crate) async fn auto_connect(bridge: &Kit, network: &str, change: &MatrixMembership<'_, Hub>) {
    let irc = bridge.network();
    if !irc
        .network_settings(network)
        .is_some_and(|n| n.auto_connect)
    {
        return;
    }
    // A login of theirs that is down (bad credentials, reconnecting) is theirs to fix.
    match bridge.logins(change.user).await {
        Ok(logins) if logins.iter().any(|l| l.id == network) => return,
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(user = %change.user, %error, "logins unreadable; not connecting");
            return;
        }
    }
    let name = change
        .display_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| change.user.localpart().to_owned());
    let nick = irc.cfg.settings.nick_pattern.replace("{name}", &name);
    let request = LoginRequest::new(change.user.clone())
        .field("network", network)
        .field("nick", nick)
        .field("display_name", name)
        .automatic();
    match bridge.login(request).await {
        Ok(login) => {
            tracing::info!(user = %change.user, nick = %login.remote_name, %network, "connected a Matrix user")
        }
        Err(error) => {
            tracing::info!(user = %change.user, %network, %error, "no connection of their own; relayed where relay is on")
        }
    }
}

/// A Matrix user with an automatic connection changed their display name (a `join` after a
/// `join`): the connection takes the nick made from the new one, and the login keeps it.
pub(crate) async fn renamed(
    bridge: &Kit,
    network: &str,
    change: &MatrixMembership<'_, Hub>,
    puppet: &Puppet,
) -> NetworkResult<()> {
    let irc = bridge.network();
    let Some(name) = change
        .display_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
    else {
        return Ok(());
    };
    let Some(mut login) = bridge
        .logins(change.user)
        .await?
        .into_iter()
        .find(|l| l.id == network && l.data.auto)
    else {
        return Ok(());
    };
    if login.data.name.as_deref() == Some(name) {
        return Ok(());
    }
    let wanted = sanitize_nick(
        &irc.cfg.settings.nick_pattern.replace("{name}", name),
        change.user.localpart(),
        30,
    );
    let user = change.user.as_str();
    let nick = nick_candidates(&wanted, 30)
        .find(|c| irc.nick_owner(network, c).is_none_or(|owner| owner == user))
        .unwrap_or_else(|| wanted.clone());
    if irc_lowercase(&nick) != irc_lowercase(&puppet.client.state().nick) {
        irc.expect_nick(network, &nick, user);
        puppet.client.set_nick(&nick);
    }
    login.data.name = Some(name.to_owned());
    login.data.nick = nick.clone();
    login.remote_user = ids::UserId::new(network, &nick);
    login.remote_name = nick;
    bridge.save_login(&login).await
}

/// A Matrix user with a connection on `network` left one of its portals. An automatic
/// connection is closed once they have been in none of the network's portals for the
/// network's `idle_timeout`; a leave or a join meanwhile starts the wait again (or ends it).
pub(crate) async fn left_portal(bridge: &Kit, network: &str, user: &UserId) -> NetworkResult<()> {
    let irc = bridge.network();
    let automatic = bridge
        .logins(user)
        .await?
        .iter()
        .any(|l| l.id == network && l.data.auto);
    let Some(settings) = irc.network_settings(network).filter(|_| automatic) else {
        return Ok(());
    };
    let wait = Duration::from_secs(settings.idle_timeout);
    let count = irc.count_leave(network, user.as_str());
    let (bridge, network, user) = (bridge.clone(), network.to_owned(), user.to_owned());
    let app = bridge.app()?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = app.stopping() => return,
        }
        let irc = bridge.network();
        if !irc.last_leave(&network, user.as_str(), count) {
            return;
        }
        match in_a_portal(&bridge, &network, &user).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%user, %network, "closing an idle connection");
                if let Err(error) = bridge.logout(&user, &network).await {
                    tracing::warn!(%user, %network, %error, "could not close an idle connection");
                }
            }
            Err(error) => tracing::warn!(%user, %network, %error, "portals unreadable"),
        }
    });
    Ok(())
}

/// Whether `user` is in some portal of `network` (a channel or a direct chat).
async fn in_a_portal(bridge: &Kit, network: &str, user: &UserId) -> NetworkResult<bool> {
    for portal in bridge.portals().await? {
        if portal.chat.network() == network && is_member(bridge, &portal.room_id, user).await {
            return Ok(true);
        }
    }
    Ok(false)
}
