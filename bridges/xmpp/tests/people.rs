//! People in the XMPP bridge, end to end (a real Synapse, a real Prosody and the tests' own
//! XMPP client): typing and reading (chat states and chat markers), and who is in a room and
//! with what standing. Finding people and their avatars: `profiles.rs`.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::{str::FromStr, time::Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    client::{XmppClient, body, stanza_id, statuses},
    prosody::{COMPONENT, MUC, Prosody},
    room::{self, message_from},
};
use tokio_xmpp::{
    jid::Jid,
    minidom::Element,
    parsers::{
        message::{Id, Message, MessageType},
        muc::user::Status,
        presence::{Presence, Type as PresenceType},
    },
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    bridge_checks::{set_power_level, wait_after, wait_for_invite, wait_member},
    synapse::{UserClient, encode},
};

const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
const MARKERS: &str = "urn:xmpp:chat-markers:0";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// The bridge's bot, which carries out what XMPP's moderators do.
const BOT: &str = "@xmpp:localhost";

/// A message of `kind` to `to` carrying only the payload `xml`.
fn bare(kind: MessageType, to: &str, id: &str, xml: &str) -> Message {
    let mut message = Message::new_with_type(kind, Jid::from_str(to).unwrap());
    message.payloads.push(xml.parse::<Element>().unwrap());
    message.id = Some(Id(id.to_owned()));
    message
}

/// The chat state a message carries, if any (read as XML).
fn chat_state(message: &Message) -> Option<String> {
    let state = message.payloads.iter().find(|p| p.ns() == CHATSTATES)?;
    Some(state.name().to_owned())
}

/// The message a `displayed` marker names, if the message is one (read as XML).
fn displayed(message: &Message) -> Option<String> {
    let marker = message
        .payloads
        .iter()
        .find(|p| p.is("displayed", MARKERS))?;
    marker.attr("id").map(str::to_owned)
}

/// Whether a message came from `from` (a full JID).
fn from(message: &Message, from: &str) -> bool {
    message.from.as_ref().is_some_and(|f| f.as_str() == from)
}

/// Syncs as `user` (incrementally: an initial sync may be answered from Synapse's cache) until
/// an ephemeral event of the room matches `wanted`.
async fn wait_ephemeral(
    user: &UserClient,
    room: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) {
    let started = Instant::now();
    let mut since: Option<String> = None;
    let mut seen = Vec::new();
    while started.elapsed() < WAIT {
        let mut path = "/_matrix/client/v3/sync?timeout=1000".to_owned();
        if let Some(since) = &since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        let sync = user.call_ok(Method::GET, &path, None).await;
        since = sync["next_batch"].as_str().map(str::to_owned);
        let events = sync["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for event in events {
            if wanted(&event) {
                return;
            }
            seen.push(event);
        }
    }
    panic!("{room} never showed {what}; seen: {seen:#?}");
}

/// Waits until the room's `m.typing` lists exactly `typers`.
async fn wait_typing(user: &UserClient, room: &str, typers: &[&str]) {
    wait_ephemeral(user, room, &format!("{typers:?} typing"), |e| {
        e["type"] == "m.typing" && e["content"]["user_ids"] == json!(typers)
    })
    .await;
}

/// Waits until `reader`'s `m.read` receipt is on `event`.
async fn wait_read(user: &UserClient, room: &str, reader: &str, event: &str) {
    wait_ephemeral(user, room, &format!("{reader} reading {event}"), |e| {
        e["type"] == "m.receipt" && e["content"][event]["m.read"][reader].is_object()
    })
    .await;
}

/// `user` types in the room (`on`) or stops.
async fn matrix_typing(user: &UserClient, room: &str, on: bool) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        encode(room),
        encode(user.user_id.as_str())
    );
    let body = json!({"typing": on, "timeout": 30000});
    user.call_ok(Method::PUT, &path, Some(&body)).await;
}

/// `user` reads the room up to `event` (a public `m.read` receipt).
async fn matrix_read(user: &UserClient, room: &str, event: &str) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        encode(room),
        encode(event)
    );
    user.call_ok(Method::POST, &path, Some(&json!({}))).await;
}

/// A room (`chat@…`) with XMPP users in it (the first made it, so owns it), the bridge, and
/// bob, a Matrix user, in its portal.
struct Gathering {
    _server: Prosody,
    room: String,
    /// The XMPP users, in the order given, each in the room under their own name.
    xmpp: Vec<XmppClient>,
    setup: Harness,
    bob: UserClient,
    portal: String,
}

async fn gather(users: &[&str]) -> Gathering {
    let server = Prosody::start(users).await;
    let room = format!("chat@{MUC}");
    let mut xmpp = Vec::new();
    for user in users {
        let mut client = XmppClient::connect(&server, user).await;
        client.join(&room, user).await;
        xmpp.push(client);
    }
    let setup = room::start(&server).await;
    let bob = setup.synapse.register_user("bob", "password-1234").await;
    let portal = bob.join(&format!("#xmpp_chat_{MUC}:localhost")).await;
    Gathering {
        _server: server,
        room,
        xmpp,
        setup,
        bob,
        portal,
    }
}

#[tokio::test]
async fn typing_and_read_markers_cross_in_rooms_and_direct_chats() {
    let Gathering {
        _server,
        room,
        mut xmpp,
        setup: _setup,
        bob,
        portal,
    } = gather(&["alice"]).await;
    let mut alice = xmpp.remove(0);
    let bob_occupant = format!("{room}/bob");
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    alice
        .expect_presence("bob in the room", |p| {
            p.from.as_ref().is_some_and(|f| f.as_str() == bob_occupant)
        })
        .await;

    // In the room: alice's chat states are her ghost's typing.
    let composing = format!("<composing xmlns='{CHATSTATES}'/>");
    let active = format!("<active xmlns='{CHATSTATES}'/>");
    alice
        .send(bare(MessageType::Groupchat, &room, "t1", &composing))
        .await;
    wait_typing(&bob, &portal, &[alice_ghost]).await;
    alice
        .send(bare(MessageType::Groupchat, &room, "t2", &active))
        .await;
    wait_typing(&bob, &portal, &[]).await;

    // bob's typing is his occupant's chat states.
    matrix_typing(&bob, &portal, true).await;
    alice
        .expect_message("bob composing", |m| {
            from(m, &bob_occupant) && chat_state(m).as_deref() == Some("composing")
        })
        .await;
    matrix_typing(&bob, &portal, false).await;
    alice
        .expect_message("bob no longer composing", |m| {
            from(m, &bob_occupant) && chat_state(m).as_deref() == Some("active")
        })
        .await;

    // alice marks bob's message displayed by the room's id of it: her ghost read it.
    let read_me = bob.send_text(&portal, "read me").await;
    let heard = alice
        .expect_message("bob's message", |m| body(m) == Some("read me"))
        .await;
    assert!(
        heard.payloads.iter().any(|p| p.is("markable", MARKERS)),
        "{heard:?}"
    );
    let read_me_id = stanza_id(&heard).expect("the room's id");
    let marker = format!("<displayed xmlns='{MARKERS}' id='{read_me_id}'/>");
    alice
        .send(bare(MessageType::Groupchat, &room, "k1", &marker))
        .await;
    wait_read(&bob, &portal, alice_ghost, &read_me).await;

    // bob reads alice's message: a marker from his occupant naming the room's id of it.
    alice
        .say(MessageType::Groupchat, &room, "m1", "did you read?")
        .await;
    let asked = alice
        .expect_message("alice's message in the room", |m| {
            body(m) == Some("did you read?")
        })
        .await;
    let asked_id = stanza_id(&asked).expect("the room's id");
    let asked_event = bob
        .wait_for_event(&portal, WAIT, message_from(alice_ghost, "did you read?"))
        .await;
    matrix_read(&bob, &portal, asked_event["event_id"].as_str().unwrap()).await;
    let marker = alice
        .expect_message("bob's marker", |m| {
            from(m, &bob_occupant) && displayed(m).is_some()
        })
        .await;
    assert_eq!(displayed(&marker), Some(asked_id));

    // In a direct chat: the same, by the sender's ids.
    let bob_jid = format!("bob@{COMPONENT}");
    alice.say(MessageType::Chat, &bob_jid, "d1", "psst").await;
    let direct = wait_for_invite(&bob, Some(&portal)).await;
    bob.join(&direct).await;
    let alice_dm_ghost = "@xmpp_alice=40localhost:localhost";
    let psst = bob
        .wait_for_event(&direct, WAIT, message_from(alice_dm_ghost, "psst"))
        .await;
    alice
        .send(bare(MessageType::Chat, &bob_jid, "d2", &composing))
        .await;
    wait_typing(&bob, &direct, &[alice_dm_ghost]).await;
    let hello = bob.send_text(&direct, "hello").await;
    let heard = alice
        .expect_message("bob's direct message", |m| body(m) == Some("hello"))
        .await;
    assert_eq!(
        heard.id.as_ref().map(|id| id.0.as_str()),
        Some(hello.as_str())
    );
    let marker = format!("<displayed xmlns='{MARKERS}' id='{hello}'/>");
    alice
        .send(bare(MessageType::Chat, &bob_jid, "d3", &marker))
        .await;
    wait_read(&bob, &direct, alice_dm_ghost, &hello).await;
    matrix_read(&bob, &direct, psst["event_id"].as_str().unwrap()).await;
    let marker = alice
        .expect_message("bob's direct marker", |m| displayed(m).is_some())
        .await;
    assert_eq!(displayed(&marker).as_deref(), Some("d1"));
    assert_eq!(
        marker.from.unwrap().to_bare().to_string(),
        bob_jid,
        "the marker comes from bob's JID"
    );
}

/// `client` asks the room to change the occupant or user named in `item` (an `<item/>` of
/// XEP-0045's admin namespace), and waits for the room to do it.
async fn admin(client: &mut XmppClient, room: &str, id: &str, item: &str) {
    let query = format!("<query xmlns='{MUC_ADMIN}'>{item}</query>");
    client.set(room, id, &query).await;
}

/// `user` kicks (`ban`: false) or bans `member` from the room, saying why.
async fn remove(user: &UserClient, room: &str, member: &str, ban: bool, reason: &str) {
    let what = if ban { "ban" } else { "kick" };
    let path = format!("/_matrix/client/v3/rooms/{}/{what}", encode(room));
    let body = json!({"user_id": member, "reason": reason});
    user.call_ok(Method::POST, &path, Some(&body)).await;
}

/// Whether an event is `member`'s membership `membership` set by `sender`.
fn membership<'a>(
    member: &'a str,
    membership: &'a str,
    sender: &'a str,
) -> impl Fn(&Value) -> bool + 'a {
    move |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == member
            && e["content"]["membership"] == membership
            && e["sender"] == sender
    }
}

#[tokio::test]
async fn nick_changes_kicks_and_bans_cross_both_ways() {
    // alice made the room: she owns it.
    let Gathering {
        _server,
        room,
        xmpp,
        setup,
        bob,
        portal,
    } = gather(&["alice", "carol"]).await;
    let [mut alice, mut carol] = <[XmppClient; 2]>::try_from(xmpp).ok().unwrap();
    let carol_ghost = "@xmpp_chat=40conference.localhost=2fcarol:localhost";
    let caroline_ghost = "@xmpp_chat=40conference.localhost=2fcaroline:localhost";
    wait_member(&bob, &portal, carol_ghost, true).await;

    // carol takes a new nick (303): in this semi-anonymous room her ghost is her occupant's,
    // so the old one leaves and one named after the new nick joins.
    carol
        .send(Presence::available().with_to(Jid::from_str(&format!("{room}/caroline")).unwrap()))
        .await;
    bob.wait_for_event(&portal, WAIT, membership(carol_ghost, "leave", carol_ghost))
        .await;
    wait_member(&bob, &portal, caroline_ghost, true).await;
    assert_eq!(
        bob.get_displayname(caroline_ghost).await.as_deref(),
        Some("caroline")
    );

    // bob, a moderator of the portal but no moderator of the room, kicks her ghost: the room
    // refuses, the portal is told, and her ghost comes back (she is still there).
    set_power_level(&setup.app, &bob, &portal, &bob.user_id, 50).await;
    remove(&bob, &portal, caroline_ghost, false, "off topic").await;
    let refused = bob
        .wait_for_event(&portal, WAIT, |e| {
            e["sender"] == BOT
                && e["content"]["msgtype"] == "m.notice"
                && e["content"]["body"].as_str().unwrap().contains("refused")
        })
        .await;
    let body = refused["content"]["body"].as_str().unwrap();
    assert!(body.contains("kick of caroline"), "{body}");
    wait_after(&bob, &portal, refused["event_id"].as_str().unwrap(), |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == caroline_ghost
            && e["content"]["membership"] == "join"
    })
    .await;

    // alice makes bob's JID an admin of the room: now his kick is the room's.
    admin(
        &mut alice,
        &room,
        "admin-1",
        &format!("<item jid='bob@{COMPONENT}' affiliation='admin'/>"),
    )
    .await;
    remove(&bob, &portal, caroline_ghost, false, "off topic").await;
    let kicked = carol
        .expect_presence("carol kicked", |p| {
            p.type_ == PresenceType::Unavailable && statuses(p).contains(&Status::Kicked)
        })
        .await;
    let reason = kicked.payloads.iter().find_map(|p| {
        let item = p.get_child("item", "http://jabber.org/protocol/muc#user")?;
        Some(
            item.get_child("reason", "http://jabber.org/protocol/muc#user")?
                .text(),
        )
    });
    assert_eq!(reason.as_deref(), Some("off topic"));

    // XMPP's kicks and bans are the bot's in the portal, saying who and why.
    let removals = [
        (
            "kick-1",
            "<item nick='carol' role='none'><reason>spam</reason></item>",
            "leave",
            "alice: spam",
        ),
        (
            "ban-1",
            "<item jid='carol@localhost' affiliation='outcast'><reason>enough</reason></item>",
            "ban",
            "alice: enough",
        ),
    ];
    for (id, item, removed, reason) in removals {
        carol.join(&room, "carol").await;
        wait_member(&bob, &portal, carol_ghost, true).await;
        admin(&mut alice, &room, id, item).await;
        let event = bob
            .wait_for_event(&portal, WAIT, membership(carol_ghost, removed, BOT))
            .await;
        assert_eq!(event["content"]["reason"], reason);
    }
}

/// The power levels of the room, as `user` reads them.
async fn power_levels(user: &UserClient, room: &str) -> Value {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        encode(room)
    );
    user.call_ok(Method::GET, &path, None).await
}

/// Waits until `member`'s own entry in the room's power levels is `level` (`None`: no entry).
async fn wait_power(user: &UserClient, room: &str, member: &str, level: Option<i64>) {
    let started = Instant::now();
    loop {
        let levels = power_levels(user, room).await;
        if levels["users"][member].as_i64() == level {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{member} never had level {level:?}: {levels:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How many power levels events the room has had, as `user` sees its timeline.
async fn power_level_events(user: &UserClient, room: &str) -> usize {
    let events = user.messages(room).await;
    events
        .iter()
        .filter(|e| e["type"] == "m.room.power_levels")
        .count()
}

#[tokio::test]
async fn affiliations_and_roles_are_power_levels() {
    let Gathering {
        _server,
        room,
        xmpp,
        setup: _setup,
        bob,
        portal,
    } = gather(&["alice", "carol"]).await;
    let [mut alice, mut carol] = <[XmppClient; 2]>::try_from(xmpp).ok().unwrap();
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    let carol_ghost = "@xmpp_chat=40conference.localhost=2fcarol:localhost";

    // alice made the room: its owner's ghost has 90 (below the bot's 100), carol none of her
    // own.
    wait_power(&bob, &portal, alice_ghost, Some(90)).await;
    wait_member(&bob, &portal, carol_ghost, true).await;
    assert_eq!(
        power_levels(&bob, &portal).await["users"][carol_ghost],
        Value::Null
    );

    // A moderator's ghost has 50, and none again when the role goes.
    admin(
        &mut alice,
        &room,
        "mod-1",
        "<item nick='carol' role='moderator'/>",
    )
    .await;
    wait_power(&bob, &portal, carol_ghost, Some(50)).await;
    admin(
        &mut alice,
        &room,
        "mod-2",
        "<item nick='carol' role='participant'/>",
    )
    .await;
    wait_power(&bob, &portal, carol_ghost, None).await;

    // A presence that changes nothing of her standing (a status) writes nothing.
    let before = power_level_events(&bob, &portal).await;
    let away = Presence::available()
        .with_to(Jid::from_str(&format!("{room}/carol")).unwrap())
        .with_show(tokio_xmpp::parsers::presence::Show::Away);
    carol.send(away).await;
    alice
        .expect_presence("carol away", |p| {
            p.from
                .as_ref()
                .is_some_and(|f| f.as_str() == format!("{room}/carol"))
                && p.show.is_some()
        })
        .await;
    alice
        .say(MessageType::Groupchat, &room, "p1", "after the status")
        .await;
    bob.wait_for_event(&portal, WAIT, message_from(alice_ghost, "after the status"))
        .await;
    assert_eq!(power_level_events(&bob, &portal).await, before);

    // An admin's ghost has 75.
    admin(
        &mut alice,
        &room,
        "admin-1",
        "<item jid='carol@localhost' affiliation='admin'/>",
    )
    .await;
    wait_power(&bob, &portal, carol_ghost, Some(75)).await;
}
