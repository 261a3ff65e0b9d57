//! A room with its portal: the bridge's settings for a test Prosody, and alice (on XMPP) and
//! bob (on Matrix) in one room, for the tests that start there.

use reqwest::Method;
use serde_json::{Value, json};
use tokio_xmpp::parsers::presence::Show;
use trestle::ruma::RoomId;
use trestle_tests::{
    appservice::Harness,
    synapse::{Synapse, UserClient, encode},
};
use trestle_xmpp::{Secret, Settings};

use super::{
    client::XmppClient,
    prosody::{COMPONENT, MUC, Prosody, SECRET},
};

/// The bridge's settings for `server`: its component, and its upload service's files trusted.
pub fn settings(server: &Prosody) -> Settings {
    Settings {
        server: Some(server.component_address()),
        domain: COMPONENT.to_owned(),
        secret: Some(Secret::Inline(SECRET.to_owned())),
        upload_url: Some(server.upload_url()),
        ..Settings::default()
    }
}

/// Synapse and Trestle with the bridge for `server`.
pub async fn start(server: &Prosody) -> Harness {
    start_with(settings(server)).await
}

/// Synapse and Trestle with the bridge's `settings`.
pub async fn start_with(settings: Settings) -> Harness {
    let registration = trestle_xmpp::PLUGIN.generate_registration(None, "localhost");
    let router = trestle_xmpp::router(settings).unwrap();
    Harness::start(registration, router).await
}

/// A portal's power levels, as `user` reads them.
pub async fn power_levels(user: &UserClient, room: &str) -> Value {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        encode(room)
    );
    user.call_ok(Method::GET, &path, None).await
}

/// The bridge's bot sets `member`'s power level in the portal `room` to `level` (the levels read
/// as `reader`), as the portal's creator may.
pub async fn bot_sets_level(
    setup: &Harness,
    reader: &UserClient,
    room: &str,
    member: &str,
    level: i64,
) {
    let mut content = power_levels(reader, room).await;
    content["users"][member] = json!(level);
    let room_id = RoomId::parse(room).unwrap();
    setup
        .app
        .bot()
        .send_state_json(&room_id, "m.room.power_levels", "", content, None)
        .await
        .unwrap();
}

/// A message event from `sender` with the body `body`.
pub fn message_from<'a>(sender: &'a str, body: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["type"] == "m.room.message" && e["sender"] == sender && e["content"]["body"] == body
}

/// alice in `chat@conference.localhost`, the bridge, and bob, a Matrix user, in the room's
/// portal (his occupant seen in the room by alice).
pub struct InRoom {
    pub _server: Prosody,
    pub room: String,
    pub alice: XmppClient,
    pub setup: Harness,
    pub bob: UserClient,
    pub portal: String,
    pub bob_occupant: String,
}

/// alice on `server`, in `chat@conference.localhost`: the room and her client.
pub async fn alice_in_room(server: &Prosody) -> (String, XmppClient) {
    let room = format!("chat@{MUC}");
    let mut alice = XmppClient::connect(server, "alice").await;
    alice.join(&room, "alice").await;
    (room, alice)
}

/// bob, a new Matrix user, joins the portal of `room` (alice's) and alice sees his occupant
/// come in: bob, the portal and his occupant's JID.
pub async fn bob_joins(
    setup: &Harness,
    alice: &mut XmppClient,
    room: &str,
) -> (UserClient, String, String) {
    bob_joins_on(&setup.synapse, alice, room).await
}

/// [`bob_joins`] on any Synapse (one that several processes share, say).
pub async fn bob_joins_on(
    synapse: &Synapse,
    alice: &mut XmppClient,
    room: &str,
) -> (UserClient, String, String) {
    let bob = synapse.register_user("bob", "password-1234").await;
    let portal = bob.join(&format!("#xmpp_chat_{MUC}:localhost")).await;
    let bob_occupant = format!("{room}/bob");
    alice
        .expect_presence("bob in the room", |p| {
            p.from
                .as_ref()
                .is_some_and(|f| f.to_string() == bob_occupant)
        })
        .await;
    (bob, portal, bob_occupant)
}

/// alice joins a room, then bob joins its portal.
pub async fn bob_joins_alices_room() -> InRoom {
    let server = Prosody::start(&["alice"]).await;
    let (room, mut alice) = alice_in_room(&server).await;
    let setup = start(&server).await;
    let (bob, portal, bob_occupant) = bob_joins(&setup, &mut alice, &room).await;
    InRoom {
        _server: server,
        room,
        alice,
        setup,
        bob,
        portal,
        bob_occupant,
    }
}

/// bob (`@bob:localhost`) says he is away for lunch in Matrix, and alice sees his occupant
/// `bob_occupant` away, saying so (the bridge's presence is on).
pub async fn bob_away_for_lunch(bob: &UserClient, alice: &mut XmppClient, bob_occupant: &str) {
    let path = format!(
        "/_matrix/client/v3/presence/{}/status",
        encode("@bob:localhost")
    );
    let away = json!({"presence": "unavailable", "status_msg": "lunch"});
    bob.call_ok(Method::PUT, &path, Some(&away)).await;
    alice
        .expect_presence("bob away for lunch", |p| {
            p.from
                .as_ref()
                .is_some_and(|f| f.to_string() == bob_occupant)
                && p.show == Some(Show::Away)
                && p.statuses.values().any(|s| s == "lunch")
        })
        .await;
}
