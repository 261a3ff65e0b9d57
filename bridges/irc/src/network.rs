//! The IRC side of the bridge kit: `trestle_bridge::Network` for the hub. The kit's calls
//! are answered here or handed to the parts (`users`, `moderation`, `events`), which take the
//! kit's handle; none of them imports this module.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trestle::ruma::{MxcUri, UserId as MatrixUserId};
use trestle_bridge::{
    BridgeError, ChatInfo, InfoSection, Login, LoginHandle, LoginRequest, MatrixEdit,
    MatrixMembership, MatrixMessage, MessageContent, Network, NetworkResult, NewLogin, Protocol,
    Via,
};

use crate::{
    events::{self, run_puppet},
    hub::{Hub, Kit, Puppet, client_config, is_member},
    ids::{ChatId, UserId},
    irc::{
        connection::{Client, Sent},
        format::irc_to_plain,
        naming::{nick_candidates, sanitize_nick},
    },
    moderation,
    text::{
        correction, irc_kind, irc_text, line_count, media_url_link, paste_line, relayed, with_quote,
    },
    users,
};

/// What a Matrix user's IRC login keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginData {
    /// The short name of the network logged in to.
    pub network: String,
    /// The nick the login connects with.
    pub nick: String,
    /// Made by the bridge when the user joined a portal (not by `login`): closed when they
    /// have been in no portal of the network for `idle_timeout`.
    #[serde(default)]
    pub auto: bool,
    /// For an automatic connection, the display name its nick was made from: a new one
    /// changes the nick.
    #[serde(default)]
    pub name: Option<String>,
}

/// Matrix messages on their way to IRC, for `send_message` and `edit_message` below.
impl Hub {
    /// Sends text to a chat as the sender's puppet or relayed by the bot; returns the nick it
    /// went out as, and what says when the server confirmed it.
    fn deliver(
        &self,
        chat: &ChatId,
        via: &Via<'_, Hub>,
        kind: trestle_bridge::MessageKind,
        text: &str,
    ) -> NetworkResult<(String, Sent)> {
        let kind = irc_kind(kind);
        match via {
            Via::Puppet { connection, .. } => {
                let sent = connection.client.send(chat.target(), kind, text);
                Ok((connection.client.state().nick, sent))
            }
            Via::Relay { name } => {
                let bot = self.bot(chat.network())?;
                let (kind, text) = relayed(name, kind, text);
                let sent = bot.send(chat.target(), kind, &text);
                Ok((bot.state().nick, sent))
            }
            _ => Err(BridgeError::Unsupported("this way of sending")),
        }
    }

    /// Where IRC users can open `mxc`: under `media_url` when one is set, else a signed link
    /// the bridge serves (the `mxc://` URI if it cannot make one, which is logged).
    async fn media_link(&self, bridge: &Kit, mxc: &MxcUri) -> String {
        if let Some(base) = &self.cfg.settings.media_url {
            return media_url_link(mxc, base);
        }
        match bridge.media_link(mxc).await {
            Ok(link) => link,
            Err(error) => {
                tracing::warn!(%mxc, %error, "could not make a media link");
                mxc.to_string()
            }
        }
    }

    /// The IRC text of a Matrix message, its media linked.
    async fn text_of(&self, bridge: &Kit, content: &MessageContent) -> String {
        let link = match &content.media {
            Some(mxc) => Some(self.media_link(bridge, mxc).await),
            None => None,
        };
        irc_text(content, link.as_deref())
    }

    /// A long message as its first line and a link to the whole text (`body`, uploaded as a
    /// text file by the bot). If the upload fails, the message is sent whole: long, not lost.
    async fn paste(&self, bridge: &Kit, body: &str, text: String) -> String {
        let uploaded = match bridge.app() {
            Ok(app) => app
                .media()
                .upload_bytes(
                    body.as_bytes().to_vec(),
                    "text/plain; charset=utf-8",
                    Some("message.txt"),
                )
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match uploaded {
            Ok(mxc) => {
                let link = self.media_link(bridge, &mxc).await;
                paste_line(&text, line_count(&text), &link)
            }
            Err(error) => {
                tracing::warn!(%error, "could not upload a long message; sent whole");
                text
            }
        }
    }
}

impl Network for Hub {
    type ChatId = ChatId;
    type UserId = UserId;
    type MessageId = String;
    type LoginData = LoginData;
    type Connection = Puppet;

    fn protocol(&self) -> Protocol {
        Protocol::new("irc", "IRC")
    }

    fn chat_alias(&self, chat: &ChatId) -> String {
        let name = chat.target().strip_prefix('#').unwrap_or(chat.target());
        self.cfg.aliases.localpart(chat.network(), name)
    }

    fn chat_for_alias(&self, localpart: &str) -> Option<ChatId> {
        self.cfg.settings.networks.iter().find_map(|network| {
            let channel = self.cfg.aliases.value(&network.name, localpart)?;
            Some(ChatId::channel(&network.name, &format!("#{channel}")))
        })
    }

    fn ghost_localpart(&self, user: &UserId) -> String {
        self.cfg.ghosts.localpart(&user.network, &user.nick)
    }

    fn user_for_ghost(&self, localpart: &str) -> Option<UserId> {
        self.cfg.settings.networks.iter().find_map(|network| {
            let nick = self.cfg.ghosts.value(&network.name, localpart)?;
            Some(UserId::new(&network.name, &nick))
        })
    }

    async fn chat_info(&self, chat: &ChatId) -> NetworkResult<ChatInfo> {
        let settings = self
            .network_settings(chat.network())
            .ok_or_else(|| BridgeError::NoPortal(format!("no IRC network {:?}", chat.network())))?;
        // A portal is being made: the bot joins the channel so that it hears it. Where
        // processes share the store the bot may live in another one (docs/scaling.md); it joins
        // when the portal's first member's join is handed to it (`matrix_membership`).
        if let ChatId::Channel { channel, network } = chat
            && let Ok(bot) = self.bot(network)
        {
            bot.join(channel);
        }
        let name = match chat {
            ChatId::Channel { channel, .. } => channel.clone(),
            ChatId::Private { nick, .. } => nick.clone(),
        };
        Ok(ChatInfo::named(name).network(InfoSection::new(&settings.name, &settings.host)))
    }

    fn login_fields(&self) -> &'static [&'static str] {
        &["network", "nick"]
    }

    async fn login(&self, request: LoginRequest) -> NetworkResult<NewLogin<Self>> {
        let network = request.fields.get("network").cloned().unwrap_or_default();
        if self.network_settings(&network).is_none() {
            let known: Vec<&str> = self
                .cfg
                .settings
                .networks
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            return Err(BridgeError::BadRequest(format!(
                "unknown network {network:?}; known: {}",
                known.join(", ")
            )));
        }
        let name = request
            .fields
            .get("nick")
            .cloned()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                self.cfg
                    .settings
                    .nick_pattern
                    .replace("{name}", request.user.localpart())
            });
        let wanted = sanitize_nick(&name, request.user.localpart(), 30);
        // Two Matrix users with one display name: the second gets the next candidate. (A nick
        // an IRC user holds is resolved by the server at registration the same way.)
        let user = request.user.as_str();
        let nick = nick_candidates(&wanted, 30)
            .find(|candidate| {
                self.nick_owner(&network, candidate)
                    .is_none_or(|owner| owner == user)
            })
            .unwrap_or_else(|| wanted.clone());
        Ok(NewLogin::new(
            network.clone(),
            UserId::new(&network, &nick),
            nick.clone(),
            LoginData {
                network,
                nick,
                auto: request.automatic,
                name: request.fields.get("display_name").cloned(),
            },
        ))
    }

    async fn connect(
        &self,
        login: &Login<Self>,
        handle: LoginHandle<Self>,
    ) -> NetworkResult<Puppet> {
        let settings = self.network_settings(&login.data.network).ok_or_else(|| {
            BridgeError::BadRequest(format!("no IRC network {:?}", login.data.network))
        })?;
        let (client, events) = Client::spawn(client_config(settings, &login.data.nick));
        // Known as ours before the bot can hear it join, so it never gets a ghost.
        let id = self.add_puppet(&login.data.network, login.user.as_str(), client.clone());
        let task = tokio::spawn(run_puppet(handle.clone(), events));
        // Built first, so that an error below drops it and its registration.
        let puppet = self.puppet(id, client, task);
        // The channels of the portals the user is in; the others when they join them.
        let mut joined = false;
        for portal in handle.portals().await? {
            if let ChatId::Channel { network, channel } = &portal.chat
                && *network == login.data.network
                && is_member(&handle, &portal.room_id, &login.user).await
            {
                puppet.client.join(channel);
                joined = true;
            }
        }
        // An automatic connection brought back at start for a user who left every channel
        // while the bridge was down waits to be closed like one whose user just left.
        if login.data.auto && !joined {
            users::left_portal(&handle, &login.data.network, &login.user).await?;
        }
        Ok(puppet)
    }

    async fn disconnect(&self, connection: &Puppet) -> NetworkResult<()> {
        connection.client.quit("logged out");
        Ok(())
    }

    /// The bots, one per network: in the process that holds the bridge's logins, so that
    /// relayed messages go out where they are heard.
    async fn serve(&self, bridge: Kit, app: trestle::Appservice) -> NetworkResult<()> {
        Ok(events::run_bots(bridge, app).await?)
    }

    fn login_covers(&self, login: &Login<Self>, chat: &ChatId) -> bool {
        login.data.network == chat.network()
    }

    /// The bot's connection hears the channels; a user's own connection only their private
    /// messages.
    fn login_hears(&self, login: &Login<Self>, chat: &ChatId) -> bool {
        matches!(chat, ChatId::Private { network, user, .. }
            if *network == login.data.network && *user == login.user.as_str())
    }

    async fn send_message(
        &self,
        message: MatrixMessage<'_, Self>,
    ) -> NetworkResult<Option<String>> {
        let mut text = self.text_of(message.bridge, &message.content).await;
        if let Some(limit) = self.cfg.settings.paste_over_lines
            && line_count(&text) > limit
        {
            text = self
                .paste(message.bridge, &message.content.body, text)
                .await;
        }
        if let Some(target) = &message.reply_to
            && let Some((nick, quoted)) = self.recalled(target)
        {
            text = with_quote(&nick, &irc_to_plain(&quoted), &text);
        }
        let chat = &message.portal.chat;
        // Remembered without the relay's name, for quotes and corrections later.
        let (nick, sent) = self.deliver(chat, &message.via, message.content.kind, &text)?;
        let id = self.remember(&nick, &text);
        // Delivered once the server confirmed it (the PONG after it). Waited for as long as
        // a user's events wait for their connection, so a room is not held up for longer.
        let wait = Duration::from_secs(message.bridge.config().connection_wait);
        match tokio::time::timeout(wait, sent.confirmed()).await {
            Ok(Ok(())) => Ok(Some(id)),
            Ok(Err(reason)) => Err(BridgeError::Retriable(format!(
                "the connection to IRC is down ({reason}); it is sent when the connection is back"
            ))),
            Err(_) => Err(BridgeError::Retriable(format!(
                "IRC has not confirmed it within {} s; it is sent when the connection allows",
                wait.as_secs()
            ))),
        }
    }

    async fn edit_message(&self, edit: MatrixEdit<'_, Self>) -> NetworkResult<Option<String>> {
        let new = self.text_of(edit.bridge, &edit.content).await;
        let old = self.recalled(&edit.target).map(|(_, text)| text);
        let text = correction(old.as_deref(), &new);
        let (nick, _) = self.deliver(&edit.portal.chat, &edit.via, edit.content.kind, &text)?;
        Ok(Some(self.remember(&nick, &new)))
    }

    fn direct_chat(&self, user: &MatrixUserId, remote: &UserId) -> Option<ChatId> {
        Some(ChatId::Private {
            network: remote.network.clone(),
            nick: remote.nick.clone(),
            user: user.to_string(),
        })
    }

    async fn matrix_membership(
        &self,
        bridge: &Kit,
        change: MatrixMembership<'_, Self>,
    ) -> NetworkResult<()> {
        // Someone joined a portal: the bot makes sure it is in the channel, the user's own
        // connection joins it (made now, where the network connects users by itself), and the
        // people the bot already sees there (heard before the portal existed) get their ghosts
        // in.
        let (network, channel) = match &change.portal.chat {
            ChatId::Channel { network, channel } => (network, channel),
            // Leaving a direct chat may leave an automatic connection in no portal at all.
            ChatId::Private { network, .. } => {
                let leaving = matches!(change.membership.as_str(), "leave" | "ban");
                if leaving && change.remote.is_none() {
                    users::left_portal(bridge, network, change.user).await?;
                }
                return Ok(());
            }
        };
        if let Some(target) = &change.remote {
            // A Matrix user kicked or banned an IRC user's ghost.
            return moderation::matrix_kick(bridge, network, channel, target, &change).await;
        }
        let puppet = bridge.connection(change.user, network);
        match change.membership.as_str() {
            "join" => {
                self.bot(network)?.join(channel);
                match &puppet {
                    Some(puppet) => {
                        puppet.client.join(channel);
                        users::renamed(bridge, network, &change, puppet).await?;
                    }
                    None => users::auto_connect(bridge, network, &change).await,
                }
                for nick in self.channel_members(network, channel) {
                    if !self.is_own_nick(network, &nick) {
                        events::ghost_join(bridge, network, channel, &nick).await?;
                    }
                }
                moderation::sync_power_levels(bridge, network, channel).await?;
            }
            "leave" | "ban" => {
                if let Some(puppet) = &puppet {
                    if change.sender != change.user {
                        moderation::matrix_kick_puppet(bridge, network, channel, puppet, &change)
                            .await?;
                    } else {
                        let reason = change
                            .reason
                            .clone()
                            .unwrap_or_else(|| "left the room".into());
                        puppet.client.part(channel, &reason);
                    }
                    users::left_portal(bridge, network, change.user).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
