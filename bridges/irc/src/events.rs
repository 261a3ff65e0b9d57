//! What happens on IRC, bridged into Matrix through the kit.

use tokio::sync::mpsc::UnboundedReceiver;
use trestle::{
    Appservice,
    bridge::{
        BridgeHandle, ChatInfo, ConnectionState, LoginHandle, MessageContent, MessageKind,
        RemoteMembership, RemoteMessage, UserInfo,
    },
    ruma::MilliSecondsSinceUnixEpoch,
};

use crate::{
    ids::{ChatId, UserId},
    irc::{
        connection::{Client, Event, Kind},
        format::{irc_to_html, irc_to_plain},
        naming::irc_lowercase,
    },
    moderation,
    network::{Irc, client_config, lock},
    status,
};

/// The bots' service: one connection per network, joined to the configured channels and every
/// portal's, bridging what they hear until the appservice stops.
pub async fn run_bots(bridge: BridgeHandle<Irc>, app: Appservice) -> trestle::Result<()> {
    bridge
        .attach(&app)
        .await
        .map_err(|e| trestle::Error::Other(e.to_string()))?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut clients = Vec::new();
    for network in &bridge.network().cfg.settings.networks {
        let mut config = client_config(network, &network.nick);
        if let (Some(account), Some(password)) = (&network.sasl_account, &network.sasl_password) {
            config.sasl = Some((account.clone(), password.clone()));
        }
        let (client, events) = Client::spawn(config);
        bridge.network().set_bot(&network.name, client.clone());
        for channel in &network.channels {
            client.join(channel);
        }
        let portals = bridge.portals().await.unwrap_or_default();
        for portal in portals {
            if let ChatId::Channel {
                network: n,
                channel,
            } = &portal.chat
                && *n == network.name
            {
                client.join(channel);
            }
        }
        clients.push(client.clone());
        tasks.spawn(run_bot(
            bridge.clone(),
            network.name.clone(),
            client,
            events,
        ));
    }
    app.stopping().await;
    for client in clients {
        client.quit("bridge stopping");
    }
    tasks.abort_all();
    Ok(())
}

async fn run_bot(
    bridge: BridgeHandle<Irc>,
    network: String,
    client: Client,
    mut events: UnboundedReceiver<Event>,
) {
    while let Some(event) = events.recv().await {
        if let Err(error) = bot_event(&bridge, &network, &client, event).await {
            tracing::warn!(%network, %error, "an IRC event could not be bridged");
        }
    }
}

fn server_time(time: Option<&str>) -> Option<MilliSecondsSinceUnixEpoch> {
    let time = time?;
    // `YYYY-MM-DDThh:mm:ss.sssZ`
    let (date, clock) = time.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.split(':');
    let (h, min) = (
        c.next()?.parse::<i64>().ok()?,
        c.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = c.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = (days * 86_400 + h * 3600 + min * 60) * 1000 + (secs * 1000.0) as i64;
    MilliSecondsSinceUnixEpoch::from_system_time(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).ok()?),
    )
}

fn content(kind: Kind, text: &str) -> MessageContent {
    let kind = match kind {
        Kind::Privmsg => MessageKind::Text,
        Kind::Notice => MessageKind::Notice,
        Kind::Action => MessageKind::Emote,
    };
    let mut content = MessageContent::text(irc_to_plain(text)).kind(kind);
    if let Some(html) = irc_to_html(text) {
        content = content.html(html);
    }
    content
}

pub(crate) fn channel_members(irc: &Irc, network: &str, channel: &str) -> Vec<String> {
    lock(&irc.members)
        .get(&(network.to_owned(), irc_lowercase(channel)))
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

/// Channels (lower-cased) a nick is in, as the bot sees them.
fn channels_of(irc: &Irc, network: &str, nick: &str) -> Vec<String> {
    let nick = irc_lowercase(nick);
    lock(&irc.members)
        .iter()
        .filter(|((n, _), members)| n == network && members.contains_key(&nick))
        .map(|((_, c), _)| c.clone())
        .collect()
}

fn set_member(irc: &Irc, network: &str, channel: &str, nick: &str, present: bool) {
    let mut members = lock(&irc.members);
    let set = members
        .entry((network.to_owned(), irc_lowercase(channel)))
        .or_default();
    if present {
        set.insert(irc_lowercase(nick), nick.to_owned());
    } else {
        set.remove(&irc_lowercase(nick));
    }
}

/// A remote user joins a portal, with their nick as display name.
pub(crate) async fn ghost_join(
    bridge: &BridgeHandle<Irc>,
    network: &str,
    channel: &str,
    nick: &str,
) -> trestle::bridge::NetworkResult<()> {
    let user = UserId::new(network, nick);
    bridge.remote_profile(&user, &UserInfo::named(nick)).await?;
    bridge
        .remote_membership(
            &ChatId::channel(network, channel),
            &user,
            RemoteMembership::Join,
        )
        .await
}

async fn bot_event(
    bridge: &BridgeHandle<Irc>,
    network: &str,
    client: &Client,
    event: Event,
) -> trestle::bridge::NetworkResult<()> {
    let irc = bridge.network();
    let own = |nick: &str| irc.is_own_nick(network, nick);
    match event {
        Event::Registered { nick } => {
            tracing::info!(%network, %nick, "the bot is on IRC");
            status::bot_up(bridge, network).await?;
        }
        Event::Message {
            from,
            target,
            kind,
            text,
            time,
        } => {
            if own(&from) || !target.starts_with(['#', '&', '!', '+']) {
                return Ok(());
            }
            let chat = ChatId::channel(network, &target);
            let id = irc.remember(&from, &text);
            let mut message =
                RemoteMessage::new(chat, UserId::new(network, &from), id, content(kind, &text))
                    .sender_info(UserInfo::named(&from));
            if let Some(ts) = server_time(time.as_deref()) {
                message = message.ts(ts);
            }
            // Only channels with a portal are bridged (the kit would make one otherwise).
            if bridge.portal(&message.chat).await?.is_some() {
                bridge.remote_message(message).await?;
            }
        }
        Event::Join {
            nick,
            channel,
            mask,
        } => {
            irc.track_join(network, &channel, &nick, &mask);
            set_member(irc, network, &channel, &nick, true);
            if !own(&nick) {
                ghost_join(bridge, network, &channel, &nick).await?;
            }
        }
        Event::Names {
            channel,
            nicks,
            prefixes,
        } => {
            let names: Vec<(String, String)> = nicks.into_iter().zip(prefixes).collect();
            irc.track_names(network, &channel, &names);
            for (nick, _) in &names {
                set_member(irc, network, &channel, nick, true);
                if !own(nick) {
                    ghost_join(bridge, network, &channel, nick).await?;
                }
            }
            // The channel's operators and voiced users get their power levels (a portal's
            // made, or the bot is back).
            moderation::sync_power_levels(bridge, network, &channel).await?;
        }
        Event::JoinRefused { channel, reason } => {
            tracing::warn!(%network, %channel, %reason, "the bot cannot join a channel");
        }
        Event::Part {
            nick,
            channel,
            reason,
        } => {
            set_member(irc, network, &channel, &nick, false);
            if !own(&nick) {
                let reason = (!reason.is_empty()).then_some(reason);
                bridge
                    .remote_membership(
                        &ChatId::channel(network, &channel),
                        &UserId::new(network, &nick),
                        RemoteMembership::Leave(reason),
                    )
                    .await?;
            }
        }
        Event::Quit { nick, reason } => {
            for channel in channels_of(irc, network, &nick) {
                set_member(irc, network, &channel, &nick, false);
                if !own(&nick) {
                    bridge
                        .remote_membership(
                            &ChatId::channel(network, &channel),
                            &UserId::new(network, &nick),
                            RemoteMembership::Leave(Some(reason.clone())),
                        )
                        .await?;
                }
            }
        }
        Event::Kick {
            channel,
            nick,
            by,
            reason,
        } => {
            set_member(irc, network, &channel, &nick, false);
            let owner = irc.nick_owner(network, &nick);
            if irc_lowercase(&nick) == irc_lowercase(&client.state().nick) {
                // The bot was kicked: back in, so the portal keeps working.
                client.join(&channel);
            } else if let Some(user) = owner.filter(|u| !u.is_empty()) {
                // A Matrix user's own connection: they leave the portal too.
                let why = if reason.is_empty() {
                    format!("kicked on IRC by {by}")
                } else {
                    format!("kicked on IRC by {by}: {reason}")
                };
                moderation::puppet_removed(bridge, network, &channel, &user, why).await?;
            } else if !own(&nick) && ghost_in_portal(bridge, network, &channel, &nick).await {
                // The bot kicks, naming the IRC kicker: a ghost rarely has the power to.
                let reason = if reason.is_empty() {
                    by
                } else {
                    format!("{by}: {reason}")
                };
                bridge
                    .remote_membership(
                        &ChatId::channel(network, &channel),
                        &UserId::new(network, &nick),
                        RemoteMembership::Kick {
                            by: None,
                            reason: Some(reason),
                        },
                    )
                    .await?;
            }
        }
        Event::Nick { old, new } => {
            irc.track_nick(network, &old, &new);
            // The old nick's ghost leaves and the new one's joins where the user is.
            for channel in channels_of(irc, network, &old) {
                set_member(irc, network, &channel, &old, false);
                set_member(irc, network, &channel, &new, true);
                if !own(&new) {
                    let chat = ChatId::channel(network, &channel);
                    bridge
                        .remote_membership(
                            &chat,
                            &UserId::new(network, &old),
                            RemoteMembership::Leave(Some(format!("now known as {new}"))),
                        )
                        .await?;
                    ghost_join(bridge, network, &channel, &new).await?;
                }
            }
        }
        Event::Mode {
            channel,
            by,
            changes,
        } => {
            for (adding, mode, argument) in changes {
                let Some(argument) = argument else { continue };
                if moderation::mode_level(mode).is_some() {
                    irc.track_mode(network, &channel, &argument, adding, mode);
                    let level = irc.member_level(network, &channel, &argument);
                    moderation::set_power_levels(bridge, network, &channel, &[(argument, level)])
                        .await?;
                } else if mode == 'b' && adding {
                    moderation::irc_ban(bridge, network, &channel, &by, &argument).await?;
                }
            }
        }
        // A topic our own connection set came from Matrix already.
        Event::Topic { by: Some(by), .. } if own(&by) => {}
        Event::Topic { channel, topic, .. } => {
            bridge
                .remote_chat_info(
                    &ChatId::channel(network, &channel),
                    &ChatInfo::default().topic(topic),
                )
                .await?;
        }
        Event::Disconnected { reason } => status::bot_down(bridge, network, &reason).await?,
        Event::Error { message } => tracing::warn!(%network, %message, "IRC error"),
    }
    Ok(())
}

/// Whether the ghost of `nick` is in the channel's portal (a ghost kicked from Matrix first
/// is not kicked again when the IRC kick comes back).
async fn ghost_in_portal(
    bridge: &BridgeHandle<Irc>,
    network: &str,
    channel: &str,
    nick: &str,
) -> bool {
    let Ok(Some(portal)) = bridge.portal(&ChatId::channel(network, channel)).await else {
        return false;
    };
    let Ok(ghost) = bridge.ghost_user_id(&UserId::new(network, nick)) else {
        return false;
    };
    crate::users::is_member(bridge, &portal.room_id, &ghost).await
}

/// A Matrix user changed a portal's topic: the channel's topic follows, set by the user's own
/// connection when they have one, by the bot otherwise.
pub async fn matrix_topic(
    bridge: &BridgeHandle<Irc>,
    topic: trestle::router::Event<trestle::ruma::events::room::topic::RoomTopicEventContent>,
) -> trestle::bridge::NetworkResult<()> {
    let Some(portal) = bridge.portal_for_room(&topic.room_id).await? else {
        return Ok(());
    };
    let ChatId::Channel { network, channel } = &portal.chat else {
        return Ok(());
    };
    let line = crate::irc::message::Message::new(
        crate::irc::message::Command::Topic,
        &[channel, &topic.content.topic],
    );
    match bridge.connection(&topic.sender, network) {
        Some(puppet) => puppet.client.raw(line),
        None => bridge.network().bot(network)?.raw(line),
    }
    Ok(())
}

/// A Matrix user's own connection: reports its state, and bridges private messages to it
/// (channels are heard by the bot).
pub async fn run_puppet(handle: LoginHandle<Irc>, mut events: UnboundedReceiver<Event>) {
    let network = handle
        .logins(handle.user())
        .await
        .ok()
        .and_then(|logins| logins.into_iter().find(|l| l.id == handle.login_id()))
        .map(|l| l.data.network)
        .unwrap_or_else(|| handle.login_id().to_owned());
    while let Some(event) = events.recv().await {
        let result = match event {
            Event::Registered { nick } => match settled(&handle, &network, &nick).await {
                Ok(()) => handle.set_state(ConnectionState::Connected).await,
                failed => failed,
            },
            Event::Nick { new, .. }
                if handle.network().nick_owner(&network, &new).as_deref()
                    == Some(handle.user().as_str()) =>
            {
                settled(&handle, &network, &new).await
            }
            Event::Error { message } => {
                handle
                    .network()
                    .settle_nick(&network, handle.user().as_str());
                tracing::info!(user = %handle.user(), %message, "IRC refused");
                Ok(())
            }
            // Banned (or kept out otherwise): they cannot be in the portal either.
            Event::JoinRefused { channel, reason } => {
                let why = format!("cannot join {channel} on IRC: {reason}");
                let user = handle.user().as_str();
                moderation::puppet_removed(&handle, &network, &channel, user, why).await
            }
            Event::Disconnected { reason } => {
                handle
                    .set_state(ConnectionState::TransientDisconnect(reason))
                    .await
            }
            Event::Message {
                from,
                target,
                kind,
                text,
                time,
            } if !target.starts_with(['#', '&', '!', '+']) && !from.contains('.') => {
                private_message(&handle, &network, &from, kind, &text, time.as_deref()).await
            }
            _ => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(user = %handle.user(), %error, "an IRC event could not be bridged");
        }
    }
}

/// The server gave a user's connection `nick` (at registration, or a change): pending
/// changes are settled, and a nick other than the login's (taken, so the server gave the next
/// one) is stored with the login, so the IRC user holding the first is not taken for ours.
async fn settled(
    handle: &LoginHandle<Irc>,
    network: &str,
    nick: &str,
) -> trestle::bridge::NetworkResult<()> {
    handle
        .network()
        .settle_nick(network, handle.user().as_str());
    let Some(mut login) = handle
        .logins(handle.user())
        .await?
        .into_iter()
        .find(|l| l.id == handle.login_id())
    else {
        return Ok(());
    };
    if irc_lowercase(&login.data.nick) == irc_lowercase(nick) {
        return Ok(());
    }
    login.data.nick = nick.to_owned();
    login.remote_user = UserId::new(network, nick);
    login.remote_name = nick.to_owned();
    handle.save_login(&login).await
}

async fn private_message(
    handle: &LoginHandle<Irc>,
    network: &str,
    from: &str,
    kind: Kind,
    text: &str,
    time: Option<&str>,
) -> trestle::bridge::NetworkResult<()> {
    let remote = UserId::new(network, from);
    let chat = ChatId::Private {
        network: network.to_owned(),
        nick: irc_lowercase(from),
        user: handle.user().to_string(),
    };
    handle
        .remote_profile(&remote, &UserInfo::named(from))
        .await?;
    handle
        .ensure_direct_portal(&chat, &remote, handle.user())
        .await?;
    let id = handle.network().remember(from, text);
    let mut message = RemoteMessage::new(chat, remote, id, content(kind, text));
    if let Some(ts) = server_time(time) {
        message = message.ts(ts);
    }
    handle.remote_message(message).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_parses() {
        let ts = server_time(Some("2024-01-02T03:04:05.678Z")).unwrap();
        assert_eq!(u64::from(ts.get()), 1_704_164_645_678);
        assert!(server_time(Some("garbage")).is_none());
        assert!(server_time(None).is_none());
    }
}
