//! One verification, driven from the request (or a start without one) to its end: accepted
//! for SAS, the emoji shown in the direct chat, confirmed or cancelled as the user says there,
//! cancelled when it takes too long.

use std::{future::Future, sync::Arc};

use futures_util::StreamExt;
use matrix_sdk_crypto::{
    CancelInfo, EmojiShortAuthString, Sas, SasState, VerificationRequest, VerificationRequestState,
    types::requests::{AnyOutgoingRequest, OutgoingVerificationRequest},
};
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedDeviceId, OwnedRoomId, OwnedUserId, TransactionId,
        events::{
            key::verification::{VerificationMethod, cancel::CancelCode},
            room::message::RoomMessageEventContent,
        },
    },
};

use super::{NO, Verifications, YES, cancel, dm};
use crate::{machine::Machine, requests};

/// Where a verification starts.
pub(super) enum Start {
    /// A request (`m.key.verification.request`), to accept.
    Request(VerificationRequest),
    /// A SAS the client started without a request.
    Sas(Box<Sas>),
}

/// How a verification ended.
enum Outcome {
    Verified,
    /// Cancelled by either side (the user's device, or the bot's machine: a mismatch, a step
    /// that took too long).
    Cancelled(CancelInfo),
    /// The user said the emoji differ.
    Rejected,
    TimedOut,
    /// A newer verification of the same user waits in the same room.
    Superseded,
    Failed(String),
}

/// A verification of the bot's device by `user`'s `device`.
pub(super) struct Flow {
    pub(super) verifications: Arc<Verifications>,
    pub(super) app: Appservice,
    pub(super) bot: Arc<Machine>,
    pub(super) user: OwnedUserId,
    pub(super) device: OwnedDeviceId,
    pub(super) flow_id: String,
}

/// Sends a verification message of the bot's machine as its device (to-device only: in-room
/// verification is not offered), then what the machine queued meanwhile.
pub(super) async fn send(
    app: &Appservice,
    bot: &Machine,
    request: OutgoingVerificationRequest,
) -> Result<()> {
    if let OutgoingVerificationRequest::ToDevice(request) = request {
        requests::send_to_device(app.client(), bot.olm(), &request).await?;
    }
    bot.send_requests(app).await
}

impl Flow {
    /// Drives the verification to its end and tells the user how it ended.
    pub(super) async fn drive(self, start: Start) {
        let mut room = None;
        let timeout = self.verifications.timeout;
        let outcome = tokio::select! {
            outcome = self.run(start, &mut room) => outcome,
            () = tokio::time::sleep(timeout) => Outcome::TimedOut,
            () = self.app.stopping() => {
                self.verifications.finished(&self.user, &self.flow_id);
                return;
            }
        };
        self.verifications.finished(&self.user, &self.flow_id);
        let (code, text) = match &outcome {
            Outcome::Verified => (
                None,
                format!(
                    "✅ Verified: your device {} and this bot's device {}.",
                    self.device,
                    self.bot.device_id()
                ),
            ),
            Outcome::Cancelled(info) if info.cancelled_by_us() => {
                (None, format!("Verification cancelled: {}", info.reason()))
            }
            Outcome::Cancelled(info) => (
                None,
                format!(
                    "Verification cancelled by your device {}: {}",
                    self.device,
                    info.reason()
                ),
            ),
            Outcome::Rejected => (
                None,
                "Verification cancelled: you said the emoji do not match. Nothing was verified."
                    .to_owned(),
            ),
            Outcome::TimedOut => (
                Some(CancelCode::Timeout),
                format!(
                    "Verification timed out after {} s; nothing was verified.",
                    timeout.as_secs()
                ),
            ),
            Outcome::Superseded => (Some(CancelCode::User), String::new()),
            Outcome::Failed(reason) => (
                Some(CancelCode::User),
                format!("Verification failed: {reason}"),
            ),
        };
        tracing::info!(user = %self.user, device = %self.device, flow_id = self.flow_id,
            outcome = text, "verification ended");
        if let Some(code) = code {
            let reason = match &outcome {
                Outcome::Superseded => "a newer verification took its place".to_owned(),
                _ => text.clone(),
            };
            let (app, bot) = (&self.app, &self.bot);
            cancel(
                app,
                bot,
                &self.user,
                &self.device,
                &self.flow_id,
                code,
                &reason,
            )
            .await;
        }
        if !text.is_empty() {
            self.say(&mut room, &text).await;
        }
    }

    async fn run(&self, start: Start, room: &mut Option<OwnedRoomId>) -> Outcome {
        let sas = match start {
            Start::Sas(sas) => *sas,
            Start::Request(request) => match self.transition(&request).await {
                Ok(sas) => sas,
                Err(outcome) => return outcome,
            },
        };
        match self.confirm(&sas, room).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    /// Accepts the request for SAS and waits until the client starts it.
    async fn transition(&self, request: &VerificationRequest) -> Result<Sas, Outcome> {
        let mut changes = std::pin::pin!(request.changes());
        if let Some(accept) = request.accept_with_methods(vec![VerificationMethod::SasV1]) {
            self.sent(send(&self.app, &self.bot, accept)).await?;
        }
        loop {
            match request.state() {
                VerificationRequestState::Transitioned { verification, .. } => {
                    return verification
                        .sas_v1()
                        .map(|sas| *sas)
                        .ok_or_else(|| Outcome::Failed("the client started no SAS".to_owned()));
                }
                VerificationRequestState::Cancelled(info) => return Err(Outcome::Cancelled(info)),
                VerificationRequestState::Done => {
                    return Err(Outcome::Failed(
                        "the request ended without a SAS".to_owned(),
                    ));
                }
                _ => {}
            }
            if changes.next().await.is_none() {
                return Err(Outcome::Failed("the request went away".to_owned()));
            }
        }
    }

    /// Accepts the SAS, shows its emoji once the keys are exchanged, and confirms or cancels
    /// as the user answers in the direct chat.
    async fn confirm(&self, sas: &Sas, room: &mut Option<OwnedRoomId>) -> Result<Outcome, Outcome> {
        let mut changes = std::pin::pin!(sas.changes());
        if !sas.we_started()
            && let Some(accept) = sas.accept()
        {
            self.sent(send(&self.app, &self.bot, accept)).await?;
        }
        let mut answer = None;
        let mut shown = false;
        loop {
            match sas.state() {
                SasState::KeysExchanged { emojis, decimals } if !shown => {
                    shown = true;
                    let here = self.room(room).await?;
                    let flow_id = &self.flow_id;
                    let user = self.user.clone();
                    answer = Some(self.verifications.wait_for_answer(here, user, flow_id));
                    let text = self.emoji_message(emojis.as_ref(), decimals);
                    self.say(room, &text).await;
                }
                SasState::Done { .. } => return Ok(Outcome::Verified),
                SasState::Cancelled(info) => return Ok(Outcome::Cancelled(info)),
                _ => {}
            }
            tokio::select! {
                change = changes.next() => if change.is_none() {
                    return Err(Outcome::Failed("the verification went away".to_owned()));
                },
                said = wait(&mut answer) => match said {
                    Some(true) => self.confirmed(sas).await?,
                    Some(false) => {
                        let code = CancelCode::MismatchedSas;
                        if let Some(cancel) = sas.cancel_with_code(code) {
                            self.sent(send(&self.app, &self.bot, cancel)).await?;
                        }
                        return Ok(Outcome::Rejected);
                    }
                    None => return Ok(Outcome::Superseded),
                },
            }
        }
    }

    /// The user said the emoji match: the bot sends its MAC, and signs what it verified.
    async fn confirmed(&self, sas: &Sas) -> Result<(), Outcome> {
        let (messages, signatures) = sas
            .confirm()
            .await
            .map_err(|e| Outcome::Failed(format!("the crypto store failed: {e}")))?;
        for message in messages {
            self.sent(send(&self.app, &self.bot, message)).await?;
        }
        if let Some(signatures) = signatures {
            let olm = self.bot.olm();
            let upload = AnyOutgoingRequest::SignatureUpload(signatures);
            let id = TransactionId::new();
            self.sent(requests::send(self.app.client(), olm, &id, &upload))
                .await?;
        }
        Ok(())
    }

    /// A sending that failed ends the verification.
    async fn sent(&self, sending: impl Future<Output = Result<()>>) -> Result<(), Outcome> {
        sending
            .await
            .map_err(|e| Outcome::Failed(format!("could not send to the homeserver: {e}")))
    }

    /// The direct chat with the user, found (or made) the first time it is needed.
    async fn room(&self, room: &mut Option<OwnedRoomId>) -> Result<OwnedRoomId, Outcome> {
        if let Some(room) = room {
            return Ok(room.clone());
        }
        match dm::room_with(&self.app, &self.user).await {
            Ok(found) => Ok(room.insert(found).clone()),
            Err(error) => Err(Outcome::Failed(format!(
                "no direct chat with {}: {error}",
                self.user
            ))),
        }
    }

    /// Tells the user `text` in the direct chat; a failure is only logged.
    async fn say(&self, room: &mut Option<OwnedRoomId>, text: &str) {
        let here = match self.room(room).await {
            Ok(here) => here,
            Err(_) => {
                tracing::warn!(user = %self.user, "no direct chat to tell the user: {text}");
                return;
            }
        };
        let notice = RoomMessageEventContent::notice_plain(text);
        if let Err(error) = self.app.bot().send(&here, &notice).queue().await {
            tracing::warn!(%error, room = %here, "could not tell the user about a verification");
        }
    }

    fn emoji_message(
        &self,
        emojis: Option<&EmojiShortAuthString>,
        decimals: (u16, u16, u16),
    ) -> String {
        let (a, b, c) = decimals;
        let compare = match emojis {
            Some(emojis) => {
                let emojis: Vec<String> = emojis
                    .emojis
                    .iter()
                    .map(|e| format!("{} {}", e.symbol, e.description))
                    .collect();
                format!(
                    "Check that your device shows these emoji, in this order:\n{}\n(or the numbers {a} {b} {c}).",
                    emojis.join("  ")
                )
            }
            None => format!("Check that your device shows these numbers: {a} {b} {c}."),
        };
        format!(
            "{} asked to verify this bot's device {} from their device {}. {compare}\n\
             If they match, say {YES} here (and confirm on your device); if not, say {NO}.",
            self.user,
            self.bot.device_id(),
            self.device
        )
    }
}

/// The user's answer, once one is awaited: `None` when a newer verification took its place.
async fn wait(answer: &mut Option<tokio::sync::oneshot::Receiver<bool>>) -> Option<bool> {
    match answer {
        Some(rx) => {
            let said = rx.await.ok();
            *answer = None;
            said
        }
        None => std::future::pending().await,
    }
}
