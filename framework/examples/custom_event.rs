//! A bot that is no chat bot: it keeps score. Clients (a game, a script) send
//! `org.example.score` events (`{"player": "ada", "points": 3}`); the bot adds them up per
//! room and answers each with an `org.example.total` event. Run it with `cargo run -p
//! trestle --example custom_event` (see `README.md` here for the registration and a `curl`
//! that sends a score).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use trestle::{
    Appservice, Router, Standalone,
    router::{Event, State},
    ruma::events::macros::EventContent,
};

/// Custom types are namespaced with a domain you control (Java-style), never `m.`, which
/// the spec reserves. ruma's derive makes the struct an event content of that type, so
/// the `Event<…>` extractor and `Intent::send` take it like any of the spec's events.
#[derive(Clone, Debug, Deserialize, Serialize, EventContent)]
#[ruma_event(type = "org.example.score", kind = MessageLike)]
struct ScoreEventContent {
    player: String,
    points: i64,
}

/// What the bot sends back.
#[derive(Clone, Debug, Deserialize, Serialize, EventContent)]
#[ruma_event(type = "org.example.total", kind = MessageLike)]
struct TotalEventContent {
    player: String,
    total: i64,
}

/// Totals per room and player. In memory: a restart starts the game over.
type Board = Arc<Mutex<HashMap<(String, String), i64>>>;

/// Runs for `org.example.score` events only: `Event<ScoreEventContent>` skips every other
/// type, and rejects (with a log line) a score whose content does not parse.
async fn score(
    event: Event<ScoreEventContent>,
    State(board): State<Board>,
    app: Appservice,
) -> trestle::Result<()> {
    let ScoreEventContent { player, points } = event.content;
    let total = {
        let mut board = board
            .lock()
            .expect("nothing panics while holding the board, so the lock is never poisoned");
        let total = board
            .entry((event.room_id.to_string(), player.clone()))
            .or_default();
        *total = total.saturating_add(points);
        *total
    };
    let content = TotalEventContent { player, total };
    app.bot().send(&event.room_id, &content).await?;
    Ok(())
}

fn router() -> Router {
    // No commands, no `help`: the bot only reads and writes its own event types. It never
    // sees its own totals (handlers skip the appservice's own events unless asked), so it
    // cannot loop.
    Router::new()
        .accept_invites(true)
        .on(score)
        .with_state(Board::default())
}

#[tokio::main]
async fn main() -> trestle::Result<()> {
    tracing_subscriber::fmt().init();
    let standalone = Standalone::from_env("custom_event", "scorekeeper", "scorekeeper_")?;
    standalone.run(router()).await
}
