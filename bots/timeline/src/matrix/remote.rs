//! Reaching a timeline the index does not know yet, with the follower's own token: its alias
//! resolved through the room directory (over federation when it names another server) and the
//! room joined through the servers the directory names.

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedServerName,
    api::client::{alias::get_alias, membership::join_room_by_id_or_alias},
};
use trestle::{Result, ruma};

use super::UserApi;

impl UserApi {
    /// The room an alias points at, and servers in it to join through.
    pub(crate) async fn resolve_alias(
        &self,
        token: &str,
        alias: &OwnedRoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let response = self
            .send(get_alias::v3::Request::new(alias.clone()), Some(token))
            .await?;
        Ok((response.room_id, response.servers))
    }

    /// Joins a room through `via`: a room of another homeserver, which a room id alone does not
    /// locate (room version 12 ids name no server).
    pub(crate) async fn join_via(
        &self,
        token: &str,
        room_id: &OwnedRoomId,
        via: Vec<OwnedServerName>,
    ) -> Result<()> {
        let mut request = join_room_by_id_or_alias::v3::Request::new(room_id.clone().into());
        request.via = via;
        self.send(request, Some(token)).await?;
        Ok(())
    }
}
