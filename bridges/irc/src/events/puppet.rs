//! A Matrix user's own connection: its state, the nick the server gave it, and the private
//! messages it hears (channels are heard by the bot).

use tokio::sync::mpsc::UnboundedReceiver;
use trestle_bridge::{ConnectionState, LoginHandle, NetworkResult, UserInfo};

use super::heard;
use crate::{
    hub::Hub,
    ids::{ChatId, UserId},
    irc::{
        connection::{Event, Kind},
        naming::{irc_lowercase, is_channel},
    },
    moderation,
};

/// A Matrix user's own connection: reports its state, and bridges private messages to it
/// (channels are heard by the bot).
pub async fn run_puppet(handle: LoginHandle<Hub>, mut events: UnboundedReceiver<Event>) {
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
            } if !is_channel(&target) && !from.contains('.') => {
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
async fn settled(handle: &LoginHandle<Hub>, network: &str, nick: &str) -> NetworkResult<()> {
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
    handle: &LoginHandle<Hub>,
    network: &str,
    from: &str,
    kind: Kind,
    text: &str,
    time: Option<&str>,
) -> NetworkResult<()> {
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
    let message = heard(handle.network(), chat, remote, kind, text, time);
    handle.remote_message(message).await?;
    Ok(())
}
