//! The IRC side of the bridge kit: `trestle_bridge::Network` for IRC.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use trestle::ruma::UserId as MatrixUserId;
use trestle_bridge::{
    BridgeError, BridgeHandle, ChatInfo, InfoSection, Login, LoginHandle, LoginRequest, MatrixEdit,
    MatrixMembership, MatrixMessage, Network, NetworkResult, NewLogin, Protocol, Via,
};

use crate::{
    ids::{ChatId, UserId},
    irc::{
        connection::{Client, Config},
        naming::{irc_lowercase, nick_candidates, sanitize_nick},
    },
    settings::{Checked, NetworkSettings},
    text::{
        correction, irc_kind, irc_text, line_count, media_link, paste_line, relayed, with_quote,
    },
    users::is_member,
};

/// How many sent or received messages are remembered for reply quotes and edit corrections.
const REMEMBERED: usize = 2000;

/// IRC, for the bridge kit.
pub struct Irc {
    pub(crate) cfg: Checked,
    bots: Mutex<HashMap<String, Client>>,
    /// The live puppet connections, whose lines the bots hear as echoes.
    puppets: Registry,
    /// Whether each network's bot is connected, as reported in its portals.
    pub(crate) bot_states: Mutex<crate::status::BotStates>,
    /// Nicks asked for by puppets and not confirmed yet: `(network, nick)` → Matrix user.
    pending: Mutex<HashMap<(String, String), String>>,
    /// Channel modes and hosts, as the bot sees them.
    pub(crate) ranks: Mutex<crate::moderation::Ranks>,
    /// Per network and Matrix user, how many times they left a portal: an idle timer acts only
    /// if no leave came after the one that started it.
    leaves: Mutex<HashMap<(String, String), u64>>,
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
    /// Made by the bridge when the user joined a portal (not by `login`): closed when they
    /// have been in no portal of the network for `idle_timeout`.
    #[serde(default)]
    pub auto: bool,
    /// For an automatic connection, the display name its nick was made from: a new one
    /// changes the nick.
    #[serde(default)]
    pub name: Option<String>,
}

/// The live puppet connections by a number of their own: network, Matrix user, client.
type Registry = Arc<Mutex<HashMap<u64, (String, String, Client)>>>;

/// A Matrix user's own IRC connection.
pub struct Puppet {
    pub client: Client,
    task: tokio::task::JoinHandle<()>,
    registry: Registry,
    id: u64,
}

impl Drop for Puppet {
    fn drop(&mut self) {
        self.task.abort();
        lock(&self.registry).remove(&self.id);
    }
}

impl Irc {
    pub(crate) fn new(cfg: Checked) -> Self {
        Irc {
            cfg,
            bots: Mutex::default(),
            puppets: Registry::default(),
            leaves: Mutex::default(),
            ranks: Mutex::default(),
            bot_states: Mutex::default(),
            pending: Mutex::default(),
            members: Mutex::default(),
            recent: Mutex::default(),
            seq: AtomicU64::new(0),
        }
    }

    /// Counts a leave of a portal by a Matrix user on a network; returns the count.
    pub(crate) fn count_leave(&self, network: &str, user: &str) -> u64 {
        let mut leaves = lock(&self.leaves);
        let count = leaves
            .entry((network.to_owned(), user.to_owned()))
            .or_default();
        *count += 1;
        *count
    }

    /// Whether no leave was counted since `count`.
    pub(crate) fn last_leave(&self, network: &str, user: &str, count: u64) -> bool {
        lock(&self.leaves).get(&(network.to_owned(), user.to_owned())) == Some(&count)
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

    /// Whether a nick is one of our connections' (the bot's, a puppet's) on a network: their
    /// lines are echoes, and they get no ghosts. Read from the connections themselves, so a
    /// nick that changed (taken at registration, changed later) is always the current one.
    pub(crate) fn is_own_nick(&self, network: &str, nick: &str) -> bool {
        self.nick_owner(network, nick).is_some()
    }

    /// The nicks of our connections on a network: the bot's and the puppets'.
    pub(crate) fn own_nicks(&self, network: &str) -> Vec<String> {
        let mut nicks: Vec<String> = lock(&self.bots)
            .get(network)
            .map(|bot| bot.state().nick)
            .into_iter()
            .collect();
        nicks.extend(
            self.puppets_on(network)
                .into_iter()
                .map(|(_, c)| c.state().nick),
        );
        nicks
    }

    /// The puppet connections on a network, with their Matrix users.
    pub(crate) fn puppets_on(&self, network: &str) -> Vec<(String, Client)> {
        lock(&self.puppets)
            .values()
            .filter(|(n, _, _)| n == network)
            .map(|(_, user, client)| (user.clone(), client.clone()))
            .collect()
    }

    /// Who holds a nick among our connections: `Some("")` for the bot, a Matrix user id for
    /// a puppet.
    pub(crate) fn nick_owner(&self, network: &str, nick: &str) -> Option<String> {
        let nick = irc_lowercase(nick);
        let holds = |client: &Client| irc_lowercase(&client.state().nick) == nick;
        if lock(&self.bots).get(network).is_some_and(holds) {
            return Some(String::new());
        }
        let puppet = lock(&self.puppets)
            .values()
            .find(|(n, _, client)| n == network && holds(client))
            .map(|(_, user, _)| user.clone());
        puppet.or_else(|| {
            lock(&self.pending)
                .get(&(network.to_owned(), nick))
                .cloned()
        })
    }

    /// A nick one of our connections asked for and the server has not confirmed yet: ours
    /// already, so that the bot, hearing the change first, makes no ghost for it.
    pub(crate) fn expect_nick(&self, network: &str, nick: &str, user: &str) {
        lock(&self.pending).insert((network.to_owned(), irc_lowercase(nick)), user.to_owned());
    }

    /// The server answered a user's nick change (took it, or refused it).
    pub(crate) fn settle_nick(&self, network: &str, user: &str) {
        lock(&self.pending).retain(|(n, _), u| !(n == network && u == user));
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
        kind: trestle_bridge::MessageKind,
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

impl Irc {
    /// A long message as its first line and a link to the whole text (`body`, uploaded as a
    /// text file by the bot). If the upload fails, the message is sent whole: long, not lost.
    async fn paste(&self, bridge: &BridgeHandle<Self>, body: &str, text: String) -> String {
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
                let link = media_link(&mxc, self.cfg.settings.media_url.as_deref());
                paste_line(&text, line_count(&text), &link)
            }
            Err(error) => {
                tracing::warn!(%error, "could not upload a long message; sent whole");
                text
            }
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
    config.tls_ca_file = network.tls_ca_file.as_ref().map(Into::into);
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
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.puppets).insert(
            id,
            (
                login.data.network.clone(),
                login.user.to_string(),
                client.clone(),
            ),
        );
        let task = tokio::spawn(crate::events::run_puppet(handle.clone(), events));
        // Built first, so that an error below drops it and its registration.
        let puppet = Puppet {
            client,
            task,
            registry: self.puppets.clone(),
            id,
        };
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
            crate::users::left_portal(self, &handle, &login.data.network, &login.user).await?;
        }
        Ok(puppet)
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
                    crate::users::left_portal(self, bridge, network, change.user).await?;
                }
                return Ok(());
            }
        };
        if let Some(target) = &change.remote {
            // A Matrix user kicked or banned an IRC user's ghost.
            return crate::moderation::matrix_kick(bridge, network, channel, target, &change).await;
        }
        let puppet = bridge.connection(change.user, network);
        match change.membership.as_str() {
            "join" => {
                self.bot(network)?.join(channel);
                match &puppet {
                    Some(puppet) => {
                        puppet.client.join(channel);
                        crate::users::renamed(self, bridge, network, &change, puppet).await?;
                    }
                    None => crate::users::auto_connect(self, bridge, network, &change).await,
                }
                for nick in crate::events::channel_members(self, network, channel) {
                    if !self.is_own_nick(network, &nick) {
                        crate::events::ghost_join(bridge, network, channel, &nick).await?;
                    }
                }
                crate::moderation::sync_power_levels(bridge, network, channel).await?;
            }
            "leave" | "ban" => {
                if let Some(puppet) = &puppet {
                    if change.sender != change.user {
                        crate::moderation::matrix_kick_puppet(
                            bridge, network, channel, puppet, &change,
                        )
                        .await?;
                    } else {
                        let reason = change
                            .reason
                            .clone()
                            .unwrap_or_else(|| "left the room".into());
                        puppet.client.part(channel, &reason);
                    }
                    crate::users::left_portal(self, bridge, network, change.user).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
