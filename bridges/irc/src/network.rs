//! The IRC side of the bridge kit: `trestle::bridge::Network` for IRC.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use trestle::{
    bridge::{
        BridgeError, BridgeHandle, ChatInfo, InfoSection, Login, LoginHandle, LoginRequest,
        MatrixEdit, MatrixMembership, MatrixMessage, Network, NetworkResult, NewLogin, Protocol,
        Via,
    },
    ruma::UserId as MatrixUserId,
};

use crate::{
    ids::{ChatId, UserId},
    irc::{
        connection::{Client, Config},
        naming::{irc_lowercase, sanitize_nick},
    },
    settings::{Checked, NetworkSettings},
    text::{correction, irc_kind, irc_text, relayed, with_quote},
};

/// How many sent or received messages are remembered for reply quotes and edit corrections.
const REMEMBERED: usize = 2000;

/// IRC, for the bridge kit.
pub struct Irc {
    pub(crate) cfg: Checked,
    bots: Mutex<HashMap<String, Client>>,
    /// Nicks of our own connections (the bot and puppets) per network, whose lines are echoes.
    own_nicks: Mutex<HashMap<String, HashSet<String>>>,
    /// Who is in which channel, as the bot sees it: `(network, channel)` → lower-cased nick →
    /// nick as written.
    pub(crate) members: Mutex<HashMap<(String, String), HashMap<String, String>>>,
    recent: Mutex<Recent>,
    seq: AtomicU64,
}

#[derive(Default)]
struct Recent {
    order: VecDeque<String>,
    texts: HashMap<String, (String, String)>,
}

/// What a Matrix user's IRC login keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginData {
    pub network: String,
    pub nick: String,
}

/// A Matrix user's own IRC connection.
pub struct Puppet {
    pub client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Puppet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Irc {
    pub(crate) fn new(cfg: Checked) -> Self {
        Irc {
            cfg,
            bots: Mutex::default(),
            own_nicks: Mutex::default(),
            members: Mutex::default(),
            recent: Mutex::default(),
            seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn network_settings(&self, name: &str) -> Option<&NetworkSettings> {
        self.cfg.settings.networks.iter().find(|n| n.name == name)
    }

    pub(crate) fn set_bot(&self, network: &str, client: Client) {
        lock(&self.bots).insert(network.to_owned(), client);
    }

    pub(crate) fn bot(&self, network: &str) -> NetworkResult<Client> {
        lock(&self.bots)
            .get(network)
            .cloned()
            .ok_or_else(|| BridgeError::NoPortal(format!("no IRC network {network:?}")))
    }

    /// Notes a nick as one of ours (or forgets the old one after a change).
    pub(crate) fn set_own_nick(&self, network: &str, old: Option<&str>, new: &str) {
        let mut own = lock(&self.own_nicks);
        let nicks = own.entry(network.to_owned()).or_default();
        if let Some(old) = old {
            nicks.remove(&irc_lowercase(old));
        }
        nicks.insert(irc_lowercase(new));
    }

    pub(crate) fn is_own_nick(&self, network: &str, nick: &str) -> bool {
        lock(&self.own_nicks)
            .get(network)
            .is_some_and(|n| n.contains(&irc_lowercase(nick)))
    }

    /// A new message id, and remembers who said what for later quotes and corrections.
    pub(crate) fn remember(&self, nick: &str, text: &str) -> String {
        let id = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut recent = lock(&self.recent);
        recent
            .texts
            .insert(id.clone(), (nick.to_owned(), text.to_owned()));
        recent.order.push_back(id.clone());
        if recent.order.len() > REMEMBERED
            && let Some(old) = recent.order.pop_front()
        {
            recent.texts.remove(&old);
        }
        id
    }

    fn recalled(&self, id: &str) -> Option<(String, String)> {
        lock(&self.recent).texts.get(id).cloned()
    }

    /// Sends text to a chat as the sender's puppet or relayed by the bot; returns the nick it
    /// went out as and the text as sent.
    fn deliver(
        &self,
        chat: &ChatId,
        via: &Via<'_, Self>,
        kind: trestle::bridge::MessageKind,
        text: &str,
    ) -> NetworkResult<(String, String)> {
        let kind = irc_kind(kind);
        match via {
            Via::Puppet { connection, .. } => {
                connection.client.send(chat.target(), kind, text);
                Ok((connection.client.state().nick, text.to_owned()))
            }
            Via::Relay { name } => {
                let bot = self.bot(chat.network())?;
                let (kind, text) = relayed(name, kind, text);
                bot.send(chat.target(), kind, &text);
                Ok((bot.state().nick, text))
            }
            _ => Err(BridgeError::Unsupported("this way of sending")),
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection's configuration from a network's settings.
pub(crate) fn client_config(network: &NetworkSettings, nick: &str) -> Config {
    let mut config = Config::new(&network.host, network.port, nick);
    config.tls = network.tls;
    config.password = network.password.clone();
    config.flood_burst = network.flood_burst;
    config.flood_rate = network.flood_rate;
    config.reconnect_max = Duration::from_secs(120);
    config
}

impl Network for Irc {
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
        // A portal is being made: the bot joins the channel so that it hears it.
        if let ChatId::Channel { channel, network } = chat {
            self.bot(network)?.join(channel);
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
        let nick = sanitize_nick(&name, request.user.localpart(), 30);
        Ok(NewLogin::new(
            network.clone(),
            UserId::new(&network, &nick),
            nick.clone(),
            LoginData { network, nick },
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
        // Known as ours before the bot can hear it join, so it never gets a ghost.
        self.set_own_nick(&login.data.network, None, &login.data.nick);
        let (client, events) = Client::spawn(client_config(settings, &login.data.nick));
        for portal in handle.portals().await? {
            if let ChatId::Channel { network, channel } = &portal.chat
                && *network == login.data.network
            {
                client.join(channel);
            }
        }
        let task = tokio::spawn(crate::events::run_puppet(handle, client.clone(), events));
        Ok(Puppet { client, task })
    }

    async fn disconnect(&self, connection: &Puppet) -> NetworkResult<()> {
        connection.client.quit("logged out");
        Ok(())
    }

    fn login_covers(&self, login: &Login<Self>, chat: &ChatId) -> bool {
        login.data.network == chat.network()
    }

    async fn send_message(
        &self,
        message: MatrixMessage<'_, Self>,
    ) -> NetworkResult<Option<String>> {
        let media = self.cfg.settings.media_url.as_deref();
        let mut text = irc_text(&message.content, media);
        if let Some(target) = &message.reply_to
            && let Some((nick, quoted)) = self.recalled(target)
        {
            text = with_quote(&nick, &crate::irc::format::irc_to_plain(&quoted), &text);
        }
        let chat = &message.portal.chat;
        // Remembered without the relay's name, for quotes and corrections later.
        let (nick, _) = self.deliver(chat, &message.via, message.content.kind, &text)?;
        Ok(Some(self.remember(&nick, &text)))
    }

    async fn edit_message(&self, edit: MatrixEdit<'_, Self>) -> NetworkResult<Option<String>> {
        let media = self.cfg.settings.media_url.as_deref();
        let new = irc_text(&edit.content, media);
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
        bridge: &BridgeHandle<Self>,
        change: MatrixMembership<'_, Self>,
    ) -> NetworkResult<()> {
        // Someone joined a portal: the bot makes sure it is in the channel, and the people the
        // bot already sees there (heard before the portal existed) get their ghosts in. A user
        // with their own connection joins or leaves the channel with it.
        let ChatId::Channel { network, channel } = &change.portal.chat else {
            return Ok(());
        };
        let puppet = bridge.connection(change.user, network);
        match change.membership.as_str() {
            "join" => {
                self.bot(network)?.join(channel);
                if let Some(puppet) = &puppet {
                    puppet.client.join(channel);
                }
                for nick in crate::events::channel_members(self, network, channel) {
                    if !self.is_own_nick(network, &nick) {
                        crate::events::ghost_join(bridge, network, channel, &nick).await?;
                    }
                }
            }
            "leave" | "ban" => {
                if let Some(puppet) = &puppet {
                    let reason = change
                        .reason
                        .clone()
                        .unwrap_or_else(|| "left the room".into());
                    puppet.client.part(channel, &reason);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
