//! Checks shared by the bridge kit's end-to-end tests: commands in a management room, waiting
//! for events, members and read receipts, room state, and calls of the provisioning API.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use trestle::{
    Registration,
    registration::{Namespace, generate_token},
};
use trestle_bridge::{Bridge, BridgeConfig, BridgeHandle};

use crate::{
    appservice::{Harness, WAIT},
    synapse::{Synapse, UserClient, encode},
    toy_network::{TOY_PASSWORD, ToyNetwork, ToyWorld},
};

/// A double puppeting registration named `id`, as mautrix documents the appservice method: no
/// `url`, a random sender, every user of the server in a namespace that is not exclusive.
pub fn double_puppet_registration(id: &str) -> Registration {
    let mut registration = Registration::generate(
        id,
        None,
        format!("doublepuppet{}", &generate_token()[..8].to_lowercase()),
        "unused_",
        "localhost",
    );
    registration.namespaces.users = vec![Namespace::new(false, "@.*:localhost")];
    registration.namespaces.aliases = Vec::new();
    registration
}

/// Synapse and the toy bridge with `config` (bot `@toybot`, ghosts and aliases `toy_…`), and
/// the bridge's handle and the toy network's world for the test to act and look.
/// `own_events` is the router's setting (the kit must ignore its own users' events either way).
pub async fn start_toy_bridge(
    config: BridgeConfig,
    own_events: bool,
) -> (Harness, BridgeHandle<ToyNetwork>, Arc<ToyWorld>) {
    let network = ToyNetwork::default();
    let world = network.world.clone();
    let bridge = Bridge::new(network, config);
    let registration = Registration::generate("toy", None, "toybot", "toy_", "localhost");
    let harness = Harness::start(registration, bridge.router().own_events(own_events)).await;
    (harness, bridge.handle(), world)
}

/// Serves a new toy bridge with `config` on the harness's store and the same toy world, as
/// after a restart of Trestle.
pub async fn restart_toy_bridge(
    harness: &mut Harness,
    world: &Arc<ToyWorld>,
    config: &BridgeConfig,
) {
    let network = ToyNetwork {
        world: world.clone(),
    };
    harness
        .restart(Bridge::new(network, config.clone()).router())
        .await;
}

/// The toy bridge's bot.
pub const BOT: &str = "@toybot:localhost";

/// A new user `name` in the toy portal `#toy_lobby`, logged in to the toy network as `name`
/// from a management room of theirs; returns them, the portal and the management room.
pub async fn logged_in_toy_user(synapse: &Synapse, name: &str) -> (UserClient, String, String) {
    let user = synapse.register_user(name, "password-1234").await;
    let lobby = user.join("#toy_lobby:localhost").await;
    let mgmt = user
        .create_room(json!({"invite": [BOT], "is_direct": true, "preset": "trusted_private_chat"}))
        .await;
    user.wait_for_event(&mgmt, WAIT, |e| e["sender"] == BOT)
        .await;
    let login = format!("login {name} {TOY_PASSWORD}");
    command(&user, &mgmt, &login, &format!("Logged in as {name}")).await;
    (user, lobby, mgmt)
}

/// Sends `text` in the management room and waits for the bot's notice after it that
/// contains `expect`; returns the notice's body.
pub async fn command(user: &UserClient, room: &str, text: &str, expect: &str) -> String {
    command_to(BOT, user, room, text, expect).await
}

/// As [`command`], for the bridge whose bot is `bot`.
pub async fn command_to(
    bot: &str,
    user: &UserClient,
    room: &str,
    text: &str,
    expect: &str,
) -> String {
    let sent = user.send_text(room, text).await;
    wait_after(user, room, &sent, |e| {
        e["sender"] == bot
            && e["content"]["msgtype"] == "m.notice"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(expect))
    })
    .await["content"]["body"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for an event matching `pred` that comes after `after` in the room.
pub async fn wait_after(
    user: &UserClient,
    room: &str,
    after: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let events = user.messages(room).await;
        let later = events.iter().skip_while(|e| e["event_id"] != after).skip(1);
        if let Some(found) = later.into_iter().find(|e| pred(e)) {
            return found.clone();
        }
        assert!(
            started.elapsed() < WAIT,
            "nothing matching after {after} in {room}: {events:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until `member` is in the room (`present`) or not.
pub async fn wait_member(user: &UserClient, room: &str, member: &str, present: bool) {
    let started = std::time::Instant::now();
    while user.joined_members(room).await.iter().any(|m| m == member) != present {
        assert!(
            started.elapsed() < WAIT,
            "{member} in {room}: never {present}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The event `reader`'s `m.read` receipt in the room points at, as `user` syncs it.
pub async fn read_receipt_of(user: &UserClient, room: &str, reader: &str) -> Option<String> {
    let sync = user
        .call_ok(Method::GET, "/_matrix/client/v3/sync?timeout=0", None)
        .await;
    let events = sync["rooms"]["join"][room]["ephemeral"]["events"].clone();
    events.as_array()?.iter().find_map(|e| {
        let content = e["content"].as_object()?;
        content
            .iter()
            .find(|(_, receipts)| receipts["m.read"][reader].is_object())
            .map(|(event_id, _)| event_id.clone())
    })
}

/// Waits until `reader`'s `m.read` receipt in the room is on `event_id`, as `user` syncs it.
pub async fn wait_read_receipt(user: &UserClient, room: &str, reader: &str, event_id: &str) {
    let started = std::time::Instant::now();
    while read_receipt_of(user, room, reader).await.as_deref() != Some(event_id) {
        assert!(
            started.elapsed() < WAIT,
            "{reader} never marked {event_id} read; their receipt is on {:?}",
            read_receipt_of(user, room, reader).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The room's current state events.
pub async fn room_state(user: &UserClient, room: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/state", encode(room));
    let state = user.call_ok(Method::GET, &path, None).await;
    state.as_array().cloned().unwrap_or_default()
}

/// The toy bridge's bridge info of type `event_type` (`m.bridge` or `uk.half-shot.bridge`).
pub fn bridge_info<'a>(state: &'a [Value], event_type: &str) -> Option<&'a Value> {
    state
        .iter()
        .find(|e| e["type"] == event_type && e["content"]["protocol"]["id"] == "toy")
}

/// Calls the provisioning API of the harness's bridge, with `secret` as Bearer token if
/// given and `body` as raw JSON; returns the status and the JSON answer.
pub async fn provision(
    harness: &Harness,
    method: Method,
    path: &str,
    secret: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", harness.url));
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Waits until `user` is invited to a room other than `except`, and returns it.
pub async fn wait_for_invite(user: &UserClient, except: Option<&str>) -> String {
    let started = std::time::Instant::now();
    // After the first sync, incremental ones: Synapse keeps an initial sync's answer for two
    // minutes, so repeating it would never show an invite that came after the first.
    let mut since: Option<String> = None;
    loop {
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/sync?timeout=0&since={}", encode(token)),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let sync = user.call_ok(Method::GET, &path, None).await;
        if let Some(token) = sync["next_batch"].as_str() {
            since = Some(token.to_owned());
        }
        let invited = sync["rooms"]["invite"].as_object().and_then(|rooms| {
            rooms
                .keys()
                .find(|room| Some(room.as_str()) != except)
                .cloned()
        });
        if let Some(room) = invited {
            return room;
        }
        assert!(
            started.elapsed() < WAIT,
            "{} was never invited: {sync}",
            user.user_id
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Upgrades `room` as `user` (who needs the power to send its tombstone), as a client does,
/// with `body` (`new_version`, and `additional_creators` in room version 12); returns the
/// replacement room's id.
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidupgrade>
pub async fn upgrade_room(user: &UserClient, room: &str, body: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/upgrade", encode(room));
    let upgraded = user.call_ok(Method::POST, &path, Some(&body)).await;
    upgraded["replacement_room"]
        .as_str()
        .expect("replacement_room in the upgrade's answer")
        .to_owned()
}

/// Gives `user` power level `level` in `room`, as the bot of `app` (which made the room),
/// reading the room's power levels as `viewer`.
pub async fn set_power_level(
    app: &trestle::Appservice,
    viewer: &UserClient,
    room: &str,
    user: &str,
    level: i64,
) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        encode(room)
    );
    let mut levels = viewer.call_ok(Method::GET, &path, None).await;
    levels["users"][user] = json!(level);
    let room_id = trestle::ruma::RoomId::parse(room).unwrap();
    app.bot()
        .send_state_json(&room_id, "m.room.power_levels", "", levels, None)
        .await
        .unwrap();
}
