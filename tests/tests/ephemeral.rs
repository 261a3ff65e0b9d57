//! Typing notifications, receipts and presence against a real Synapse: sent as a ghost and seen
//! by a real user, and sent by a real user and received by the appservice.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use ruma::{
    OwnedEventId, OwnedRoomId, api::appservice::event::push_events::v1::EphemeralData,
    events::receipt::ReceiptType, presence::PresenceState,
};
use serde_json::{Value, json};
use trestle::{
    Registration, Router,
    router::{Ephemeral, State},
};
use trestle_tests::{
    appservice::{Harness, WAIT},
    synapse::{UserClient, encode},
};

fn registration() -> Registration {
    Registration::generate("ephemeral", None, "ephbot", "eph_", "localhost")
}

/// Follows a user's `/sync`, collecting the ephemeral events of one room.
struct SyncWatcher<'a> {
    user: &'a UserClient,
    room: &'a str,
    since: Option<String>,
}

impl<'a> SyncWatcher<'a> {
    fn new(user: &'a UserClient, room: &'a str) -> Self {
        SyncWatcher {
            user,
            room,
            since: None,
        }
    }

    /// Syncs until an ephemeral event of the room matches `pred`; panics after [`WAIT`] with
    /// what it saw.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let mut seen = Vec::new();
        while started.elapsed() < WAIT {
            let mut path = "/_matrix/client/v3/sync?timeout=1000".to_owned();
            if let Some(since) = &self.since {
                path.push_str(&format!("&since={}", encode(since)));
            }
            let body = self.user.call_ok(Method::GET, &path, None).await;
            self.since = body["next_batch"].as_str().map(str::to_owned);
            let events = body["rooms"]["join"][self.room]["ephemeral"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for event in events {
                if pred(&event) {
                    return event;
                }
                seen.push(event);
            }
        }
        panic!(
            "{} never saw {what} in {} within {WAIT:?}; ephemeral events seen: {seen:#?}",
            self.user.user_id, self.room
        );
    }
}

/// Whether `event` is an `m.receipt` with an `m.read` receipt of `user` for `event_id`.
fn read_receipt_of(event: &Value, event_id: &str, user: &str) -> bool {
    event["type"] == "m.receipt" && event["content"][event_id]["m.read"][user].is_object()
}

#[tokio::test]
async fn a_ghost_types_reads_and_sets_presence_for_real_users_to_see() {
    let harness = Harness::start(registration(), Router::new()).await;
    let (user, room) = harness.user_in_room_with_bot("grace").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let ghost = harness.app.ghost("eph_hopper").unwrap();
    let ghost_id = ghost.user_id().to_string();
    let mut sync = SyncWatcher::new(&user, &room);

    // Typing registers and joins the ghost first (the bot invites it into the private room).
    ghost
        .typing(&room_id, true, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(user.joined_members(&room).await.contains(&ghost_id));
    sync.wait_for("the ghost typing", |e| {
        e["type"] == "m.typing" && e["content"]["user_ids"] == json!([ghost_id])
    })
    .await;
    ghost.typing(&room_id, false, None).await.unwrap();
    sync.wait_for("the ghost stop typing", |e| {
        e["type"] == "m.typing" && e["content"]["user_ids"] == json!([])
    })
    .await;

    // A public read receipt.
    let first = user.send_text(&room, "first").await;
    let first_id = OwnedEventId::try_from(first.as_str()).unwrap();
    ghost.read_receipt(&room_id, &first_id).await.unwrap();
    sync.wait_for("the ghost's receipt", |e| {
        read_receipt_of(e, &first, &ghost_id)
    })
    .await;

    // The fully-read marker (private: the ghost's room account data) with a receipt alongside.
    let second = user.send_text(&room, "second").await;
    let second_id = OwnedEventId::try_from(second.as_str()).unwrap();
    ghost
        .read_marker(&room_id, &second_id, Some(&second_id))
        .await
        .unwrap();
    sync.wait_for("the ghost's second receipt", |e| {
        read_receipt_of(e, &second, &ghost_id)
    })
    .await;
    let as_ghost = harness
        .synapse
        .client(&ghost_id, &harness.registration.as_token);
    let marker = as_ghost
        .call_ok(
            Method::GET,
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read?user_id={}",
                encode(&ghost_id),
                encode(&room),
                encode(&ghost_id)
            ),
            None,
        )
        .await;
    assert_eq!(marker["event_id"], second.as_str());

    // Presence, which the user may read because they share a room with the ghost.
    ghost
        .set_presence(PresenceState::Online, Some("bridging"))
        .await
        .unwrap();
    let presence = user
        .call_ok(
            Method::GET,
            &format!("/_matrix/client/v3/presence/{}/status", encode(&ghost_id)),
            None,
        )
        .await;
    assert_eq!(presence["presence"], "online", "{presence}");
    assert_eq!(presence["status_msg"], "bridging", "{presence}");
    ghost
        .set_presence(PresenceState::Unavailable, None)
        .await
        .unwrap();
    let presence = user
        .call_ok(
            Method::GET,
            &format!("/_matrix/client/v3/presence/{}/status", encode(&ghost_id)),
            None,
        )
        .await;
    assert_eq!(presence["presence"], "unavailable", "{presence}");
}

type Seen = Arc<Mutex<Vec<String>>>;

/// Records every ephemeral event as one line: `typing <room> <users>`,
/// `receipt <room> <event> <user>`, `presence <user> <state>`.
async fn record(Ephemeral(data): Ephemeral, State(seen): State<Seen>) {
    let mut lines = Vec::new();
    match data {
        EphemeralData::Typing(typing) => {
            let users: Vec<String> = typing
                .content
                .user_ids
                .iter()
                .map(|u| u.to_string())
                .collect();
            lines.push(format!("typing {} [{}]", typing.room_id, users.join(",")));
        }
        EphemeralData::Receipt(receipt) => {
            for (event_id, receipts) in receipt.content.iter() {
                for user in receipts.get(&ReceiptType::Read).into_iter().flatten() {
                    lines.push(format!("receipt {} {event_id} {}", receipt.room_id, user.0));
                }
            }
        }
        EphemeralData::Presence(presence) => {
            lines.push(format!(
                "presence {} {}",
                presence.sender, presence.content.presence
            ));
        }
        other => lines.push(format!("other {}", other.data_type())),
    }
    seen.lock().unwrap().extend(lines);
}

async fn wait_until_seen(seen: &Seen, line: &str) {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if seen.lock().unwrap().iter().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the appservice never received `{line}` within {WAIT:?}; it received: {:#?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn the_appservice_receives_typing_receipts_and_presence_of_real_users() {
    let seen = Seen::default();
    let router = Router::new().on(record).with_state(seen.clone());
    let harness = Harness::start(registration(), router).await;
    let (user, room) = harness.user_in_room_with_bot("heidi").await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let typing_path = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        encode(&room),
        encode(&user.user_id)
    );

    user.call_ok(
        Method::PUT,
        &typing_path,
        Some(&json!({"typing": true, "timeout": 30000})),
    )
    .await;
    wait_until_seen(&seen, &format!("typing {room} [{}]", user.user_id)).await;
    user.call_ok(Method::PUT, &typing_path, Some(&json!({"typing": false})))
        .await;
    wait_until_seen(&seen, &format!("typing {room} []")).await;

    let from_bot = harness
        .app
        .bot()
        .send_text(&room_id, "read me")
        .await
        .unwrap();
    user.call_ok(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            encode(&room),
            encode(from_bot.as_str())
        ),
        Some(&json!({})),
    )
    .await;
    wait_until_seen(
        &seen,
        &format!("receipt {room} {from_bot} {}", user.user_id),
    )
    .await;

    // Presence of a user who shares a room with the bot.
    user.call_ok(
        Method::PUT,
        &format!(
            "/_matrix/client/v3/presence/{}/status",
            encode(&user.user_id)
        ),
        Some(&json!({"presence": "unavailable", "status_msg": "away"})),
    )
    .await;
    wait_until_seen(&seen, &format!("presence {} unavailable", user.user_id)).await;
}
