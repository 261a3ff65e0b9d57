//! Hooks for end-to-end encryption, implemented outside the framework (crate
//! `trestle-crypto`) so that plugins without encryption never build a crypto library.
//!
//! The framework calls an installed [`Encryption`] at three points: with each transaction's
//! to-device events and MSC3202 device-list and key-count data, with each timeline event before
//! it is routed (so an `m.room.encrypted` event reaches handlers decrypted), and with each room
//! message before it is sent (so it is encrypted in encrypted rooms). Last, before routing, it
//! may take an item as its own, which handlers then never see (a user's answer to an
//! interactive verification).
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#end-to-end-encryption>,
//! MSC2409 (to-device events for appservices), MSC3202 (device lists and key counts).
//!
//! A decrypted event comes with its sender's [`SenderTrust`], which handlers take as an
//! extractor (`Option<SenderTrust>`: `None` for an event that was not encrypted).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use crate::{
    Appservice, Result,
    transaction::{Incoming, TimelineEvent},
};

/// An outgoing room event: its type and content.
#[derive(Debug)]
pub struct Outgoing {
    /// The event type, such as `m.room.message`.
    pub event_type: String,
    /// The content.
    pub content: Box<RawValue>,
}

/// How far the device that sent a decrypted event is trusted, by cross-signing: whether its
/// owner's self-signing key signed it, and whether the owner's identity is verified by the
/// receiving user. Ordered from least to most trusted.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#cross-signing>; MSC4153 (clients
/// that show or decrypt only cross-signed devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SenderTrust {
    /// The sending device is not known (its keys could not be fetched), so its signatures
    /// cannot be checked.
    Unknown,
    /// The sending device is not signed by its owner's self-signing key, or its owner has no
    /// cross-signing identity.
    NotCrossSigned,
    /// The device is cross-signed by its owner's identity, which the receiving user has not
    /// verified (or verified once, before the identity changed).
    CrossSigned,
    /// The device is cross-signed by its owner's identity, and the receiving user verified that
    /// identity ([key verification](https://spec.matrix.org/v1.16/client-server-api/#device-verification)).
    Verified,
}

/// A timeline event decrypted by [`Encryption::timeline`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Decrypted {
    /// The decrypted event's JSON, routed instead of the encrypted one.
    pub json: Box<RawValue>,
    /// How far its sender's device is trusted.
    pub trust: SenderTrust,
}

impl Decrypted {
    /// The decrypted event `json`, sent from a device trusted as far as `trust`.
    pub fn new(json: Box<RawValue>, trust: SenderTrust) -> Decrypted {
        Decrypted { json, trust }
    }
}

/// What a host's configuration says about a plugin's encryption, handed to the encryption it
/// installs (`plugins.<name>.encryption` in the `trestle` host's file).
#[derive(Clone)]
#[non_exhaustive]
pub struct EncryptionOptions {
    /// Decrypt and hand to handlers messages from devices that are not cross-signed by their
    /// owner (true, like Element's default). When false, their events reach handlers still
    /// encrypted, and the bot says in the room that it did not decrypt them.
    pub accept_unsigned_devices: bool,
    /// Who may verify the bot's device interactively: globs of user ids (`*`, `?`); `None`,
    /// the default, for the users of the appservice's own homeserver.
    pub verify_users: Option<Vec<String>>,
    /// The recovery key of the bot's key backup, as clients show it (base58). With it the
    /// bot's room keys are backed up on the homeserver
    /// ([server-side key backups](https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups))
    /// and restored from there on an empty crypto store; `None`: no backup.
    pub recovery_key: Option<String>,
}

impl Default for EncryptionOptions {
    fn default() -> Self {
        EncryptionOptions {
            accept_unsigned_devices: true,
            verify_users: None,
            recovery_key: None,
        }
    }
}

impl std::fmt::Debug for EncryptionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recovery_key = self.recovery_key.as_ref().map(|_| "<secret>");
        f.debug_struct("EncryptionOptions")
            .field("accept_unsigned_devices", &self.accept_unsigned_devices)
            .field("verify_users", &self.verify_users)
            .field("recovery_key", &recovery_key)
            .finish()
    }
}

/// End-to-end encryption for an appservice, installed with [`crate::Router::encryption`].
pub trait Encryption: Send + Sync + 'static {
    /// Takes in a to-device event or an MSC3202 update ([`Incoming::ToDevice`],
    /// [`Incoming::DeviceLists`]) before handlers see it.
    fn receive<'a>(&'a self, app: &'a Appservice, item: &'a Incoming) -> BoxFuture<'a, ()>;

    /// Called with each timeline event that is about to be routed.
    /// Returns the event to route instead (the decrypted event of an `m.room.encrypted` one,
    /// with its sender's trust), or `None` to route the event as it is.
    fn timeline<'a>(
        &'a self,
        app: &'a Appservice,
        event: &'a TimelineEvent,
    ) -> BoxFuture<'a, Option<Decrypted>>;

    /// Called with each item after the other hooks (a timeline event decrypted where it could
    /// be), before it is routed. Returns `true` when the encryption took the item as its own
    /// and no handler is to see it, such as a user's answer to an interactive verification the
    /// bot is waiting for. The default takes nothing.
    fn takes<'a>(&'a self, app: &'a Appservice, item: &'a Incoming) -> BoxFuture<'a, bool> {
        let _ = (app, item);
        Box::pin(async { false })
    }

    /// Called before `sender` sends a room event. Returns the event to send instead (an
    /// `m.room.encrypted` one in an encrypted room), or `None` to send it as it is. An error
    /// fails the send: an event meant for an encrypted room is never sent in plaintext.
    fn encrypt<'a>(
        &'a self,
        app: &'a Appservice,
        sender: &'a UserId,
        room_id: &'a RoomId,
        event: &'a Outgoing,
    ) -> BoxFuture<'a, Result<Option<Outgoing>>>;
}

/// The installed encryption, if any.
pub(crate) type EncryptionHook = Option<Arc<dyn Encryption>>;

impl Appservice {
    /// The encryption installed on the router, if any.
    pub fn encryption(&self) -> Option<&Arc<dyn Encryption>> {
        self.inner.router.options.hooks.encryption.as_ref()
    }

    /// Offers `item` to the installed encryption: to-device and MSC3202 items are taken in,
    /// and a timeline event is replaced by its decrypted form where there is one, which comes
    /// with its sender's trust.
    pub(crate) async fn offer_to_encryption(
        &self,
        item: Arc<Incoming>,
    ) -> (Arc<Incoming>, Option<SenderTrust>) {
        let Some(encryption) = self.encryption() else {
            return (item, None);
        };
        match &*item {
            Incoming::ToDevice(_) | Incoming::DeviceLists(_) => {
                encryption.receive(self, &item).await;
                (item, None)
            }
            Incoming::Timeline(event) => match encryption.timeline(self, event).await {
                Some(decrypted) => match Incoming::from_stored("timeline", decrypted.json.get()) {
                    Ok(event) => (Arc::new(event), Some(decrypted.trust)),
                    Err(error) => {
                        tracing::warn!(%error, "a decrypted event is malformed; routing it encrypted");
                        (item, None)
                    }
                },
                None => (item, None),
            },
            _ => (item, None),
        }
    }

    /// Whether the installed encryption takes `item` as its own (see [`Encryption::takes`]).
    pub(crate) async fn taken_by_encryption(&self, item: &Incoming) -> bool {
        match self.encryption() {
            Some(encryption) => encryption.takes(self, item).await,
            None => false,
        }
    }

    /// Hands a room event about to be sent to the installed encryption.
    pub(crate) async fn encrypt_outgoing(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        event_type: &str,
        content: &RawValue,
    ) -> Result<Option<Outgoing>> {
        let Some(encryption) = self.encryption() else {
            return Ok(None);
        };
        let event = Outgoing {
            event_type: event_type.to_owned(),
            content: content.to_owned(),
        };
        encryption.encrypt(self, sender, room_id, &event).await
    }
}

#[cfg(test)]
mod tests {
    use ruma::events::room::message::RoomMessageEventContent;
    use serde_json::json;

    use super::*;
    use crate::{
        Router,
        router::Event,
        testing::{MockHomeserver, deliver},
    };

    /// "Encrypts" by reversing the body, keeping the type so the mock homeserver records it.
    struct Reverse;

    fn reversed(body: &str) -> String {
        body.chars().rev().collect()
    }

    impl Encryption for Reverse {
        fn receive<'a>(&'a self, _: &'a Appservice, _: &'a Incoming) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }

        fn timeline<'a>(
            &'a self,
            _: &'a Appservice,
            event: &'a TimelineEvent,
        ) -> BoxFuture<'a, Option<Decrypted>> {
            Box::pin(async move {
                if event.event_type != "m.room.encrypted" {
                    return None;
                }
                let mut json: serde_json::Value = serde_json::from_str(event.json.get()).ok()?;
                let body = reversed(json["content"]["ciphertext"].as_str()?);
                // The sender's device id says how far the test trusts it.
                let trust = match json["content"]["device_id"].as_str() {
                    Some("SIGNED") => SenderTrust::CrossSigned,
                    _ => SenderTrust::NotCrossSigned,
                };
                json["type"] = json!("m.room.message");
                json["content"] = json!({"msgtype": "m.text", "body": body});
                let json = serde_json::value::to_raw_value(&json).ok()?;
                Some(Decrypted::new(json, trust))
            })
        }

        /// Takes the decrypted messages that say `mine`.
        fn takes<'a>(&'a self, _: &'a Appservice, item: &'a Incoming) -> BoxFuture<'a, bool> {
            Box::pin(async move {
                let Incoming::Timeline(event) = item else {
                    return false;
                };
                let json: serde_json::Value = serde_json::from_str(event.json.get()).unwrap();
                json["content"]["body"] == "mine"
            })
        }

        fn encrypt<'a>(
            &'a self,
            _: &'a Appservice,
            _: &'a UserId,
            _: &'a RoomId,
            event: &'a Outgoing,
        ) -> BoxFuture<'a, Result<Option<Outgoing>>> {
            Box::pin(async move {
                let content: serde_json::Value = serde_json::from_str(event.content.get())?;
                let body = reversed(content["body"].as_str().unwrap_or_default());
                let content = json!({"msgtype": "m.text", "body": body});
                Ok(Some(Outgoing {
                    event_type: event.event_type.clone(),
                    content: serde_json::value::to_raw_value(&content)?,
                }))
            })
        }
    }

    #[tokio::test]
    async fn handlers_see_decrypted_events_with_their_trust_not_those_taken_and_sends_are_encrypted()
     {
        async fn repeat(
            message: Event<RoomMessageEventContent>,
            trust: Option<SenderTrust>,
            app: Appservice,
        ) -> Result<()> {
            let body = format!("you said {} ({trust:?})", message.content.body());
            app.bot().send_text(&message.room_id, &body).await?;
            Ok(())
        }
        let hs = MockHomeserver::start(json!({}), json!({})).await;
        let registration =
            trestle_registration::Registration::generate("t", None, "bot", "t_", "x");
        let app = Appservice::builder(registration, hs.url.clone(), "x")
            .router(Router::new().encryption(Arc::new(Reverse)).on(repeat))
            .build()
            .await
            .unwrap();
        let encrypted = |id: &str, device: &str| {
            json!({"type": "m.room.encrypted", "room_id": "!r:x", "sender": "@u:x",
                "event_id": id, "origin_server_ts": 1,
                "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "olleh",
                    "device_id": device}})
        };
        let plain = json!({"type": "m.room.message", "room_id": "!r:x", "sender": "@u:x",
            "event_id": "$3", "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "plain"}});
        // The encryption takes this one: no handler sees it.
        let taken = json!({"type": "m.room.message", "room_id": "!r:x", "sender": "@u:x",
            "event_id": "$4", "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "mine"}});
        let events = vec![
            encrypted("$1", "SIGNED"),
            encrypted("$2", "OTHER"),
            taken,
            plain,
        ];
        deliver(&app, events).await;
        assert_eq!(
            hs.bodies(),
            [
                reversed("you said hello (Some(CrossSigned))"),
                reversed("you said hello (Some(NotCrossSigned))"),
                reversed("you said plain (None)"),
            ]
        );
    }
}
