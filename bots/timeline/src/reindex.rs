//! Rebuilding the index from Matrix alone: every room the bot is in, read from its first event
//! through `/messages`. The store is a cache of the rooms, never the source of truth.

use serde_json::Value;
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedRoomId, UInt,
        api::{
            AppserviceUserIdentity, Direction,
            client::{
                membership::joined_rooms, message::get_message_events,
                state::get_state_event_for_key,
            },
        },
        events::StateEventType,
    },
};

use crate::{content, index};

/// What a reindex read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reindexed {
    /// Timeline rooms found.
    pub rooms: usize,
    /// Events read from them.
    pub events: usize,
}

/// Empties the index and fills it again from the rooms the bot has joined. Rooms whose first
/// event does not make them a timeline are skipped after that first page.
pub async fn reindex(app: &Appservice) -> Result<Reindexed> {
    index::migrate(app).await?;
    index::clear(app.store().pool()).await?;
    backfill(app).await
}

/// Reads every room the bot is in into the index, without emptying it first.
pub(crate) async fn backfill(app: &Appservice) -> Result<Reindexed> {
    let db = app.store().pool();
    let rooms = app
        .client()
        .send(
            joined_rooms::v3::Request::new(),
            AppserviceUserIdentity::default(),
        )
        .await?
        .joined_rooms;
    let mut done = Reindexed::default();
    for room_id in rooms {
        let events = room(app, &room_id).await?;
        if index::room_owner(db, room_id.as_str()).await?.is_some() {
            done.rooms += 1;
        }
        done.events += events;
    }
    tracing::info!(
        rooms = done.rooms,
        events = done.events,
        "reindexed the timelines"
    );
    Ok(done)
}

/// Indexes one room from its first event; returns how many events were read. Stops after the
/// first page when the room turns out not to be a timeline.
///
/// A room of another homeserver, joined over federation, holds here only what came after the
/// join: its start (the create event, and the posts before) is read backwards from the present,
/// which makes the homeserver fetch that history from the room's other servers (backfill).
pub(crate) async fn room(app: &Appservice, room_id: &OwnedRoomId) -> Result<usize> {
    let read = forward(app, room_id).await?;
    if index::room_owner(app.store().pool(), room_id.as_str())
        .await?
        .is_some()
        || !is_timeline(app, room_id).await?
    {
        return Ok(read);
    }
    Ok(read + backward(app, room_id).await?)
}

/// Whether the room's create event makes it a timeline, from the room's current state.
async fn is_timeline(app: &Appservice, room_id: &OwnedRoomId) -> Result<bool> {
    let request = get_state_event_for_key::v3::Request::new(
        room_id.clone(),
        StateEventType::RoomCreate,
        String::new(),
    );
    let response = app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await?;
    let content: Value = serde_json::from_str(response.event_or_content.get())?;
    Ok(content["type"] == content::ROOM_TYPE)
}

/// Reads the room from the present back to its first event, then indexes what it read oldest
/// first (the create event names the owner, whose posts only count after it).
async fn backward(app: &Appservice, room_id: &OwnedRoomId) -> Result<usize> {
    let mut from: Option<String> = None;
    let mut events = Vec::new();
    loop {
        let (chunk, next) = page(app, room_id, Direction::Backward, from.take()).await?;
        events.extend(chunk);
        match next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    for event in events.iter().rev() {
        index::apply(app, event).await?;
    }
    Ok(events.len())
}

/// Reads the room from its first event here onwards.
async fn forward(app: &Appservice, room_id: &OwnedRoomId) -> Result<usize> {
    let db = app.store().pool();
    let mut from: Option<String> = None;
    let mut read = 0;
    loop {
        let (chunk, next) = page(app, room_id, Direction::Forward, from.take()).await?;
        for event in &chunk {
            index::apply(app, event).await?;
        }
        read += chunk.len();
        if index::room_owner(db, room_id.as_str()).await?.is_none() {
            return Ok(read);
        }
        match next {
            Some(next) => from = Some(next),
            None => return Ok(read),
        }
    }
}

/// One page of `/messages` as the bot, and where the next starts (`None` at the end).
async fn page(
    app: &Appservice,
    room_id: &OwnedRoomId,
    dir: Direction,
    from: Option<String>,
) -> Result<(Vec<Value>, Option<String>)> {
    let mut request = get_message_events::v3::Request::new(room_id.clone(), dir);
    request.from = from.clone();
    request.limit = UInt::from(500u32);
    let response = app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await?;
    let events = response
        .chunk
        .iter()
        .map(|raw| serde_json::from_str(raw.json().get()))
        .collect::<std::result::Result<Vec<Value>, _>>()?;
    let next = response
        .end
        .filter(|end| !events.is_empty() && Some(end) != from.as_ref());
    Ok((events, next))
}
