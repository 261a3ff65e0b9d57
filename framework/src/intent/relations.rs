//! Replies, edits, reactions and threads, with the relation shapes the spec gives them.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#forming-relationships-between-events>

use ruma::{
    EventId, OwnedEventId, RoomId, UserId,
    events::{
        reaction::ReactionEventContent,
        relation::{Annotation, Thread},
        room::message::{
            AddMentions, ForwardThread, ReplacementMetadata, ReplyMetadata, ReplyWithinThread,
            RoomMessageEventContent,
        },
    },
};

use super::Intent;
use crate::Result;

/// `content` made a rich reply to `event_id` (sent by `sender`), mentioning the sender. In a
/// thread it stays there, as a genuine reply (`is_falling_back: false`), not as the fallback
/// that a plain thread message carries for clients without threads.
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#replies-within-threads>
pub(crate) fn reply_content(
    event_id: &EventId,
    sender: &UserId,
    thread: Option<&Thread>,
    content: RoomMessageEventContent,
) -> RoomMessageEventContent {
    let metadata = ReplyMetadata::new(event_id, sender, thread);
    match thread {
        Some(_) => content.make_for_thread(metadata, ReplyWithinThread::Yes, AddMentions::Yes),
        None => content.make_reply_to(metadata, ForwardThread::No, AddMentions::Yes),
    }
}

impl Intent {
    /// Replies to `event_id` (sent by `sender`) with `content`, mentioning the sender. A reply
    /// to an event in a thread stays in that thread.
    pub async fn reply(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        sender: &UserId,
        thread: Option<&Thread>,
        content: RoomMessageEventContent,
    ) -> Result<OwnedEventId> {
        let content = reply_content(event_id, sender, thread, content);
        self.send(room_id, &content).await
    }

    /// Replies with plain text.
    pub async fn reply_text(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        sender: &UserId,
        text: &str,
    ) -> Result<OwnedEventId> {
        self.reply(
            room_id,
            event_id,
            sender,
            None,
            RoomMessageEventContent::text_plain(text),
        )
        .await
    }

    /// Replaces the content of an earlier message (an edit, `m.replace`).
    pub async fn edit(
        &self,
        room_id: &RoomId,
        original: &EventId,
        new_content: RoomMessageEventContent,
    ) -> Result<OwnedEventId> {
        let content =
            new_content.make_replacement(ReplacementMetadata::new(original.to_owned(), None));
        self.send(room_id, &content).await
    }

    /// Reacts to an event with `key` (an emoji, usually).
    pub async fn react(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        key: &str,
    ) -> Result<OwnedEventId> {
        let content =
            ReactionEventContent::new(Annotation::new(event_id.to_owned(), key.to_owned()));
        self.send(room_id, &content).await
    }

    /// Sends `content` in the thread whose root is `thread_root`; `latest` is the event the
    /// message follows (for clients without thread support), sent by `latest_sender`.
    pub async fn send_in_thread(
        &self,
        room_id: &RoomId,
        thread_root: &EventId,
        latest: &EventId,
        latest_sender: &UserId,
        content: RoomMessageEventContent,
    ) -> Result<OwnedEventId> {
        let thread = Thread::plain(thread_root.to_owned(), latest.to_owned());
        let content = content.make_for_thread(
            ReplyMetadata::new(latest, latest_sender, Some(&thread)),
            ReplyWithinThread::No,
            AddMentions::No,
        );
        self.send(room_id, &content).await
    }
}
