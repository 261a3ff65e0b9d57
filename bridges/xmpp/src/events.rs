//! XMPP into Matrix: the service that runs the component's connection and turns what the
//! server sends into the kit's remote events (room messages and occupants, direct messages),
//! and a room's subject from Matrix.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::{
    Stanza,
    jid::{BareJid, FullJid, Jid},
    parsers::{
        iq::Iq,
        message::{Message, MessageType},
        muc::user::Status,
        presence::{Presence, Type as PresenceType},
        stanza_error::{DefinedCondition, ErrorType, StanzaError},
    },
};
use trestle::{
    Appservice,
    router::RawEvent,
    ruma::{OwnedRoomId, OwnedUserId, events::room::topic::RoomTopicEventContent},
};
use trestle_bridge::{
    BridgeError, ChatInfo, NetworkResult, RemoteEdit, RemoteMembership, RemoteMessage,
    RemoteReaction, UserInfo,
};

use crate::{
    archive, avatars,
    chatstates::{self, Signals},
    files,
    hub::{self, Kit},
    ids::{self, ChatId, UserId},
    moderation, occupants, powers,
    store::XmppStore,
    users::LOGIN_ID,
    xmpp::{
        component::{self, Event},
        stanzas,
    },
};

/// What every process needs before it bridges anything, whichever role it has: the kit
/// attached, the homeserver's name, the bridge's tables. One process alone on its store (not
/// sharing it with others, docs/scaling.md) holds the component from here on.
pub async fn setup(bridge: &Kit, app: &Appservice) -> trestle::Result<()> {
    let hub = bridge.network();
    // Once: the bridge's tables are not made twice at the same time.
    hub.ready
        .get_or_try_init(|| async {
            bridge.attach(app).await?;
            hub.set_server_name(app.server_name().as_str());
            let store = XmppStore::open(app.store().clone(), app.registration().id.clone()).await?;
            hub.set_store(store);
            if !bridge.shares_store(app) {
                hub.hold(true);
            }
            Ok::<(), BridgeError>(())
        })
        .await
        .map_err(|e| trestle::Error::Other(e.to_string()))?;
    Ok(())
}

/// The plain service every process runs (where its role runs services): [`setup`], then
/// nothing until the appservice stops. The component is the kit's holder's ([`serve`]).
pub async fn run(bridge: Kit, app: Appservice) -> trestle::Result<()> {
    setup(&bridge, &app).await?;
    app.stopping().await;
    Ok(())
}

/// The component's connection, run by the kit in the one process that holds the bridge
/// (`Network::serve`): connects the component and handles what arrives, one stanza after the
/// other (so that one message's copies, and a message and its correction, are bridged in
/// order), until the kit stops it; then what is queued is sent before the stream closes, so
/// the next holder does not find it lost. Dropped (a lost lease), it lets go of the stream at
/// once. Either way the queue is left for this process's next turn, empty.
pub async fn serve(bridge: Kit, app: Appservice) -> NetworkResult<()> {
    setup(&bridge, &app)
        .await
        .map_err(|e| BridgeError::Retriable(e.to_string()))?;
    let hub = bridge.network();
    let Some(config) = hub.cfg.component.clone() else {
        bridge.serve_stopping().await;
        return Ok(());
    };
    // A run cut short (a lost lease) gives it back as soon as its task is dropped.
    let queue = tokio::time::timeout(QUEUE_WAIT, hub.take_queue())
        .await
        .map_err(|_| BridgeError::Retriable("the component's queue is still held".into()))?;
    hub.hold(true);
    let _holding = Holding(hub);
    // Sets of their own: dropped with this future, they are cut too.
    let (mut connection, mut tasks) = (tokio::task::JoinSet::new(), tokio::task::JoinSet::new());
    let (events_tx, mut received) = mpsc::unbounded_channel();
    let (stop_tx, stop) = oneshot::channel();
    let delay = Duration::from_secs(hub.cfg.settings.reconnect_delay);
    connection.spawn(async move {
        let mut queue = hub::Leftovers(queue);
        component::run(config, delay, &mut queue.0, events_tx, stop).await;
    });
    // Archives' answers, and those to the bridge's other requests, are taken off the stream at
    // once: the stanzas handled in turn below may wait for history that waits for those answers.
    let (handled_tx, mut events) = mpsc::unbounded_channel();
    tasks.spawn({
        let bridge = bridge.clone();
        async move {
            while let Some(event) = received.recv().await {
                if let Event::Stanza(stanza) = &event
                    && (archive::intercept(bridge.network(), stanza)
                        || hub::requests::intercept(bridge.network(), stanza))
                {
                    continue;
                }
                if handled_tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    // The rooms of the portals made before: the bot hears them again.
    for portal in bridge.portals().await.unwrap_or_default() {
        if let ChatId::Muc(room) = &portal.chat {
            hub.bot_join(room);
        }
    }
    let mut own = hub.take_own_messages();
    let stopping = bridge.serve_stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            Some(sent) = async { own.as_mut()?.recv().await } => {
                if let Err(error) = own_message(&bridge, sent).await {
                    tracing::warn!(%error, "a message sent from a user's own XMPP client was not bridged");
                }
            }
            event = events.recv() => match event {
                Some(Event::Online { first, resume }) => {
                    let joins = if first { Vec::new() } else { hub.rejoins() };
                    // Dropped, the connection sends its queue without waiting longer.
                    let _ = resume.send(joins);
                    if !first {
                        // The rooms said things while the stream was down: caught up before
                        // what they say next is handled.
                        let rooms = bridge.portals().await.unwrap_or_default();
                        let rooms = rooms.into_iter().map(|p| p.chat);
                        let rooms = rooms.filter(|c| matches!(c, ChatId::Muc(_))).collect();
                        if let Err(error) = bridge.catch_up(rooms, None).await {
                            tracing::warn!(%error, "the rooms could not be caught up");
                        }
                    }
                }
                Some(Event::Stanza(received)) => {
                    if let Err(error) = stanza(&bridge, *received).await {
                        tracing::warn!(%error, "an XMPP stanza was not bridged");
                    }
                }
                None => break,
            },
            () = &mut stopping => break,
        }
    }
    // What the last handled events queued goes out before the stream closes (the kit allows
    // its stop a short while, after which this is dropped).
    let _ = stop_tx.send(());
    let _ = connection.join_next().await;
    tasks.abort_all();
    Ok(())
}

/// How long a new run of the component waits for the queue a run cut short still holds.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Marks the end of this process's turn with the component, however it ends: nothing more is
/// queued here (what is left in the queue is dropped with the connection's task,
/// [`hub::Leftovers`]).
struct Holding<'a>(&'a hub::Hub);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.hold(false);
        self.0.forget_rooms();
    }
}

/// One stanza from the server.
async fn stanza(bridge: &Kit, received: Stanza) -> NetworkResult<()> {
    tracing::trace!(?received, "from XMPP");
    match received {
        Stanza::Message(message) => match message.type_ {
            MessageType::Groupchat => room_message(bridge, message).await,
            MessageType::Chat | MessageType::Normal => direct_message(bridge, message).await,
            MessageType::Error => {
                let error = message.payloads.first().map(String::from);
                tracing::info!(from = ?message.from, to = ?message.to, ?error, "XMPP refused a message");
                Ok(())
            }
            MessageType::Headline => Ok(()),
        },
        Stanza::Presence(presence) => room_presence(bridge, presence).await,
        Stanza::Iq(iq) => {
            answer_iq(bridge, iq);
            Ok(())
        }
    }
}

/// Requests to the component's JIDs: pings ([XEP-0199](https://xmpp.org/extensions/xep-0199.html),
/// the connection's own keepalive among them) are answered, vCards of Matrix users served
/// (module `avatars`); the rest (service discovery) are not served yet and refused at once,
/// so that the asker does not wait. Answers to the bridge's own requests were taken off the
/// stream before ([`hub::requests::intercept`]).
fn answer_iq(bridge: &Kit, iq: Iq) {
    if avatars::vcard_request(bridge, &iq) {
        return;
    }
    let (from, to, id, ping) = match iq {
        Iq::Get {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload.is("ping", "urn:xmpp:ping")),
        Iq::Set { from, to, id, .. } => (from, to, id, false),
        Iq::Result { .. } | Iq::Error { .. } => return,
    };
    if ping {
        bridge.network().send(Iq::Result {
            from: to,
            to: from,
            id,
            payload: None,
        });
        return;
    }
    let error = StanzaError::new(
        ErrorType::Cancel,
        DefinedCondition::ServiceUnavailable,
        "en",
        "not served by the Matrix bridge",
    );
    bridge.network().send(Iq::Error {
        from: to,
        to: from,
        id,
        error,
        payload: None,
    });
}

/// Whether a stanza was sent to the bot (a room sends every occupant its own copy: the bot's
/// is the one bridged).
fn to_bot(bridge: &Kit, to: Option<&Jid>) -> bool {
    to.is_some_and(|to| to.as_str() == bridge.network().bot_jid().as_str())
}

/// A message in a room: a subject, an occupant's message, or a correction of one.
async fn room_message(bridge: &Kit, message: Message) -> NetworkResult<()> {
    let hub = bridge.network();
    if !to_bot(bridge, message.to.as_ref()) {
        return Ok(());
    }
    let Some(from) = message.from.clone() else {
        return Ok(());
    };
    let room = from.to_bare();
    let chat = ChatId::Muc(room.clone());
    let body = stanzas::body(&message);
    // The room itself sends the subject (from its bare JID) at the end of a join.
    if body.is_none()
        && let Some(subject) = stanzas::subject_of(&message)
    {
        // The subject that ends the bot's join is the one the portal was made with.
        if hub.set_subject(&room, &subject) {
            let mut info = ChatInfo::default();
            info.topic = Some(subject);
            bridge.remote_chat_info(&chat, &info).await?;
        }
        return Ok(());
    }
    // From the room itself (not an occupant), only a moderator's taking a message back
    // (XEP-0425) is bridged.
    let Ok(occupant) = from.try_into_full() else {
        if let Some(moderated) = moderation::moderated(&message) {
            return moderation::room_moderated(bridge, &room, moderated).await;
        }
        return Ok(());
    };
    let nick = occupant.resource().to_string();
    // The room's id of our own messages too: Matrix redactions and replies name them.
    if let (Some(origin), Some(id)) = (
        stanzas::message_id(&message),
        stanzas::room_stanza_id(&message, &room),
    ) {
        hub.keep_stanza_id(&room, &origin, &id).await?;
    }
    // Our own messages coming back, and history replayed by the room, are not bridged.
    if hub.is_ours(&room, &nick) || stanzas::is_delayed(&message) {
        return Ok(());
    }
    let sender = ids::occupant_user(hub.real_jid(&room, &nick), occupant);
    chatstates::incoming(bridge, &chat, &sender, Signals::of(&message)).await?;
    if let Some((target, emojis)) = stanzas::reactions_of(&message) {
        let target = hub.mapped_id(&room, &target).await?;
        return reactions(bridge, &chat, &sender, target, emojis).await;
    }
    let Some(body) = body else { return Ok(()) };
    bridge
        .remote_profile(&sender, &UserInfo::named(nick))
        .await?;
    incoming(bridge, chat, sender, &message, body).await
}

/// A message or a correction, for the kit.
async fn incoming(
    bridge: &Kit,
    chat: ChatId,
    sender: UserId,
    message: &Message,
    body: String,
) -> NetworkResult<()> {
    let hub = bridge.network();
    let origin = stanzas::message_id(message);
    // In a room, messages are named by the room's id (what its archive calls them too).
    let id = match &chat {
        ChatId::Muc(room) => {
            let id = stanzas::room_stanza_id(message, room);
            if let (Some(origin), Some(id)) = (&origin, &id) {
                hub.remember_stanza_id(room, origin, id);
            }
            id.or(origin)
        }
        ChatId::Direct { .. } => origin,
    };
    // A correction or retraction in a room that names the sender's id is taken to the room's.
    let target_id = |target: String| match &chat {
        ChatId::Muc(room) => hub.stanza_id_of(room, &target),
        ChatId::Direct { .. } => target,
    };
    if let Some(target) = stanzas::retracts(message) {
        bridge
            .remote_redaction(&chat, &sender, &target_id(target))
            .await?;
        return Ok(());
    }
    let id = id.unwrap_or_else(stanzas::fresh_id);
    if let Some(target) = stanzas::replaces(message).map(target_id) {
        let mut edit = RemoteEdit::new(chat, sender, target, ids::content(body));
        edit.id = Some(id);
        bridge.remote_edit(edit).await?;
        return Ok(());
    }
    let content = files::content(bridge, &sender, message, body).await;
    let mut remote = RemoteMessage::new(chat.clone(), sender, id, content);
    remote.reply_to = match (stanzas::replies_to(message), &chat) {
        (Some(target), ChatId::Muc(room)) => Some(hub.mapped_id(room, &target).await?),
        (target, _) => target,
    };
    bridge.remote_message(remote).await?;
    Ok(())
}

/// A message to a Matrix user's JID: their direct chat with the sender, made on the first.
async fn direct_message(bridge: &Kit, message: Message) -> NetworkResult<()> {
    let hub = bridge.network();
    let (Some(from), Some(to)) = (message.from.clone(), message.to.clone()) else {
        return Ok(());
    };
    let body = stanzas::body(&message);
    let reacted = stanzas::reactions_of(&message);
    let signals = Signals::of(&message);
    if body.is_none() && reacted.is_none() && !signals.any() {
        return Ok(());
    }
    // Private messages through a room (to a Matrix user's occupant) are not bridged yet.
    if stanzas::through_room(&message) || from.node().is_none() {
        return Ok(());
    }
    let to = to.to_bare();
    if to.domain().as_str() != hub.domain() {
        return Ok(());
    }
    let user =
        ids::matrix_user(&to, hub.server_name()?).and_then(|user| OwnedUserId::try_from(user).ok());
    let Some(user) = user.filter(|user| bridge.app().is_ok_and(|app| app.bot().user_id() != user))
    else {
        return Ok(());
    };
    let remote = from.to_bare();
    let sender = UserId::Jid(remote.clone());
    let chat = ChatId::Direct {
        user: user.to_string(),
        remote: remote.clone(),
    };
    chatstates::incoming(bridge, &chat, &sender, signals).await?;
    direct_incoming(bridge, chat, sender, &user, &message, body, reacted).await
}

/// What crosses into a direct chat: a sender's set of reactions (where the chat has a portal:
/// reactions to what was never bridged have nothing to go to, so no chat is made for them), or
/// a message, in the chat made by the XMPP side's ghost on the first.
async fn direct_incoming(
    bridge: &Kit,
    chat: ChatId,
    sender: UserId,
    user: &OwnedUserId,
    message: &Message,
    body: Option<String>,
    reacted: Option<(String, std::collections::BTreeSet<String>)>,
) -> NetworkResult<()> {
    if let Some((target, emojis)) = reacted {
        if bridge.portal(&chat).await?.is_none() {
            return Ok(());
        }
        return reactions(bridge, &chat, &sender, target, emojis).await;
    }
    let (Some(body), ChatId::Direct { remote, .. }) = (body, &chat) else {
        return Ok(());
    };
    let partner = UserId::Jid(remote.clone());
    bridge
        .remote_profile(&partner, &UserInfo::named(remote.to_string()))
        .await?;
    bridge.ensure_direct_portal(&chat, &partner, user).await?;
    incoming(bridge, chat, sender, message, body).await
}

/// A message a Matrix user sent from their own XMPP client to someone (a sent carbon of their
/// account's, XEP-0280): in their direct chat with its recipient, as their own Matrix account.
/// Only with double puppeting on: their account's ghost would be a stranger in that chat.
/// Messages in rooms are not carbon-copied; the bot hears them like anyone's.
async fn own_message(bridge: &Kit, sent: hub::OwnMessage) -> NetworkResult<()> {
    let hub::OwnMessage {
        user,
        account,
        message,
    } = sent;
    let hub = bridge.network();
    let Some(to) = message.to.clone() else {
        return Ok(());
    };
    let remote = to.to_bare();
    // Private messages through a room, notes to themselves, and messages to a Matrix user's
    // JID (which the bridge hears itself) are not someone's direct chat here.
    if message.type_ == MessageType::Groupchat
        || stanzas::through_room(&message)
        || remote.node().is_none()
        || remote == account
        || remote.domain().as_str() == hub.domain()
    {
        return Ok(());
    }
    let body = stanzas::body(&message);
    let reacted = stanzas::reactions_of(&message);
    if (body.is_none() && reacted.is_none()) || !bridge.double_puppeting(&user).await? {
        return Ok(());
    }
    let chat = ChatId::Direct {
        user: user.to_string(),
        remote,
    };
    // A chat they start from XMPP is made by their partner's ghost, as one the partner starts.
    let sender = UserId::Jid(account);
    direct_incoming(bridge, chat, sender, &user, &message, body, reacted).await
}

/// A sender's reactions to a message (XEP-0444), the whole set: those new are reactions, those
/// gone are redacted.
async fn reactions(
    bridge: &Kit,
    chat: &ChatId,
    sender: &UserId,
    target: String,
    emojis: std::collections::BTreeSet<String>,
) -> NetworkResult<()> {
    let key = (chat.to_string(), sender.to_string(), target.clone());
    let (added, removed) = bridge.network().replace_reactions(key, emojis).await?;
    // Each reaction's id names who reacted with what to which message: unique in the chat.
    let id = |emoji: &str| format!("reacted {sender} {target} {emoji}");
    for emoji in removed {
        bridge.remote_redaction(chat, sender, &id(&emoji)).await?;
    }
    for emoji in added {
        let mut reaction =
            RemoteReaction::new(chat.clone(), sender.clone(), target.clone(), &emoji);
        reaction.id = Some(id(&emoji));
        bridge.remote_reaction(reaction).await?;
    }
    Ok(())
}

/// An occupant's presence in a room, as the bot sees it: their ghost joins or leaves the
/// portal. The bot's own presence in a room it created makes the room usable.
async fn room_presence(bridge: &Kit, presence: Presence) -> NetworkResult<()> {
    let hub = bridge.network();
    if presence.type_ == PresenceType::Error {
        tracing::info!(from = ?presence.from, to = ?presence.to, "a room refused a presence");
        return Ok(());
    }
    if !to_bot(bridge, presence.to.as_ref()) {
        return Ok(());
    }
    let Some(occupant) = presence.from.clone().and_then(|f| f.try_into_full().ok()) else {
        return Ok(());
    };
    let room = occupant.to_bare();
    let nick = occupant.resource().to_string();
    let (jid, statuses) = stanzas::occupant(&presence);
    if statuses.contains(&Status::SelfPresence) {
        hub.set_bot_owns(&room, powers::owns(&presence));
        if statuses.contains(&Status::RoomHasBeenCreated) {
            hub.send(stanzas::instant_room(
                hub.bot_jid(),
                &room,
                &stanzas::fresh_id(),
            ));
        }
        return Ok(());
    }
    if presence.type_ == PresenceType::Unavailable {
        return occupants::left(bridge, occupant, jid, &presence).await;
    }
    if hub.is_ours(&room, &nick) {
        return Ok(());
    }
    let chat = ChatId::Muc(room.clone());
    if presence.type_ == PresenceType::None {
        // Recorded with or without a portal: one being made gets them when its first Matrix
        // user joins.
        let new = hub.occupant_joined(&room, &nick, jid.clone());
        let user = ids::occupant_user(jid.clone(), occupant.clone());
        if new && bridge.portal(&chat).await?.is_some() {
            ghost_joins(bridge, &chat, &occupant, jid).await?;
        }
        powers::occupant(bridge, &room, &user, &presence).await?;
        avatars::occupant(bridge, &user, &presence);
        crate::presence::occupant(bridge, &chat, &user, &presence).await?;
    }
    Ok(())
}

/// An occupant's ghost joins the room's portal, named after their nick.
pub async fn ghost_joins(
    bridge: &Kit,
    chat: &ChatId,
    occupant: &FullJid,
    jid: Option<BareJid>,
) -> NetworkResult<()> {
    let nick = occupant.resource().to_string();
    let user = ids::occupant_user(jid, occupant.clone());
    bridge.remote_profile(&user, &UserInfo::named(nick)).await?;
    bridge
        .remote_membership(chat, &user, RemoteMembership::Join)
        .await
}

/// A Matrix user set a portal's topic: the room's subject, set as them (the room decides
/// whether they may).
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#mroomtopic>
pub async fn matrix_topic(bridge: &Kit, event: RawEvent) -> NetworkResult<()> {
    #[derive(serde::Deserialize)]
    struct Topic {
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        content: RoomTopicEventContent,
    }
    let topic: Topic = event.deserialize()?;
    let Some(portal) = bridge.portal_for_room(&topic.room_id).await? else {
        return Ok(());
    };
    let ChatId::Muc(room) = &portal.chat else {
        return Ok(());
    };
    let hub = bridge.network();
    let from = match bridge.connection(&topic.sender, LOGIN_ID) {
        Some(puppet) => puppet.full.clone(),
        None => hub.bot_jid().clone(),
    };
    hub.send(stanzas::subject(&from, room, &topic.content.topic));
    Ok(())
}
