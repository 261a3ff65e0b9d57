//! The `xmpp` third-party protocol: rooms and users looked up by their JIDs, for clients'
//! "join a room on another network" and user search.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#third-party-networks>
//!
//! XMPP is federated: there is one instance (the network as a whole), a location is a room's
//! JID (`room`: `chat@conference.example.org`, whose portal is `#xmpp_chat_conference.example.org`)
//! and a user a JID (`jid`: `alice@example.org`, whose ghost is `@xmpp_alice=40example.org`). A
//! JID of the bridge's own component stands for a Matrix user, who is answered as themselves.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use tokio_xmpp::jid::BareJid;
use trestle::{
    ruma::{
        OwnedRoomAliasId, OwnedUserId, RoomAliasId, UserId as MatrixUserId,
        api::appservice::thirdparty::get_protocol::v1::AppserviceProtocol,
        thirdparty::{
            FieldType, FieldTypeInit, Location, ProtocolInit, ProtocolInstanceInit, User,
        },
    },
    thirdparty::ThirdPartyLookup,
};
use trestle_bridge::Network;

use crate::{
    hub::Kit,
    ids::{self, ChatId, UserId},
};

/// The third-party protocol the bridge answers for (the registration's `protocols`).
pub const PROTOCOL: &str = "xmpp";

/// Answers the homeserver's third-party lookups for the bridge.
pub struct Lookup(pub Kit);

impl Lookup {
    /// The homeserver's name, once the bridge runs.
    fn homeserver(&self) -> Option<String> {
        Some(self.0.app().ok()?.server_name().to_string())
    }

    /// The location of a room: its portal's alias, and its JID.
    fn location(&self, room: &BareJid) -> Option<Location> {
        let chat = ChatId::Muc(room.clone());
        let alias = format!(
            "#{}:{}",
            self.0.network().chat_alias(&chat),
            self.homeserver()?
        );
        let alias = OwnedRoomAliasId::try_from(alias).ok()?;
        let fields = BTreeMap::from([("room".to_owned(), room.to_string())]);
        Some(Location::new(alias, PROTOCOL.into(), fields))
    }

    /// A user as Matrix knows them: an XMPP user's ghost, or the Matrix user a JID of the
    /// component stands for.
    fn user(&self, user: &UserId) -> Option<User> {
        let server_name = self.homeserver()?;
        let user_id = match user {
            UserId::Jid(jid) if jid.domain().as_str() == self.0.network().domain() => {
                ids::matrix_user(jid, &server_name)?
            }
            _ => format!("@{}:{server_name}", self.0.network().ghost_localpart(user)),
        };
        let user_id = OwnedUserId::try_from(user_id).ok()?;
        let fields = BTreeMap::from([("jid".to_owned(), user.to_string())]);
        Some(User::new(user_id, PROTOCOL.into(), fields))
    }
}

/// The JID (`name@domain`) in the field `name` of a lookup for `protocol`, if it is ours and
/// the field holds one.
fn jid_field(protocol: &str, fields: &BTreeMap<String, String>, name: &str) -> Option<BareJid> {
    if protocol != PROTOCOL {
        return None;
    }
    let jid = BareJid::new(fields.get(name)?.trim()).ok()?;
    jid.node().is_some().then_some(jid)
}

/// The fields lookups take: their names, what they match and an example.
const FIELDS: [(&str, &str, &str); 2] = [
    ("room", "[^@/\\s]+@[^@/\\s]+", "room@conference.example.org"),
    ("jid", "[^@/\\s]+@[^@/\\s]+", "user@example.org"),
];

impl ThirdPartyLookup for Lookup {
    fn protocol<'a>(&'a self, protocol: &'a str) -> BoxFuture<'a, Option<AppserviceProtocol>> {
        Box::pin(async move {
            if protocol != PROTOCOL {
                return None;
            }
            let instance = ProtocolInstanceInit {
                desc: "XMPP".into(),
                fields: BTreeMap::new(),
                network_id: PROTOCOL.into(),
            };
            let field_types: BTreeMap<String, FieldType> = FIELDS
                .iter()
                .map(|(name, regexp, placeholder)| {
                    let kind = FieldTypeInit {
                        regexp: (*regexp).to_owned(),
                        placeholder: (*placeholder).to_owned(),
                    };
                    ((*name).to_owned(), kind.into())
                })
                .collect();
            Some(
                ProtocolInit {
                    user_fields: vec!["jid".into()],
                    location_fields: vec!["room".into()],
                    icon: String::new(),
                    field_types,
                    instances: vec![instance.into()],
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
        let jid = jid_field(protocol, fields, "jid");
        Box::pin(async move {
            jid.and_then(|j| self.user(&UserId::Jid(j)))
                .into_iter()
                .collect()
        })
    }

    fn locations<'a>(
        &'a self,
        protocol: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<Location>> {
        let room = jid_field(protocol, fields, "room");
        Box::pin(async move { room.and_then(|r| self.location(&r)).into_iter().collect() })
    }

    fn users_for_id<'a>(&'a self, user_id: &'a MatrixUserId) -> BoxFuture<'a, Vec<User>> {
        let remote = ids::user_for_ghost(user_id.localpart());
        Box::pin(async move { remote.and_then(|r| self.user(&r)).into_iter().collect() })
    }

    fn locations_for_alias<'a>(&'a self, alias: &'a RoomAliasId) -> BoxFuture<'a, Vec<Location>> {
        let room = ids::room_for_alias(alias.alias());
        Box::pin(async move { room.and_then(|r| self.location(&r)).into_iter().collect() })
    }
}
