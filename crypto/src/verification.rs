//! Interactive verification of the bot's device: a user's client asks to verify it with a
//! short authentication string (SAS, `m.key.verification.*` over to-device), the bot shows the
//! emoji and numbers in a direct chat with the user, and confirms only when the user says so
//! there (`!verify yes`; `!verify no` cancels). Requests from users the settings do not allow
//! are declined.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#device-verification>

mod dm;
mod flow;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use matrix_sdk_crypto::{Verification, types::requests::ToDeviceRequest};
use serde::Deserialize;
use trestle::{
    Appservice,
    ruma::{
        DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, ServerName, UserId,
        events::{
            AnyToDeviceEventContent,
            key::verification::cancel::{CancelCode, ToDeviceKeyVerificationCancelEventContent},
        },
        serde::Raw,
    },
    sync::MutexExt,
    transaction::{Incoming, ToDeviceEvent},
};
use trestle_policy::glob;

use crate::{machine::Machine, requests};

/// What a user says in the direct chat to confirm that the emoji match, and to say they do not.
pub(crate) const YES: &str = "!verify yes";
pub(crate) const NO: &str = "!verify no";

/// The verifications of the bot's device under way, and who may start one.
pub(crate) struct Verifications {
    /// Globs of the users who may verify the bot; `None`: those of its own homeserver.
    users: Option<Vec<String>>,
    /// How long a verification may take in all.
    timeout: Duration,
    /// The flows being driven, by user and flow id: each is driven once.
    active: Mutex<HashSet<(OwnedUserId, String)>>,
    /// Verifications showing their emoji, waiting for the user's answer in a room, by room and
    /// user.
    waiting: Mutex<HashMap<(OwnedRoomId, OwnedUserId), Waiting>>,
}

/// A verification waiting for its user's answer: its flow id, and where the answer goes.
type Waiting = (String, tokio::sync::oneshot::Sender<bool>);

/// The first event of a verification: a request, or a start that came without one.
#[derive(Deserialize)]
struct Opening {
    content: OpeningContent,
}

#[derive(Deserialize)]
struct OpeningContent {
    transaction_id: String,
    from_device: OwnedDeviceId,
}

const REQUEST: &str = "m.key.verification.request";
const START: &str = "m.key.verification.start";

impl Verifications {
    pub(crate) fn new(users: Option<Vec<String>>, timeout: Duration) -> Verifications {
        Verifications {
            users,
            timeout,
            active: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    /// Whether `user` may verify the bot of the homeserver `server`.
    fn allows(&self, server: &ServerName, user: &UserId) -> bool {
        match &self.users {
            None => user.server_name() == server,
            Some(globs) => globs.iter().any(|g| glob::matches(g, user.as_str())),
        }
    }

    /// The flow a to-device event opens for the bot: its sender, device and flow id.
    fn opening<'e>(
        &self,
        bot: &Machine,
        event: &'e ToDeviceEvent,
    ) -> Option<(&'e UserId, OwnedDeviceId, String)> {
        if !matches!(event.event_type.as_str(), REQUEST | START)
            || event.to_user_id != bot.olm().user_id()
            || event.to_device_id != bot.device_id()
        {
            return None;
        }
        let opening: Opening = serde_json::from_str(event.json.get()).ok()?;
        let sender: &UserId = &event.sender;
        let flow_id = opening.content.transaction_id;
        // A start that follows a request belongs to the request's flow.
        if event.event_type == START
            && bot
                .olm()
                .get_verification_request(sender, &flow_id)
                .is_some()
        {
            return None;
        }
        Some((sender, opening.content.from_device, flow_id))
    }

    /// Before the bot's machine takes in a to-device event: the machine ignores a request from
    /// a device whose keys it does not have, so an allowed user's are fetched first.
    pub(crate) async fn prepare(&self, app: &Appservice, bot: &Machine, event: &ToDeviceEvent) {
        let Some((sender, device, _)) = self.opening(bot, event) else {
            return;
        };
        if !self.allows(app.server_name(), sender) {
            return;
        }
        let olm = bot.olm();
        if let Ok(Some(_)) = olm.get_device(sender, &device, None).await {
            return;
        }
        let fetched = async {
            olm.update_tracked_users([sender])
                .await
                .map_err(requests::error)?;
            let (id, query) = olm.query_keys_for_users([sender]);
            requests::send(app.client(), olm, &id, &query.into()).await
        };
        if let Err(error) = fetched.await {
            tracing::warn!(%error, user = %sender, "could not fetch the keys of a user asking for verification");
        }
    }

    /// After the bot's machine took in a to-device event: a new verification is driven, or
    /// declined when its user is not allowed.
    pub(crate) async fn opened(
        self: &Arc<Self>,
        app: &Appservice,
        bot: &Arc<Machine>,
        event: &ToDeviceEvent,
    ) {
        let Some((sender, device, flow_id)) = self.opening(bot, event) else {
            return;
        };
        if !self.allows(app.server_name(), sender) {
            tracing::info!(user = %sender, "declined a verification request: the user is not allowed");
            let reason = format!("{} does not verify with {sender}", app.bot_user_id());
            decline(app, bot, sender, &device, &flow_id, &reason).await;
            return;
        }
        let olm = bot.olm();
        let start = match event.event_type.as_str() {
            REQUEST => olm
                .get_verification_request(sender, &flow_id)
                .map(flow::Start::Request),
            _ => match olm.get_verification(sender, &flow_id) {
                Some(Verification::SasV1(sas)) => Some(flow::Start::Sas(sas)),
                _ => None,
            },
        };
        let Some(start) = start else {
            // Its keys could not be fetched, or the request is too old: the client would wait.
            tracing::warn!(user = %sender, %device, flow_id,
                "a verification the machine did not take (unknown device, or too old)");
            let reason = format!(
                "{} could not take the request of device {device}",
                app.bot_user_id()
            );
            decline(app, bot, sender, &device, &flow_id, &reason).await;
            return;
        };
        if !self
            .active
            .lock_unpoisoned()
            .insert((sender.to_owned(), flow_id.clone()))
        {
            return;
        }
        let flow = flow::Flow {
            verifications: self.clone(),
            app: app.clone(),
            bot: bot.clone(),
            user: sender.to_owned(),
            device,
            flow_id,
        };
        tokio::spawn(flow.drive(start));
    }

    /// Waits for `user`'s answer in `room` to the verification `flow_id`. A newer verification
    /// waiting in the same room for the same user replaces it (its receiver then closes).
    fn wait_for_answer(
        &self,
        room: OwnedRoomId,
        user: OwnedUserId,
        flow_id: &str,
    ) -> tokio::sync::oneshot::Receiver<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting
            .lock_unpoisoned()
            .insert((room, user), (flow_id.to_owned(), tx));
        rx
    }

    /// A flow ended: it waits for nothing any more.
    fn finished(&self, user: &UserId, flow_id: &str) {
        self.waiting
            .lock_unpoisoned()
            .retain(|(_, u), (f, _)| !(u == user && f == flow_id));
        self.active
            .lock_unpoisoned()
            .remove(&(user.to_owned(), flow_id.to_owned()));
    }

    /// Takes `!verify yes` or `!verify no` from a user whose verification waits for it in that
    /// room; anything else, and these words where nothing waits, go to the plugin's handlers.
    pub(crate) fn take_answer(&self, item: &Incoming) -> bool {
        let Incoming::Timeline(event) = item else {
            return false;
        };
        if event.event_type != "m.room.message" {
            return false;
        }
        let key = (event.room_id.clone(), event.sender.clone());
        // Every message passes here: parse the body only where an answer is awaited.
        let mut waiting = self.waiting.lock_unpoisoned();
        if !waiting.contains_key(&key) {
            return false;
        }
        let Some(answer) = answer(event.json.get()) else {
            return false;
        };
        let Some((flow_id, tx)) = waiting.remove(&key) else {
            return false;
        };
        drop(waiting);
        tracing::info!(user = %event.sender, flow_id, answer, "verification answered");
        // The flow may have just ended; the answer is taken all the same.
        let _ = tx.send(answer);
        true
    }
}

/// `Some(true)` for a message saying [`YES`], `Some(false)` for [`NO`] (in any case, spaces
/// aside).
fn answer(json: &str) -> Option<bool> {
    #[derive(Deserialize)]
    struct Message {
        content: Content,
    }
    #[derive(Deserialize)]
    struct Content {
        body: String,
    }
    let message: Message = serde_json::from_str(json).ok()?;
    let words: Vec<String> = message
        .content
        .body
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let said = words.join(" ");
    match said.as_str() {
        YES => Some(true),
        NO => Some(false),
        _ => None,
    }
}

/// Cancels the verification `flow_id` of `user`'s `device` with `code`: through its SAS when
/// there is one (which cancels its request too), else with a cancel event of the bot's own,
/// which says `reason`, the machine's request (if any) marked cancelled without sending.
/// Cancels a verification the bot does not take, with `m.user` and `reason`.
async fn decline(
    app: &Appservice,
    bot: &Machine,
    user: &UserId,
    device: &DeviceId,
    flow_id: &str,
    reason: &str,
) {
    cancel(app, bot, user, device, flow_id, CancelCode::User, reason).await;
}

async fn cancel(
    app: &Appservice,
    bot: &Machine,
    user: &UserId,
    device: &DeviceId,
    flow_id: &str,
    code: CancelCode,
    reason: &str,
) {
    let olm = bot.olm();
    let sent = if let Some(Verification::SasV1(sas)) = olm.get_verification(user, flow_id) {
        match sas.cancel_with_code(code) {
            Some(request) => flow::send(app, bot, request).await,
            None => Ok(()),
        }
    } else {
        if let Some(request) = olm.get_verification_request(user, flow_id) {
            drop(request.cancel());
        }
        let content =
            ToDeviceKeyVerificationCancelEventContent::new(flow_id.into(), reason.to_owned(), code);
        match Raw::new(&AnyToDeviceEventContent::KeyVerificationCancel(content)) {
            Ok(content) => {
                let request = ToDeviceRequest::new(
                    user,
                    device.to_owned(),
                    "m.key.verification.cancel",
                    content,
                );
                requests::send_to_device(app.client(), olm, &request).await
            }
            Err(e) => Err(e.into()),
        }
    };
    if let Err(error) = sent {
        tracing::warn!(%error, %user, flow_id, "could not cancel a verification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_homeserver_by_default_else_the_globs() {
        let server = <&ServerName>::try_from("example.org").unwrap();
        let allows = |users: Option<Vec<&str>>, user: &str| {
            let users = users.map(|u| u.into_iter().map(str::to_owned).collect());
            let verifications = Verifications::new(users, Duration::from_secs(1));
            verifications.allows(server, <&UserId>::try_from(user).unwrap())
        };
        assert!(allows(None, "@alice:example.org"));
        assert!(!allows(None, "@alice:example.org.evil"));
        assert!(!allows(None, "@alice:other.org"));
        let admins = Some(vec!["@admin-*:example.org", "@*:trusted.org"]);
        assert!(allows(admins.clone(), "@admin-1:example.org"));
        assert!(allows(admins.clone(), "@anyone:trusted.org"));
        assert!(!allows(admins, "@alice:example.org"));
        assert!(!allows(Some(vec![]), "@alice:example.org"));
    }

    #[test]
    fn answers_are_the_two_commands_in_any_case() {
        let said = |body: &str| {
            answer(&serde_json::json!({"content": {"msgtype": "m.text", "body": body}}).to_string())
        };
        assert_eq!(said("!verify yes"), Some(true));
        assert_eq!(said("  !Verify   YES "), Some(true));
        assert_eq!(said("!verify no"), Some(false));
        assert_eq!(said("!verify"), None);
        assert_eq!(said("!verify yes please"), None);
        assert_eq!(said("yes"), None);
        assert_eq!(answer("{\"content\": {}}"), None);
    }
}
