//! The `irc` third-party protocol: networks as instances, channel and nick lookups.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#third-party-networks>

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use trestle::{
    ruma::{
        OwnedRoomAliasId, OwnedUserId, RoomAliasId, UserId as MatrixUserId,
        api::appservice::thirdparty::get_protocol::v1::{
            AppserviceProtocol, AppserviceProtocolInstance,
        },
        thirdparty::{
            FieldType, FieldTypeInit, Location, ProtocolInit, ProtocolInstanceInit, User,
        },
    },
    thirdparty::ThirdPartyLookup,
};
use trestle_bridge::Network;

use crate::{
    hub::Kit,
    ids::{ChatId, UserId},
};

/// The third-party protocol the bridge answers for (the registration's `protocols`).
pub const PROTOCOL: &str = "irc";

/// Answers the homeserver's third-party lookups for the bridge.
pub struct Lookup(pub Kit);

impl Lookup {
    fn server_name(&self) -> Option<String> {
        self.0.app().ok().map(|app| app.server_name().to_string())
    }

    fn location(&self, chat: &ChatId) -> Option<Location> {
        let alias: OwnedRoomAliasId = format!(
            "#{}:{}",
            self.0.network().chat_alias(chat),
            self.server_name()?
        )
        .try_into()
        .ok()?;
        let fields = BTreeMap::from([
            ("network".to_owned(), chat.network().to_owned()),
            ("channel".to_owned(), chat.target().to_owned()),
        ]);
        Some(Location::new(alias, PROTOCOL.into(), fields))
    }

    fn user(&self, user: &UserId) -> Option<User> {
        let user_id: OwnedUserId = format!(
            "@{}:{}",
            self.0.network().ghost_localpart(user),
            self.server_name()?
        )
        .try_into()
        .ok()?;
        let fields = BTreeMap::from([
            ("network".to_owned(), user.network.clone()),
            ("nickname".to_owned(), user.nick.clone()),
        ]);
        Some(User::new(user_id, PROTOCOL.into(), fields))
    }

    fn known_network(&self, fields: &BTreeMap<String, String>) -> Option<String> {
        let network = fields.get("network")?;
        self.0.network().network_settings(network)?;
        Some(network.clone())
    }
}

fn field(regexp: &str, placeholder: &str) -> FieldType {
    FieldTypeInit {
        regexp: regexp.into(),
        placeholder: placeholder.into(),
    }
    .into()
}

impl ThirdPartyLookup for Lookup {
    fn protocol<'a>(&'a self, protocol: &'a str) -> BoxFuture<'a, Option<AppserviceProtocol>> {
        Box::pin(async move {
            if protocol != PROTOCOL {
                return None;
            }
            let instances: Vec<AppserviceProtocolInstance> = self
                .0
                .network()
                .cfg
                .settings
                .networks
                .iter()
                .map(|n| {
                    ProtocolInstanceInit {
                        desc: n.host.clone(),
                        fields: BTreeMap::from([("network".to_owned(), n.name.clone())]),
                        network_id: n.name.clone(),
                    }
                    .into()
                })
                .collect();
            let field_types = BTreeMap::from([
                ("network".to_owned(), field("[a-z0-9-]+", "libera")),
                ("channel".to_owned(), field("[#&][^\\s,]+", "#channel")),
                ("nickname".to_owned(), field("[^#&\\s][^\\s]*", "nick")),
            ]);
            Some(
                ProtocolInit {
                    user_fields: vec!["network".into(), "nickname".into()],
                    location_fields: vec!["network".into(), "channel".into()],
                    icon: String::new(),
                    field_types,
                    instances,
                }
                .into(),
            )
        })
    }

    fn users<'a>(
        &'a self,
        protocol: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<User>> {
        Box::pin(async move {
            let found = (protocol == PROTOCOL)
                .then(|| self.known_network(fields))
                .flatten()
                .zip(fields.get("nickname").filter(|n| !n.is_empty()))
                .and_then(|(network, nick)| self.user(&UserId::new(&network, nick)));
            found.into_iter().collect()
        })
    }

    fn locations<'a>(
        &'a self,
        protocol: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<Location>> {
        Box::pin(async move {
            let found = (protocol == PROTOCOL)
                .then(|| self.known_network(fields))
                .flatten()
                .zip(fields.get("channel").filter(|c| c.starts_with(['#', '&'])))
                .and_then(|(network, channel)| self.location(&ChatId::channel(&network, channel)));
            found.into_iter().collect()
        })
    }

    fn users_for_id<'a>(&'a self, user_id: &'a MatrixUserId) -> BoxFuture<'a, Vec<User>> {
        Box::pin(async move {
            let user = self.0.network().user_for_ghost(user_id.localpart());
            user.and_then(|u| self.user(&u)).into_iter().collect()
        })
    }

    fn locations_for_alias<'a>(&'a self, alias: &'a RoomAliasId) -> BoxFuture<'a, Vec<Location>> {
        Box::pin(async move {
            let chat = self.0.network().chat_for_alias(alias.alias());
            chat.and_then(|c| self.location(&c)).into_iter().collect()
        })
    }
}
