//! The load: transactions of `!echo <i>` or `!ghost <i>` messages, pushed to the appservice
//! with one transaction in flight (as Synapse does), and the echoes they bring back.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::json;

use crate::{arrivals::Arrivals, homeserver::Session, stats::percentile};

/// Which command the messages are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `!echo <i>` from a few hundred senders, answered by the bot.
    Echo,
    /// `!ghost <i>`, each from a different user `@u<i>`, answered by that user's ghost.
    Ghost,
}

/// A load of `events` messages in transactions of `batch`, spread over `rooms` rooms.
#[derive(Clone, Debug)]
pub struct Load {
    /// The command.
    pub command: Command,
    /// How many messages.
    pub events: usize,
    /// Messages per transaction.
    pub batch: usize,
    /// Rooms they are spread over (round robin).
    pub rooms: usize,
    /// Makes event ids and senders unique across the loads pushed to one appservice.
    pub tag: String,
}

/// The id of message `i` of the load tagged `tag`: as a homeserver makes them (room versions 4
/// on), `$` and the unpadded URL-safe base64 of a SHA-256, here of the tag and the number. Ids
/// numbered in order (`$<tag>e<i>`, before) sort nearly in the order they come, which spares an
/// index over them the page per event that real ids cost (`docs/benchmarks.md`).
pub fn event_id(tag: &str, i: usize) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use sha2::Digest as _;
    format!(
        "${}",
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(format!("{tag}.{i}")))
    )
}

/// The room of message `i`.
pub fn room(i: usize, rooms: usize) -> String {
    format!("!r{}:localhost", i % rooms.max(1))
}

impl Load {
    /// The transaction bodies, built before the clock starts.
    pub fn transactions(&self) -> Vec<Bytes> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let batch = self.batch.max(1);
        (0..self.events)
            .step_by(batch)
            .map(|first| {
                let events: Vec<_> = (first..(first + batch).min(self.events))
                    .map(|i| {
                        let (sender, body) = match self.command {
                            Command::Echo => (format!("@s{}:localhost", i % 251), "!echo"),
                            Command::Ghost => (format!("@u{}{i}:localhost", self.tag), "!ghost"),
                        };
                        json!({
                            "type": "m.room.message",
                            "room_id": room(i, self.rooms),
                            "sender": sender,
                            "event_id": event_id(&self.tag, i),
                            "origin_server_ts": ts + i as u64,
                            "content": {"msgtype": "m.text", "body": format!("{body} {i}")},
                            "unsigned": {"age": 1},
                        })
                    })
                    .collect();
                Bytes::from(
                    serde_json::to_vec(&json!({ "events": events }))
                        .expect("a JSON value with string keys always serialises"),
                )
            })
            .collect()
    }
}

/// The bot's own join events in `rooms` rooms: Synapse tells an appservice when its bot joins,
/// so it knows where the bot already is.
pub fn bot_joins(bot: &str, rooms: usize) -> Bytes {
    let events: Vec<_> = (0..rooms)
        .map(|r| {
            json!({
                "type": "m.room.member",
                "room_id": room(r, rooms),
                "sender": bot,
                "state_key": bot,
                "event_id": format!("$join{r}"),
                "origin_server_ts": 1,
                "content": {"membership": "join"},
            })
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&json!({ "events": events }))
            .expect("a JSON value with string keys always serialises"),
    )
}

/// Pushes transactions to one appservice, one at a time, with the homeserver's token.
pub struct Pusher {
    http: reqwest::Client,
    url: String,
    authorization: String,
    next_txn: u64,
}

impl Pusher {
    /// A pusher to the appservice at `url` (its registration's `url`).
    pub fn new(url: &str, hs_token: &str) -> Self {
        Pusher {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {hs_token}"),
            next_txn: 0,
        }
    }

    /// Pushes one transaction and waits for the answer.
    pub async fn push(&mut self, body: Bytes) -> Result<(), String> {
        self.next_txn += 1;
        let url = format!("{}/_matrix/app/v1/transactions/{}", self.url, self.next_txn);
        let response = self
            .http
            .put(url)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("pushing a transaction: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("a transaction was answered {}", response.status()));
        }
        Ok(())
    }
}

/// What one load measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Messages.
    pub events: usize,
    /// Transactions.
    pub transactions: usize,
    /// From the first push to the last echo's arrival.
    pub elapsed: Duration,
    /// From the first push to the last answer.
    pub push_elapsed: Duration,
    /// Messages per second over `elapsed`.
    pub events_per_s: f64,
    /// Transactions per second over `elapsed`.
    pub transactions_per_s: f64,
    /// Median latency from a transaction's push to an echo's arrival, ms.
    pub p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub p99_ms: f64,
}

/// One load against one appservice: its bodies are built and its arrivals expected before it
/// runs, so a memory sampler can watch the arrivals.
pub struct Phase {
    load: Load,
    bodies: Vec<Bytes>,
    arrivals: Arc<Arrivals>,
}

impl Phase {
    /// Prepares `load`, and has `session` record its echoes.
    pub fn new(load: Load, session: &Session) -> Self {
        let bodies = load.transactions();
        let arrivals = Arc::new(Arrivals::new(load.events, Instant::now()));
        session.expect(arrivals.clone());
        Phase {
            load,
            bodies,
            arrivals,
        }
    }

    /// The echoes, as they arrive.
    pub fn arrivals(&self) -> Arc<Arrivals> {
        self.arrivals.clone()
    }

    /// Pushes every transaction, then waits for every echo; fails when none arrives for
    /// `stall`.
    pub async fn run(self, pusher: &mut Pusher, stall: Duration) -> Result<Outcome, String> {
        let transactions = self.bodies.len();
        let mut pushed_at = Vec::with_capacity(transactions);
        let first = Instant::now();
        for body in self.bodies {
            pushed_at.push(Instant::now());
            pusher.push(body).await?;
        }
        let push_elapsed = first.elapsed();
        let (mut seen, mut progress) = (0, Instant::now());
        while self.arrivals.arrived() < self.load.events {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = self.arrivals.arrived();
            if now > seen {
                (seen, progress) = (now, Instant::now());
            } else if progress.elapsed() > stall {
                return Err(format!(
                    "only {now} of {} echoes arrived; none for {stall:?} ({} duplicates, {} strays)",
                    self.load.events,
                    self.arrivals.duplicates(),
                    self.arrivals.strays()
                ));
            }
        }
        let last = self.arrivals.last().unwrap_or(first);
        let elapsed = last.saturating_duration_since(first);
        let batch = self.load.batch.max(1);
        let mut latencies: Vec<f64> = (0..self.load.events)
            .filter_map(|i| {
                let at = self.arrivals.at(i)?;
                Some(
                    at.saturating_duration_since(pushed_at[i / batch])
                        .as_secs_f64()
                        * 1e3,
                )
            })
            .collect();
        let secs = elapsed.as_secs_f64().max(1e-9);
        Ok(Outcome {
            events: self.load.events,
            transactions,
            elapsed,
            push_elapsed,
            events_per_s: self.load.events as f64 / secs,
            transactions_per_s: transactions as f64 / secs,
            p50_ms: percentile(&mut latencies, 50.0).unwrap_or(f64::NAN),
            p99_ms: percentile(&mut latencies, 99.0).unwrap_or(f64::NAN),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_carry_numbered_commands_in_batches() {
        let load = Load {
            command: Command::Ghost,
            events: 5,
            batch: 2,
            rooms: 2,
            tag: "t".into(),
        };
        let bodies = load.transactions();
        assert_eq!(bodies.len(), 3);
        let last: serde_json::Value = serde_json::from_slice(&bodies[2]).unwrap();
        let event = &last["events"][0];
        assert_eq!(event["content"]["body"], "!ghost 4");
        assert_eq!(event["sender"], "@ut4:localhost");
        assert_eq!(event["room_id"], "!r0:localhost");
        let first: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(first["events"].as_array().unwrap().len(), 2);
        assert_eq!(first["events"][1]["room_id"], "!r1:localhost");
        assert_eq!(first["events"][1]["event_id"], event_id("t", 1));
    }

    /// Event ids look like a homeserver's, differ for every message and tag, and are
    /// scattered: neighbours in the order they come are not neighbours sorted.
    #[test]
    fn event_ids_are_shaped_and_scattered_as_real_ones() {
        let ids: Vec<String> = (0..10_000).map(|i| event_id("t", i)).collect();
        let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        for id in &ids {
            assert_eq!(id.len(), 44, "{id}");
            assert!(id.starts_with('$') && id[1..].chars().all(alphabet), "{id}");
        }
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert_ne!(event_id("t", 0), event_id("u", 0));
        let mut sorted: Vec<(&String, usize)> = ids.iter().zip(0..).collect();
        sorted.sort();
        let adjacent = sorted
            .windows(2)
            .filter(|w| w[0].1.abs_diff(w[1].1) == 1)
            .count();
        assert!(
            adjacent < 10,
            "{adjacent} of 10,000 sort next to the message before or after"
        );
    }
}
