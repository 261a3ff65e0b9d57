//! Answering the event being handled without naming its room, id and sender again.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#rich-replies>

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    events::{relation::Thread, room::message::RoomMessageEventContent},
};
use serde::Deserialize;

use super::{EventContext, FromEventContext, Rejection};
use crate::{
    Intent,
    intent::{Outgoing, reply_content},
};

/// An answer to the event being handled: a [rich reply] to it, sent as the plugin's bot in
/// the event's room, mentioning its sender, and inside the event's [thread] when it is in
/// one — what maubot's `evt.reply` does. Await what it sends for the new event's id, or
/// [`queue`](Outgoing::queue) it.
///
/// As an extractor it takes any timeline event; items of no room (to-device events,
/// device lists, ephemeral events) skip the handler.
///
/// ```
/// use trestle::router::{Command, Reply};
///
/// async fn ping(_: Command, reply: Reply) -> trestle::Result<()> {
///     reply.text("pong").await?;
///     Ok(())
/// }
/// ```
///
/// [rich reply]: https://spec.matrix.org/v1.16/client-server-api/#rich-replies
/// [thread]: https://spec.matrix.org/v1.16/client-server-api/#threading
#[derive(Clone, Debug)]
pub struct Reply {
    intent: Intent,
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    sender: OwnedUserId,
    thread: Option<Thread>,
}

/// The part of an event that says which thread it is in. Read loosely: a malformed relation
/// only means the answer is not threaded, never that the bot stays silent.
#[derive(Deserialize)]
struct Relation {
    rel_type: Option<String>,
    event_id: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(rename = "m.relates_to")]
    relates_to: Option<Relation>,
}

#[derive(Deserialize)]
struct Related {
    content: Content,
}

fn thread_of(json: &str) -> Option<Thread> {
    let relation = serde_json::from_str::<Related>(json)
        .ok()?
        .content
        .relates_to?;
    match (relation.rel_type.as_deref(), relation.event_id) {
        (Some("m.thread"), Some(root)) => Some(Thread::without_fallback(root)),
        _ => None,
    }
}

impl Reply {
    /// Answers with plain text (`m.text`).
    pub fn text(&self, text: &str) -> Outgoing {
        self.send(RoomMessageEventContent::text_plain(text))
    }

    /// Answers with any message content: a notice, HTML, an image.
    pub fn send(&self, content: RoomMessageEventContent) -> Outgoing {
        let content = reply_content(&self.event_id, &self.sender, self.thread.as_ref(), content);
        self.intent.send(&self.room_id, &content)
    }

    /// The same answer from another of the appservice's users, such as a ghost.
    pub fn as_user(self, intent: Intent) -> Self {
        Reply { intent, ..self }
    }

    /// The room the answer goes to: the event's.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The event answered.
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }
}

impl<S> FromEventContext<S> for Reply {
    fn from_event_context(ctx: &EventContext, _: &S) -> Result<Self, Rejection> {
        let crate::transaction::Incoming::Timeline(event) = ctx.incoming() else {
            return Err(Rejection::Skip);
        };
        Ok(Reply {
            intent: ctx.appservice().bot(),
            room_id: event.room_id.clone(),
            event_id: event.event_id.clone(),
            sender: event.sender.clone(),
            thread: thread_of(event.json.get()),
        })
    }
}

#[cfg(test)]
mod tests;
