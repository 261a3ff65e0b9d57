//! What happens on IRC, bridged into Matrix through the kit: the bots' connections hear the
//! channels (`bot_event` hands each event to a small function, the channel's members in
//! `channels.rs`), and each Matrix user's own connection hears their private messages
//! (`puppet.rs`).

use tokio::sync::mpsc::UnboundedReceiver;
use trestle::{Appservice, ruma::MilliSecondsSinceUnixEpoch};
use trestle_bridge::{
    ChatInfo, MessageContent, MessageKind, NetworkResult, RemoteMembership, RemoteMessage, UserInfo,
};

use crate::{
    hub::{Hub, Kit, client_config},
    ids::{ChatId, UserId},
    irc::{
        connection::{Client, Event, Kind},
        format::{irc_to_html, irc_to_plain},
        message::{Command, Message},
        naming::is_channel,
    },
    status,
};

mod channels;
mod puppet;

pub use puppet::run_puppet;

/// The bots (the kit's `Network::serve`): one connection per network, joined to the
/// configured channels and every portal's, bridging what they hear until the kit lets them go
/// (after the appservice began to stop and the kit's event in hand was sent).
pub async fn run_bots(bridge: Kit, app: Appservice) -> trestle::Result<()> {
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
    let clients = QuitOnDrop(clients);
    bridge.serve_stopping().await;
    drop(clients);
    // What the bots heard before they quit is bridged still (the next holder's bots will not
    // hear it): their events end with their connections.
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tasks.abort_all();
    }
    Ok(())
}

/// How long the bots' last events may take to be bridged once they quit.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The bots, told to quit when their service ends, however it ends: stopped, or dropped when
/// another process took the bridge over (its lease lost), where they must not stay.
struct QuitOnDrop(Vec<Client>);

impl Drop for QuitOnDrop {
    fn drop(&mut self) {
        for client in &self.0 {
            client.quit("bridge stopping");
        }
    }
}

async fn run_bot(
    bridge: Kit,
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

async fn bot_event(
    bridge: &Kit,
    network: &str,
    client: &Client,
    event: Event,
) -> NetworkResult<()> {
    match event {
        Event::Registered { nick } => {
            tracing::info!(%network, %nick, "the bot is on IRC");
            status::bot_up(bridge, network).await
        }
        Event::Message {
            from,
            target,
            kind,
            text,
            time,
        } => {
            channel_message(
                bridge,
                network,
                &from,
                &target,
                kind,
                &text,
                time.as_deref(),
            )
            .await
        }
        Event::Join {
            nick,
            channel,
            mask,
        } => channels::joined(bridge, network, &channel, &nick, &mask).await,
        Event::Names {
            channel,
            nicks,
            prefixes,
        } => channels::names(bridge, network, &channel, nicks, prefixes).await,
        Event::JoinRefused { channel, reason } => {
            tracing::warn!(%network, %channel, %reason, "the bot cannot join a channel");
            Ok(())
        }
        Event::Part {
            nick,
            channel,
            reason,
        } => channels::parted(bridge, network, &channel, &nick, reason).await,
        Event::Quit { nick, reason } => channels::quit(bridge, network, &nick, &reason).await,
        Event::Kick {
            channel,
            nick,
            by,
            reason,
        } => channels::kicked(bridge, network, client, &channel, &nick, by, &reason).await,
        Event::Nick { old, new } => channels::renamed(bridge, network, &old, &new).await,
        Event::Mode {
            channel,
            by,
            changes,
        } => channels::modes(bridge, network, &channel, &by, changes).await,
        // A topic our own connection set came from Matrix already.
        Event::Topic { by: Some(by), .. } if bridge.network().is_own_nick(network, &by) => Ok(()),
        Event::Topic { channel, topic, .. } => {
            bridge
                .remote_chat_info(
                    &ChatId::channel(network, &channel),
                    &ChatInfo::default().topic(topic),
                )
                .await
        }
        Event::Disconnected { reason } => status::bot_down(bridge, network, &reason).await,
        Event::Error { message } => {
            tracing::warn!(%network, %message, "IRC error");
            Ok(())
        }
    }
}

/// A message in a channel; only channels with a portal are bridged (the kit would make one
/// otherwise), and our own connections' lines are echoes.
async fn channel_message(
    bridge: &Kit,
    network: &str,
    from: &str,
    target: &str,
    kind: Kind,
    text: &str,
    time: Option<&str>,
) -> NetworkResult<()> {
    let irc = bridge.network();
    if irc.is_own_nick(network, from) || !is_channel(target) {
        return Ok(());
    }
    let chat = ChatId::channel(network, target);
    let message = heard(irc, chat, UserId::new(network, from), kind, text, time)
        .sender_info(UserInfo::named(from));
    if bridge.portal(&message.chat).await?.is_some() {
        bridge.remote_message(message).await?;
    }
    Ok(())
}

/// A message heard on IRC as the kit takes it: remembered for quotes and corrections, its
/// formatting as HTML, and the server's time when it gave one.
pub(crate) fn heard(
    hub: &Hub,
    chat: ChatId,
    sender: UserId,
    kind: Kind,
    text: &str,
    time: Option<&str>,
) -> RemoteMessage<Hub> {
    let id = hub.remember(&sender.nick, text);
    let message = RemoteMessage::new(chat, sender, id, content(kind, text));
    match server_time(time) {
        Some(ts) => message.ts(ts),
        None => message,
    }
}

/// The IRCv3 `server-time` tag (`YYYY-MM-DDThh:mm:ss.sssZ`) as a Matrix timestamp.
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

/// An IRC message's text (formatting codes and all) as Matrix message content.
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

/// A remote user joins a portal, with their nick as display name.
pub(crate) async fn ghost_join(
    bridge: &Kit,
    network: &str,
    channel: &str,
    nick: &str,
) -> NetworkResult<()> {
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

/// A Matrix user changed a portal's topic: the channel's topic follows, set by the user's own
/// connection when they have one, by the bot otherwise.
pub async fn matrix_topic(bridge: &Kit, event: trestle::router::RawEvent) -> NetworkResult<()> {
    #[derive(serde::Deserialize)]
    struct Topic {
        room_id: trestle::ruma::OwnedRoomId,
        sender: trestle::ruma::OwnedUserId,
        content: trestle::ruma::events::room::topic::RoomTopicEventContent,
    }
    let topic: Topic = event.deserialize()?;
    let Some(portal) = bridge.portal_for_room(&topic.room_id).await? else {
        return Ok(());
    };
    let ChatId::Channel { network, channel } = &portal.chat else {
        return Ok(());
    };
    let line = Message::new(Command::Topic, &[channel, &topic.content.topic]);
    match bridge.connection(&topic.sender, network) {
        Some(puppet) => puppet.client.raw(line),
        None => bridge.network().bot(network)?.raw(line),
    }
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
