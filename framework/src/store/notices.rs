//! Word between the processes that share a PostgreSQL database, through `LISTEN`/`NOTIFY`:
//! a lease given back (so a process waiting for the room or the service takes it at once, not
//! at its next look), work stored for rooms another process holds (so that holder reads them
//! at once, and nobody else looks), a room's outbox asked for by the process that handles the
//! room and given over to it, the outcome of a request another process awaits (so its waiter
//! resolves at once instead of looking in the store), and a record its caches may hold changed
//! (a membership, a ghost).
//!
//! One listening connection per store, opened by the first to ask ([`Store::notices`]). A
//! notice is a hint, never the truth: one lost while the connection was down costs a delay
//! (the periodic scans still find the work) or one stale answer from a cache, which the sender
//! of a refused request refreshes anyway; [`Notice::Missed`] says some may have been lost.

use std::{
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use tokio::sync::broadcast;

use super::{Backend, Store};

/// What a process tells the others sharing its database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A lease was given back: what waits for one may take it now.
    LeaseFreed,
    /// What the store records of `user`'s membership in `room` changed.
    Membership { room: String, user: String },
    /// What the store records of the ghost `user` (registration, profile) changed.
    Ghost { user: String },
    /// Work was handed to the holder of `queue` (`store/handoff.rs`).
    Handed { queue: String },
    /// A process stored work for the room queues `queues` of lease scope `scope` (`in:…`,
    /// `out:…`) while another held their leases: the holder reads those queues again. Only
    /// the holder's workers of those queues look; nobody scans. One notice for what one
    /// transaction brought, split where it would pass `NOTIFY`'s limit ([`Notice::pending`]).
    Pending { scope: String, queues: Vec<String> },
    /// Like [`Notice::Pending`], from the process that handles those rooms' events (it holds
    /// their inbox leases): the holder of the queues finishes the item in hand and gives each
    /// lease back at once, saying so ([`Notice::Yielded`]), so that the rooms' requests are
    /// sent where their events are handled. Only the outbox's queues are asked for.
    Wanted { scope: String, queues: Vec<String> },
    /// The holder of `queues` gave their leases back as a [`Notice::Wanted`] asked: the
    /// process that handles those rooms takes them.
    Yielded { scope: String, queues: Vec<String> },
    /// The outcome of outbox request `seq` is recorded, and `waiter` (a process's owner id)
    /// awaits it: `Some(event id)` or `None` for one accepted (some requests give no event
    /// id), `failed` for one refused for good, whose error the waiter reads from the store.
    /// Sent only for a request another process awaits, never for one awaited by nobody.
    Outcome {
        waiter: String,
        seq: i64,
        event_id: Option<String>,
        failed: bool,
    },
    /// The listening connection was lost and opened again: notices may have been missed in
    /// between, so what they would have said is to be assumed.
    Missed,
}

/// The longest payload of a notice made of many names: `NOTIFY` takes under 8,000 bytes, and
/// the origin and the kind come first.
const MAX_NAMES: usize = 7_000;

impl Notice {
    /// Notices that work waits in `queues` of lease `scope`: as few as fit `NOTIFY`'s limit.
    pub(crate) fn pending(scope: &str, queues: Vec<String>) -> Vec<Notice> {
        split(queues)
            .map(|queues| Notice::Pending {
                scope: scope.to_owned(),
                queues,
            })
            .collect()
    }

    /// Notices that this process wants `queues` of lease `scope` ([`Notice::Wanted`]): as few
    /// as fit `NOTIFY`'s limit.
    pub(crate) fn wanted(scope: &str, queues: Vec<String>) -> Vec<Notice> {
        split(queues)
            .map(|queues| Notice::Wanted {
                scope: scope.to_owned(),
                queues,
            })
            .collect()
    }
}

/// `queues` in chunks whose names fit one notice.
fn split(queues: Vec<String>) -> impl Iterator<Item = Vec<String>> {
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut size = 0;
    for queue in queues {
        if chunks.is_empty() || size + queue.len() + 1 > MAX_NAMES {
            chunks.push(Vec::new());
            size = 0;
        }
        size += queue.len() + 1;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(queue);
        }
    }
    chunks.into_iter()
}

impl Notice {
    fn encode(&self, origin: &str) -> String {
        match self {
            Notice::LeaseFreed => format!("{origin}\tlease"),
            Notice::Membership { room, user } => format!("{origin}\tmember\t{room}\t{user}"),
            Notice::Ghost { user } => format!("{origin}\tghost\t{user}"),
            Notice::Handed { queue } => format!("{origin}\thanded\t{queue}"),
            Notice::Pending { scope, queues } => {
                format!("{origin}\tpending\t{scope}\t{}", queues.join("\t"))
            }
            Notice::Wanted { scope, queues } => {
                format!("{origin}\twanted\t{scope}\t{}", queues.join("\t"))
            }
            Notice::Yielded { scope, queues } => {
                format!("{origin}\tyielded\t{scope}\t{}", queues.join("\t"))
            }
            Notice::Outcome {
                waiter,
                seq,
                event_id,
                failed,
            } => {
                let outcome = match (failed, event_id) {
                    (true, _) => "failed",
                    (false, Some(event_id)) => event_id,
                    (false, None) => "",
                };
                format!("{origin}\toutcome\t{waiter}\t{seq}\t{outcome}")
            }
            Notice::Missed => format!("{origin}\tmissed"),
        }
    }

    /// The notice in `payload` and whether it came from `origin`; `None` for one this
    /// version does not know (a newer process's), which is ignored.
    fn decode(payload: &str, origin: &str) -> Option<(Notice, bool)> {
        let mut parts = payload.split('\t');
        let from = parts.next()?;
        let kind = parts.next()?;
        if let "pending" | "wanted" | "yielded" = kind {
            let scope = parts.next()?.to_owned();
            let queues = parts.map(ToOwned::to_owned).collect();
            let notice = match kind {
                "pending" => Notice::Pending { scope, queues },
                "wanted" => Notice::Wanted { scope, queues },
                _ => Notice::Yielded { scope, queues },
            };
            return Some((notice, from == origin));
        }
        if kind == "outcome" {
            let (waiter, seq, outcome) = (parts.next()?, parts.next()?, parts.next()?);
            // Event ids start with `$`: "failed" and "" cannot be one.
            let notice = Notice::Outcome {
                waiter: waiter.to_owned(),
                seq: seq.parse().ok()?,
                event_id: Some(outcome)
                    .filter(|o| !o.is_empty() && *o != "failed")
                    .map(ToOwned::to_owned),
                failed: outcome == "failed",
            };
            return (parts.next().is_none()).then_some((notice, from == origin));
        }
        let notice = match (kind, parts.next(), parts.next()) {
            ("lease", None, None) => Notice::LeaseFreed,
            ("member", Some(room), Some(user)) => Notice::Membership {
                room: room.to_owned(),
                user: user.to_owned(),
            },
            ("ghost", Some(user), None) => Notice::Ghost {
                user: user.to_owned(),
            },
            ("handed", Some(queue), None) => Notice::Handed {
                queue: queue.to_owned(),
            },
            _ => return None,
        };
        Some((notice, from == origin))
    }
}

/// A PostgreSQL store's channel, and its listener once someone asked.
pub(crate) struct Notices {
    url: String,
    channel: String,
    /// Names this store's own notices, which its listener skips.
    origin: String,
    sender: OnceLock<broadcast::Sender<Notice>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("Notices")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Notices {
    /// The notices of the store at `url` whose tables live in `schema`: a channel per schema,
    /// since `NOTIFY` reaches the whole database and each plugin has a schema of its own.
    pub(crate) fn new(url: &str, schema: Option<&str>) -> Arc<Self> {
        Arc::new(Notices {
            url: url.to_owned(),
            channel: format!("trestle.{}", schema.unwrap_or("public")),
            origin: format!("{:016x}", rand::random::<u64>()),
            sender: OnceLock::new(),
        })
    }
}

/// How long the listener waits for a notice before looking whether its store is gone.
const LOOK_EVERY: Duration = Duration::from_secs(30);

impl Store {
    /// The notices other processes on this database send, from a connection that listens for
    /// them (opened at the first call); `None` on SQLite, where no other process is.
    pub(crate) fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        let notices = self.notices.as_ref()?;
        let sender = notices.sender.get_or_init(|| {
            let (sender, _) = broadcast::channel(1024);
            tokio::spawn(listen(Arc::downgrade(notices), sender.clone()));
            sender
        });
        Some(sender.subscribe())
    }

    /// Tells this process's own listeners `notice`, which its listening connection skips
    /// (it came from here): for what a holder in this process waits for too.
    pub(crate) fn tell_here(&self, notice: &Notice) {
        if let Some(sender) = self.notices.as_ref().and_then(|n| n.sender.get()) {
            // No receiver is fine: nobody here waits.
            let _ = sender.send(notice.clone());
        }
    }

    /// Tells the other processes on this database `notice`. A notice that cannot be sent is
    /// logged: the others find out later, from their scans or a refused request.
    pub(crate) async fn announce(&self, notice: &Notice) {
        let Some(notices) = &self.notices else { return };
        if self.backend != Backend::Postgres {
            return;
        }
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&notices.channel)
            .bind(notice.encode(&notices.origin))
            .execute(&self.pool)
            .await;
        match sent {
            // For counting what is said, by kind (`RUST_LOG=trestle::store::notices=trace`).
            Ok(_) => tracing::trace!(?notice, "told the other processes"),
            Err(error) => tracing::warn!(%error, ?notice, "could not tell the other processes"),
        }
    }
}

impl Store {
    /// Tells the other processes what `writes`, just committed, changed of the records their
    /// caches hold: they forget those entries and ask the store next time.
    pub(crate) async fn announce_writes(&self, writes: &[super::Write]) {
        if self.notices.is_none() {
            return;
        }
        for write in writes {
            let notice = match write {
                super::Write::Done(_) => continue,
                super::Write::Registered(user) => Notice::Ghost { user: user.clone() },
                super::Write::Membership {
                    room_id, user_id, ..
                } => Notice::Membership {
                    room: room_id.clone(),
                    user: user_id.clone(),
                },
            };
            self.announce(&notice).await;
        }
    }
}

/// Listens on the store's channel and passes on what others say, until the store is gone.
async fn listen(notices: Weak<Notices>, sender: broadcast::Sender<Notice>) {
    let mut listener = None;
    loop {
        let Some(this) = notices.upgrade() else {
            return;
        };
        let (channel, origin, url) = (this.channel.clone(), this.origin.clone(), this.url.clone());
        drop(this);
        let Some(open) = &mut listener else {
            match open_listener(&url, &channel).await {
                Ok(open) => {
                    listener = Some(open);
                    // Whatever was said before now is unknown: assume the worst once.
                    let _ = sender.send(Notice::Missed);
                }
                Err(error) => {
                    tracing::warn!(%error, channel, "could not listen for other processes' notices; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        match tokio::time::timeout(LOOK_EVERY, open.recv()).await {
            Err(_) => {}
            Ok(Ok(notification)) => {
                if let Some((notice, false)) = Notice::decode(notification.payload(), &origin) {
                    // No receiver yet is fine: nobody needs it.
                    let _ = sender.send(notice);
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, channel, "lost the connection that listens for other processes' notices");
                listener = None;
            }
        }
    }
}

async fn open_listener(url: &str, channel: &str) -> sqlx::Result<sqlx::postgres::PgListener> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is the test failing.

    use super::Notice;

    #[test]
    fn notices_read_back_and_name_their_origin() {
        let member = Notice::Membership {
            room: "!r:x".into(),
            user: "@u:x".into(),
        };
        for notice in [
            Notice::LeaseFreed,
            member,
            Notice::Ghost {
                user: "@g:x".into(),
            },
            Notice::Handed {
                queue: "bridge".into(),
            },
            Notice::Pending {
                scope: "in:as".into(),
                queues: vec!["!r:x".into(), "!s:x".into()],
            },
            // Items of no room queue under "".
            Notice::Pending {
                scope: "in:as".into(),
                queues: vec![String::new()],
            },
        ] {
            let payload = notice.encode("me");
            assert_eq!(Notice::decode(&payload, "me"), Some((notice.clone(), true)));
            assert_eq!(Notice::decode(&payload, "other"), Some((notice, false)));
        }
        assert_eq!(Notice::decode("x\tfuture\tthing", "me"), None);
        // Thousands of rooms: split under `NOTIFY`'s limit, none lost.
        let rooms: Vec<String> = (0..2_000)
            .map(|n| format!("!room{n}:example.org"))
            .collect();
        let notices = Notice::pending("in:as", rooms.clone());
        assert!(notices.len() > 1);
        let mut read = Vec::new();
        for notice in notices {
            let payload = notice.encode("0123456789abcdef");
            assert!(payload.len() < 8_000, "{} bytes", payload.len());
            match Notice::decode(&payload, "me") {
                Some((Notice::Pending { scope, queues }, false)) if scope == "in:as" => {
                    read.extend(queues)
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(read, rooms);
        assert_eq!(Notice::decode("", "me"), None);
    }

    #[test]
    fn outcomes_and_rooms_given_over_read_back() {
        for notice in [
            Notice::Wanted {
                scope: "out:as".into(),
                queues: vec!["!r:x".into(), "!s:x".into()],
            },
            Notice::Yielded {
                scope: "out:as".into(),
                queues: vec!["!r:x".into()],
            },
            Notice::Outcome {
                waiter: "p1".into(),
                seq: 42,
                event_id: Some("$e:x".into()),
                failed: false,
            },
            // A request that gives no event id (a join).
            Notice::Outcome {
                waiter: "p1".into(),
                seq: 43,
                event_id: None,
                failed: false,
            },
            Notice::Outcome {
                waiter: "p1".into(),
                seq: 44,
                event_id: None,
                failed: true,
            },
        ] {
            let payload = notice.encode("me");
            assert_eq!(Notice::decode(&payload, "other"), Some((notice, false)));
        }
        // A damaged number is no notice, not a wrong one.
        assert_eq!(Notice::decode("x\toutcome\tp1\tforty\t$e:x", "me"), None);
    }
}
