//! Late room keys: an encrypted event whose key is missing is set aside (see `pending`) and
//! handled again when the key comes, or reported in the room when it does not come in time.

use std::{sync::Arc, time::Duration};

use trestle::{
    Appservice, Result,
    ruma::{RoomId, events::room::message::RoomMessageEventContent},
    transaction::TimelineEvent,
};

use crate::{
    Crypto,
    machine::{Decrypted, Machine},
    pending::{self, Waiting},
};

impl Crypto {
    /// Sets aside an event whose room key is missing. Returns its decrypted form if the key
    /// turns out to have arrived meanwhile, else `None`: the event is routed as it is and comes
    /// back through the inbox when its key arrives.
    pub(crate) async fn wait_for_key(
        &self,
        app: &Appservice,
        machine: &Machine,
        event: &TimelineEvent,
    ) -> Option<trestle::encryption::Decrypted> {
        let remembered = match pending::session_id(event) {
            Some(session_id) => match self.table(app).await {
                Ok(()) => pending::remember(app, event, &session_id).await,
                Err(error) => Err(error),
            },
            None => {
                report(
                    app,
                    &event.room_id,
                    &event.event_id,
                    event.sender.as_str(),
                    "it is malformed",
                )
                .await;
                return None;
            }
        };
        if let Err(error) = remembered {
            tracing::warn!(%error, event_id = %event.event_id, "could not set aside an event");
            let reason = "its room key did not arrive";
            report(
                app,
                &event.room_id,
                &event.event_id,
                event.sender.as_str(),
                reason,
            )
            .await;
            return None;
        }
        // A key that arrived between the first attempt and the row being written found nothing
        // to redeliver: try once more now that the row is there.
        if let Decrypted::Event(json) = machine.decrypt(app, event, Duration::ZERO).await {
            return match pending::take(app, event.event_id.as_str()).await {
                Ok(true) => Some(json),
                // The key's arrival claimed the row and redelivers the event.
                Ok(false) => None,
                Err(error) => {
                    // The row stays; the sweep finds the key there and redelivers.
                    tracing::warn!(%error, "could not forget a waiting event");
                    None
                }
            };
        }
        tracing::info!(event_id = %event.event_id, room_id = %event.room_id,
            "the room key of an event is missing; it waits for the key");
        None
    }

    /// Room keys of `sessions` arrived: the events waiting for them are handled again.
    pub(crate) async fn keys_arrived(&self, app: &Appservice, sessions: &[String]) {
        let redelivered = match self.table(app).await {
            Ok(()) => pending::keys_arrived(app, sessions).await,
            Err(error) => Err(error),
        };
        if let Err(error) = redelivered {
            // The rows stay; the sweep redelivers them once it sees they decrypt.
            tracing::warn!(%error, "could not hand back events whose room key arrived");
        }
    }

    /// Reports the events whose key did not come within the timeout, every so often, until
    /// the appservice stops.
    pub(crate) async fn sweep_late_keys(self: Arc<Self>, app: Appservice) -> Result<()> {
        let every =
            (self.key_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = app.stopping() => return Ok(()),
            }
            // Nothing waits before the bot's machine is set up.
            let Some(machine) = self.machine.get() else {
                continue;
            };
            self.table(&app).await?;
            let cutoff = pending::now_ms() - self.key_timeout.as_millis() as i64;
            for event in pending::overdue(&app, cutoff).await? {
                self.settle(&app, machine, &event).await?;
            }
        }
    }

    /// Finishes an overdue or half-handled event: redelivered if its key is here after all
    /// (it arrived while a crash kept it from being handed back), else reported.
    async fn settle(&self, app: &Appservice, machine: &Machine, event: &Waiting) -> Result<()> {
        if event.is_waiting() {
            if machine.decrypts(&event.room_id, &event.event).await {
                if pending::claim_for_redelivery(app, event).await? {
                    pending::redeliver(app, event).await?;
                }
                return Ok(());
            }
            if !pending::claim_for_report(app, event).await? {
                return Ok(());
            }
        } else if !event.is_reporting() {
            return pending::redeliver(app, event).await;
        }
        let seconds = self.key_timeout.as_secs_f64();
        let reason = format!("its room key did not arrive within {seconds} s");
        let (Ok(room_id), Ok(event_id)) = (
            <&RoomId>::try_from(event.room_id.as_str()),
            trestle::ruma::EventId::parse(&event.event_id),
        ) else {
            return pending::forget(app, event).await;
        };
        report(app, room_id, &event_id, &event.sender, &reason).await;
        pending::forget(app, event).await
    }
}

/// Tells the room that an event could not be decrypted, as mautrix bridges do, so its sender
/// knows it was not acted on. Queued, not awaited: the room's queue moves on.
pub(crate) async fn report(
    app: &Appservice,
    room_id: &RoomId,
    event_id: &trestle::ruma::EventId,
    sender: &str,
    reason: &str,
) {
    let notice = RoomMessageEventContent::notice_plain(format!(
        "Could not decrypt the message {event_id} from {sender}: {reason}."
    ));
    if let Err(error) = app.bot().send(room_id, &notice).queue().await {
        tracing::warn!(%error, "could not report an undecryptable event");
    }
}
