//! Double puppeting by the appservice method: what a Matrix user sends from the network shows
//! in Matrix as their own account, not as their ghost.
//!
//! The bridge is given a second registration's `as_token` for a homeserver
//! ([`BridgeConfig::double_puppet`](super::BridgeConfig::double_puppet)). That registration
//! has no `url` (the homeserver sends it nothing) and a `users` namespace covering the
//! server's users that is *not* exclusive, so its token may act as any of them by identity
//! assertion (`?user_id=`) while they keep their accounts. This works the same whether the
//! homeserver logs users in with passwords or through OAuth (MAS), since no user's own token
//! is ever needed; it is mautrix's "appservice method", and the secret is written as theirs
//! is, `as_token:<token>`.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#identity-assertion>
//!
//! A user turns it on for themselves (`double-puppet on`, or the provisioning API); the bridge
//! first asks the homeserver who the token is when acting as them (`/account/whoami`), and
//! refuses with the reason when it is not them. From then on, a remote message, edit,
//! reaction or deletion whose sender is the remote user of one of their logins is sent as
//! them, joining the portal first when they are not in it.
//!
//! Everything sent so carries [`DOUBLE_PUPPET_SOURCE`] in its content, and the kit never
//! bridges an event carrying it back to the network: the homeserver hands the user's own
//! events to the appservice like anyone's, so without it each would go out a second time.
//! A deletion has no content to mark; the message it deletes is taken out of the message map
//! first, so that its echo finds nothing to delete on the network.
//!
//! When the token stops working for a user (the registration was removed, the secret
//! changed), the ghost speaks instead, double puppeting is turned off for them, and they are
//! told in their management room.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedTransactionId,
    OwnedUserId, RoomId, TransactionId, UserId,
    api::{
        AppserviceUserIdentity,
        client::{
            account::whoami, membership::join_room_by_id, message::send_message_event,
            redact::redact_event,
        },
    },
    events::{AnyMessageLikeEventContent, MessageLikeEventType},
    serde::Raw,
};
use serde::Serialize;
use trestle::{client::HomeserverClient, sync::MutexExt};

use super::{BridgeError, BridgeHandle, Network, NetworkResult, PortalRef};

/// The content field that marks an event the bridge sent as a user's own account, so that no
/// bridge sends it back to its network. mautrix's name, kept for interplay: a mautrix bridge
/// on the same homeserver skips these events too, and ours skips theirs. Its value is the id
/// of the appservice that sent the event.
pub const DOUBLE_PUPPET_SOURCE: &str = "fi.mau.double_puppet_source";

/// What the kit keeps for double puppeting: a client per homeserver name (made once, from its
/// secret), and the rooms each user is known to be joined to.
#[derive(Default)]
pub(crate) struct Clients {
    by_server: Mutex<HashMap<String, HomeserverClient>>,
    joined: Mutex<HashSet<(OwnedUserId, OwnedRoomId)>>,
}

/// An event to send as a user's own account ([`BridgeHandle::send_as_own`]).
pub(crate) struct OwnEvent<'a, C> {
    room_id: &'a RoomId,
    event_type: MessageLikeEventType,
    content: &'a C,
    txn_id: OwnedTransactionId,
    ts: Option<MilliSecondsSinceUnixEpoch>,
}

impl<'a, C: Serialize> OwnEvent<'a, C> {
    /// `content` of type `event_type` into `room_id`, now, under a new transaction id.
    pub(crate) fn new(
        room_id: &'a RoomId,
        event_type: MessageLikeEventType,
        content: &'a C,
    ) -> Self {
        OwnEvent {
            room_id,
            event_type,
            content,
            txn_id: TransactionId::new(),
            ts: None,
        }
    }

    /// The same under `txn_id` (the same for each try of one remote message).
    pub(crate) fn txn_id(mut self, txn_id: OwnedTransactionId) -> Self {
        self.txn_id = txn_id;
        self
    }

    /// The same, at `ts` when given.
    pub(crate) fn ts(mut self, ts: Option<MilliSecondsSinceUnixEpoch>) -> Self {
        self.ts = ts;
        self
    }
}

/// A Matrix user with double puppeting on, and the client that acts as them.
pub(crate) struct DoublePuppet {
    pub(crate) user: OwnedUserId,
    client: HomeserverClient,
}

impl DoublePuppet {
    fn identity(&self) -> AppserviceUserIdentity<'_> {
        AppserviceUserIdentity::new(&self.user)
    }

    /// Checks that the token acts as this user: the homeserver must answer `whoami` with them.
    async fn whoami(&self) -> NetworkResult<()> {
        let answer = self
            .client
            .send(whoami::v3::Request::new(), self.identity())
            .await?;
        if answer.user_id != self.user {
            return Err(BridgeError::Forbidden(format!(
                "the homeserver says the token acts as {}",
                answer.user_id
            )));
        }
        Ok(())
    }

    async fn join(&self, room_id: &RoomId) -> trestle::Result<()> {
        self.client
            .send(
                join_room_by_id::v3::Request::new(room_id.to_owned()),
                self.identity(),
            )
            .await?;
        Ok(())
    }
}

/// The token in a secret `as_token:<token>`.
fn token_of(server: &str, secret: &str) -> NetworkResult<String> {
    match secret.strip_prefix("as_token:") {
        Some(token) if !token.is_empty() => Ok(token.to_owned()),
        _ => Err(BridgeError::Forbidden(format!(
            "the double puppeting secret for {server} is not `as_token:<token>` \
             (only the appservice method is supported)"
        ))),
    }
}

/// `content` with the double puppet marker, as the raw content of a message-like event.
fn marked<C: Serialize>(
    content: &C,
    source: &str,
) -> NetworkResult<Raw<AnyMessageLikeEventContent>> {
    let mut value = serde_json::to_value(content)?;
    if let Some(object) = value.as_object_mut() {
        object.insert(DOUBLE_PUPPET_SOURCE.to_owned(), source.into());
    }
    Ok(Raw::from_json(serde_json::value::to_raw_value(&value)?))
}

/// Whether an event's content carries the double puppet marker: sent by a bridge as a user's
/// own account, so already on the network.
pub(crate) fn is_double_puppeted(json: &serde_json::Value) -> bool {
    json["content"].get(DOUBLE_PUPPET_SOURCE).is_some()
}

impl<N: Network> BridgeHandle<N> {
    /// The client acting for the users of `server`, from its configured secret.
    fn double_puppet_client(&self, server: &str) -> NetworkResult<HomeserverClient> {
        if let Some(client) = self
            .shared
            .double_puppets
            .by_server
            .lock_unpoisoned()
            .get(server)
        {
            return Ok(client.clone());
        }
        let Some(secret) = self.config().double_puppet.get(server) else {
            return Err(BridgeError::Forbidden(format!(
                "double puppeting is not set up for {server} on this bridge"
            )));
        };
        let token = token_of(server, secret)?;
        let client = HomeserverClient::new(self.app()?.client().base_url(), token)?;
        self.shared
            .double_puppets
            .by_server
            .lock_unpoisoned()
            .insert(server.to_owned(), client.clone());
        Ok(client)
    }

    fn double_puppet_as(&self, user: &UserId) -> NetworkResult<DoublePuppet> {
        Ok(DoublePuppet {
            user: user.to_owned(),
            client: self.double_puppet_client(user.server_name().as_str())?,
        })
    }

    /// Whether `user` turned double puppeting on.
    pub async fn double_puppeting(&self, user: &UserId) -> NetworkResult<bool> {
        self.store()?.double_puppet_on(user.as_str()).await
    }

    /// Turns double puppeting on or off for `user`. Turning it on is refused
    /// ([`BridgeError::Forbidden`], with the reason) where the bridge has no secret for the
    /// user's homeserver or its token cannot act as them.
    pub async fn set_double_puppeting(&self, user: &UserId, on: bool) -> NetworkResult<()> {
        if on {
            let puppet = self.double_puppet_as(user)?;
            puppet.whoami().await.map_err(|error| {
                BridgeError::Forbidden(format!("the bridge cannot act as {user}: {error}"))
            })?;
        }
        self.store()?.set_double_puppet(user.as_str(), on).await?;
        Ok(())
    }

    /// The Matrix user with double puppeting on whose login is `remote`, ready to act.
    pub(crate) async fn double_puppet_for(
        &self,
        remote: &N::UserId,
    ) -> NetworkResult<Option<DoublePuppet>> {
        let store = self.store()?;
        let Some(user) = store.double_puppet_of_remote(&remote.to_string()).await? else {
            return Ok(None);
        };
        let user = UserId::parse(user)?;
        match self.double_puppet_as(&user) {
            Ok(puppet) => Ok(Some(puppet)),
            // The secret was taken out of the configuration since they turned it on.
            Err(BridgeError::Forbidden(reason)) => {
                self.double_puppet_lost(&user, &reason).await?;
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// Makes sure the user is in the room, once per process unless a send says otherwise:
    /// the bot invites them where they are not, then they join.
    async fn puppet_joined(&self, puppet: &DoublePuppet, room_id: &RoomId) -> NetworkResult<()> {
        let key = (puppet.user.clone(), room_id.to_owned());
        if self
            .shared
            .double_puppets
            .joined
            .lock_unpoisoned()
            .contains(&key)
        {
            return Ok(());
        }
        let membership = self.member_content(room_id, &puppet.user).await;
        if membership.as_ref().and_then(|m| m["membership"].as_str()) != Some("join") {
            // A portal may not be public (a linked room): the invite lets them in. One that
            // fails (they are invited already, or may join anyway) leaves the join to say.
            if let Err(error) = self.app()?.bot().invite(room_id, &puppet.user).await {
                tracing::debug!(%error, user = %puppet.user, %room_id, "invite before a double puppet join");
            }
            puppet.join(room_id).await?;
        }
        self.shared
            .double_puppets
            .joined
            .lock_unpoisoned()
            .insert(key);
        Ok(())
    }

    /// Sends `event` as the Matrix user whose login `sender` is, if they turned double
    /// puppeting on: the event's id, or `None` when their ghost is to send it (they did not, or
    /// acting as them failed).
    pub(crate) async fn send_as_own<C: Serialize>(
        &self,
        sender: &N::UserId,
        event: OwnEvent<'_, C>,
    ) -> NetworkResult<Option<OwnedEventId>> {
        let Some(puppet) = self.double_puppet_for(sender).await? else {
            return Ok(None);
        };
        match self.puppet_send(&puppet, event).await {
            Ok(event_id) => Ok(Some(event_id)),
            Err(error) => {
                self.double_puppet_failed(&puppet, error).await?;
                Ok(None)
            }
        }
    }

    /// Sends the event (marked) as the user, joining first where needed; a refusal (they left
    /// since) is tried once more after joining again.
    async fn puppet_send<C: Serialize>(
        &self,
        puppet: &DoublePuppet,
        event: OwnEvent<'_, C>,
    ) -> NetworkResult<OwnedEventId> {
        let body = marked(event.content, &self.app()?.registration().id)?;
        let room_id = event.room_id;
        let mut request = send_message_event::v3::Request::new_raw(
            room_id.to_owned(),
            event.txn_id,
            event.event_type,
            body,
        );
        request.timestamp = event.ts;
        self.puppet_joined(puppet, room_id).await?;
        match puppet.client.send(request.clone(), puppet.identity()).await {
            Err(error) if error.is_forbidden() => {
                self.forget_joined(puppet, room_id);
                self.puppet_joined(puppet, room_id).await?;
                Ok(puppet
                    .client
                    .send(request, puppet.identity())
                    .await?
                    .event_id)
            }
            sent => Ok(sent?.event_id),
        }
    }

    /// Redacts `event_id`, the Matrix event of the remote message `target` in the portal, as
    /// the Matrix user whose login `sender` is, if they turned double puppeting on; `false`
    /// when their ghost is to do it.
    pub(crate) async fn redact_as_own(
        &self,
        sender: &N::UserId,
        portal: &PortalRef<N>,
        target: &str,
        event_id: &EventId,
    ) -> NetworkResult<bool> {
        let Some(puppet) = self.double_puppet_for(sender).await? else {
            return Ok(false);
        };
        // Its echo from Matrix must find nothing to delete on the network, and a deletion has
        // no content to mark: the message leaves the map first, and comes back if this fails.
        let (store, chat) = (self.store()?, portal.chat.to_string());
        store.forget_message(&chat, target).await?;
        let txn_id = OwnedTransactionId::from(format!("bridge.redact.{event_id}"));
        let room_id = portal.room_id.clone();
        let request = redact_event::v3::Request::new(room_id, event_id.to_owned(), txn_id);
        match puppet.client.send(request, puppet.identity()).await {
            Ok(_) => Ok(true),
            Err(error) => {
                let room_id = portal.room_id.as_str();
                store
                    .map_message(&chat, target, room_id, event_id.as_str())
                    .await?;
                self.double_puppet_failed(&puppet, error.into()).await?;
                Ok(false)
            }
        }
    }

    fn forget_joined(&self, puppet: &DoublePuppet, room_id: &RoomId) {
        let key = (puppet.user.clone(), room_id.to_owned());
        self.shared
            .double_puppets
            .joined
            .lock_unpoisoned()
            .remove(&key);
    }

    /// Acting as the user failed: the caller lets the ghost speak instead. Where the homeserver
    /// says the token no longer acts as them (not just one send that failed), double puppeting
    /// is turned off for them and they are told, once.
    pub(crate) async fn double_puppet_failed(
        &self,
        puppet: &DoublePuppet,
        error: BridgeError,
    ) -> NetworkResult<()> {
        tracing::warn!(%error, user = %puppet.user, "double puppet send failed; the ghost sends");
        match puppet.whoami().await {
            Ok(()) => Ok(()),
            // The homeserver could not be asked (it is down, say): nothing shows that the token
            // stopped working, so it stays on.
            Err(BridgeError::Trestle(check)) if check.status().is_none() => Ok(()),
            Err(check) => {
                self.double_puppet_lost(&puppet.user, &check.to_string())
                    .await
            }
        }
    }

    async fn double_puppet_lost(&self, user: &UserId, reason: &str) -> NetworkResult<()> {
        if !self
            .store()?
            .set_double_puppet(user.as_str(), false)
            .await?
        {
            return Ok(());
        }
        tracing::warn!(%user, reason, "double puppeting turned off: the token cannot act");
        let protocol = self.network().protocol().displayname;
        let text = format!(
            "Double puppeting is off: the bridge can no longer act as you ({reason}). What you \
             send on {protocol} shows as your {protocol} ghost again; send `double-puppet on` \
             to try again."
        );
        // Telling them is a courtesy: what failed still goes out, as the ghost.
        if let Err(error) = self.notify(user, &text).await {
            tracing::warn!(%error, %user, "could not tell the user double puppeting is off");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap in a test is the test failing, with the error in its message.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_appservice_method_is_taken() {
        assert_eq!(token_of("example.org", "as_token:abc").unwrap(), "abc");
        for bad in ["abc", "as_token:", "shared_secret:abc"] {
            let error = token_of("example.org", bad).unwrap_err().to_string();
            assert!(error.contains("as_token:<token>"), "{bad}: {error}");
        }
    }

    #[test]
    fn marked_content_carries_the_source() {
        let content = ruma::events::room::message::RoomMessageEventContent::text_plain("hi");
        let raw = marked(&content, "toy").unwrap();
        let value: serde_json::Value = serde_json::from_str(raw.json().get()).unwrap();
        assert_eq!(value["body"], "hi");
        assert_eq!(value[DOUBLE_PUPPET_SOURCE], "toy");
        assert!(is_double_puppeted(&serde_json::json!({ "content": value })));
        assert!(!is_double_puppeted(
            &serde_json::json!({ "content": {"body": "hi"} })
        ));
    }
}
