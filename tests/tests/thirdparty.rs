//! A plugin answering the homeserver's queries — third-party lookups, unknown users, unknown
//! aliases — as a real Synapse asks them on behalf of a client.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use serde_json::json;
use trestle::{
    Appservice, Registration, Router,
    ruma::{
        OwnedRoomAliasId, OwnedUserId, RoomAliasId, UserId,
        api::{
            AppserviceUserIdentity,
            appservice::thirdparty::get_protocol::v1::{
                AppserviceProtocol, AppserviceProtocolInstance,
            },
            client::room::create_room,
        },
        thirdparty::{Location, ProtocolInit, ProtocolInstanceInit, User},
    },
    thirdparty::ThirdPartyLookup,
};
use trestle_tests::{appservice::Harness, synapse::UserClient};

/// A pretend network, "toy": its users are ghosts `@toy_<name>`, its channels `#toy_<name>`.
struct Toy;

impl ThirdPartyLookup for Toy {
    fn protocol<'a>(&'a self, protocol: &'a str) -> BoxFuture<'a, Option<AppserviceProtocol>> {
        Box::pin(async move {
            (protocol == "toy").then(|| {
                let instance: AppserviceProtocolInstance = ProtocolInstanceInit {
                    desc: "The toy network".into(),
                    fields: BTreeMap::new(),
                    network_id: "toynet".into(),
                }
                .into();
                ProtocolInit {
                    user_fields: vec!["name".into()],
                    location_fields: vec!["channel".into()],
                    icon: "mxc://localhost/toy".into(),
                    field_types: BTreeMap::new(),
                    instances: vec![instance],
                }
                .into()
            })
        })
    }

    fn users<'a>(
        &'a self,
        _: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<User>> {
        Box::pin(async move {
            let name = fields.get("name").cloned().unwrap_or_default();
            let user_id = UserId::parse(format!("@toy_{name}:localhost")).unwrap();
            vec![User::new(
                user_id,
                "toy".into(),
                BTreeMap::from([("name".into(), name)]),
            )]
        })
    }

    fn locations<'a>(
        &'a self,
        _: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<Location>> {
        Box::pin(async move {
            let channel = fields.get("channel").cloned().unwrap_or_default();
            let alias = RoomAliasId::parse(format!("#toy_{channel}:localhost")).unwrap();
            vec![Location::new(
                alias,
                "toy".into(),
                BTreeMap::from([("channel".into(), channel)]),
            )]
        })
    }

    fn users_for_id<'a>(&'a self, user_id: &'a UserId) -> BoxFuture<'a, Vec<User>> {
        Box::pin(async move {
            let name = user_id.localpart().trim_start_matches("toy_").to_owned();
            vec![User::new(
                user_id.to_owned(),
                "toy".into(),
                BTreeMap::from([("name".into(), name)]),
            )]
        })
    }

    fn locations_for_alias<'a>(&'a self, _: &'a RoomAliasId) -> BoxFuture<'a, Vec<Location>> {
        Box::pin(async { Vec::new() })
    }
}

async fn toy_user_exists(_: Appservice, user_id: OwnedUserId) -> trestle::Result<bool> {
    Ok(user_id.localpart().starts_with("toy_") && user_id.localpart() != "toy_nobody")
}

/// Makes the channel's portal room on demand, with the alias that was asked for.
async fn toy_channel(app: Appservice, alias: OwnedRoomAliasId) -> trestle::Result<bool> {
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some(alias.alias().to_owned());
    request.name = Some(format!(
        "Toy channel {}",
        alias.alias().trim_start_matches("toy_")
    ));
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    app.client()
        .send(request, AppserviceUserIdentity::new(app.bot_user_id()))
        .await?;
    Ok(true)
}

async fn get(user: &UserClient, path: &str) -> (u16, serde_json::Value) {
    user.call(reqwest::Method::GET, path, None).await
}

#[tokio::test]
async fn synapse_asks_the_plugin_and_clients_get_its_answers() {
    let mut registration = Registration::generate("toy", None, "toybot", "toy_", "localhost");
    registration.protocols = Some(vec!["toy".into()]);
    let router = Router::new()
        .thirdparty(Toy)
        .on_user_query(toy_user_exists)
        .on_alias_query(toy_channel);
    let harness = Harness::start(registration, router).await;
    let user = harness.synapse.register_user("tess", "password-1234").await;

    let (status, protocols) = get(&user, "/_matrix/client/v3/thirdparty/protocols").await;
    assert_eq!(status, 200, "{protocols}");
    assert_eq!(protocols["toy"]["user_fields"], json!(["name"]));
    assert_eq!(protocols["toy"]["instances"][0]["desc"], "The toy network");

    let (status, users) = get(&user, "/_matrix/client/v3/thirdparty/user/toy?name=bob").await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(users[0]["userid"], "@toy_bob:localhost");
    let (status, locations) = get(
        &user,
        "/_matrix/client/v3/thirdparty/location/toy?channel=lobby",
    )
    .await;
    assert_eq!(status, 200, "{locations}");
    assert_eq!(locations[0]["alias"], "#toy_lobby:localhost");

    // Inviting an unknown user of the namespace: Synapse asks the plugin before it passes the
    // invite on, and the plugin has the ghost registered.
    let room_for_invites = user.create_room(json!({"preset": "private_chat"})).await;
    user.invite(&room_for_invites, "@toy_carol:localhost").await;
    let started = std::time::Instant::now();
    while !harness
        .app
        .store()
        .ghost("@toy_carol:localhost")
        .await
        .unwrap()
        .is_some_and(|g| g.registered)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the ghost was never made"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, profile) = get(&user, "/_matrix/client/v3/profile/%40toy_carol%3Alocalhost").await;
    assert_eq!(status, 200, "{profile}");

    // Joining an alias nobody made yet: the plugin makes the room, and the user is in.
    let room = user.join("#toy_lobby:localhost").await;
    assert!(user.joined_members(&room).await.contains(&user.user_id));
    let (status, resolved) = get(
        &user,
        "/_matrix/client/v3/directory/room/%23toy_lobby%3Alocalhost",
    )
    .await;
    assert_eq!(
        (status, resolved["room_id"].as_str()),
        (200, Some(room.as_str()))
    );
}
