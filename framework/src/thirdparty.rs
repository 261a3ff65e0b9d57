//! Third-party network lookups: what a bridge tells clients about the network it bridges.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#third-party-networks>

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use ruma::{
    RoomAliasId, UserId,
    api::appservice::thirdparty::get_protocol::v1::AppserviceProtocol,
    thirdparty::{Location, User},
};

/// Answers the `/_matrix/app/v1/thirdparty/…` endpoints. Each method answers for one protocol
/// (or one Matrix id); `None` from [`ThirdPartyLookup::protocol`] means "no such protocol",
/// which the homeserver is told as `404 M_NOT_FOUND`.
pub trait ThirdPartyLookup: Send + Sync + 'static {
    /// The protocol's metadata.
    fn protocol<'a>(&'a self, protocol: &'a str) -> BoxFuture<'a, Option<AppserviceProtocol>>;
    /// Remote users matching `fields`.
    fn users<'a>(
        &'a self,
        protocol: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<User>>;
    /// Remote locations (rooms) matching `fields`.
    fn locations<'a>(
        &'a self,
        protocol: &'a str,
        fields: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Vec<Location>>;
    /// The remote users behind a Matrix user id.
    fn users_for_id<'a>(&'a self, user_id: &'a UserId) -> BoxFuture<'a, Vec<User>>;
    /// The remote locations behind a Matrix room alias.
    fn locations_for_alias<'a>(&'a self, alias: &'a RoomAliasId) -> BoxFuture<'a, Vec<Location>>;
}
