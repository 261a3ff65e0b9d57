//! Threads (`m.thread`) both ways.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#threading>
//!
//! From the network, a message in a thread ([`RemoteMessage::in_thread`](super::RemoteMessage::in_thread))
//! is sent with an `m.thread` relation to its root's event. A reply inside the thread is a
//! genuine reply there (`is_falling_back: false`); any other message carries the reply
//! fallback for clients without threads, pointing at the thread's latest event as the
//! homeserver's aggregation of the root tells it. A thread the room cannot hold (its root is
//! in a room an upgrade left behind, or is itself an edit or another relation, from which no
//! thread may start) becomes a plain reply to the root, so the message is not refused.
//!
//! From Matrix, a message in a thread reaches a network with threads
//! ([`Capabilities::threads`](super::Capabilities::threads)) with the root's remote id. A
//! network without threads gets it as a reply to the thread's root rather than to the
//! fallback's latest message: the root is what the thread is about, the same for each of its
//! messages, while the fallback only names whichever message the sender's client showed last,
//! and the spec says it is no reply. A genuine reply inside a thread is a reply either way.

use ruma::{
    EventId, OwnedEventId,
    events::{
        relation::{InReplyTo, Reply, Thread},
        room::message::{Relation, RoomMessageEventContentWithoutRelation},
    },
};

use super::{BridgeHandle, Network, NetworkResult, PortalRef};

/// A relation of a message, as sent in Matrix.
type MessageRelation = Relation<RoomMessageEventContentWithoutRelation>;

/// What the event a network names as a thread's root is, read in Matrix.
enum RootEvent {
    /// It can be a thread's root: `root` is the root to relate to, `latest` the thread's
    /// latest event (for the reply fallback).
    Root {
        root: OwnedEventId,
        latest: OwnedEventId,
    },
    /// It has a relation of another kind (an edit, a reaction…): no thread starts there.
    NoRoot,
}

/// Where a Matrix message goes on the network: the event it replies to and the remote id of
/// its thread's root.
pub(crate) struct MatrixTarget<N: Network> {
    pub(crate) in_reply_to: Option<OwnedEventId>,
    pub(crate) thread_root: Option<N::MessageId>,
}

impl<N: Network> BridgeHandle<N> {
    /// The relation a remote message gets in `portal`: in its thread (replying inside it or
    /// falling back to the thread's latest event), else a reply, else none. Targets that were
    /// never bridged are left out.
    pub(crate) async fn remote_relation(
        &self,
        portal: &PortalRef<N>,
        thread_root: Option<&N::MessageId>,
        reply_to: Option<&N::MessageId>,
    ) -> NetworkResult<Option<MessageRelation>> {
        let reply = match reply_to {
            Some(target) => self.event_for(&portal.chat, target).await?,
            None => None,
        };
        let root = match thread_root {
            Some(root) => self.event_for(&portal.chat, root).await?,
            None => None,
        };
        if let Some(root) = &root
            && !self.left_behind(portal, root).await?
            && let RootEvent::Root { root, latest } = self.root_event(portal, root).await
        {
            let thread = match reply {
                Some(reply) => Thread::reply(root, reply),
                None => Thread::plain(root, latest),
            };
            return Ok(Some(Relation::Thread(thread)));
        }
        Ok(reply
            .or(root)
            .map(|target| Relation::Reply(Reply::new(InReplyTo::new(target)))))
    }

    /// Reads the event named as a thread's root. An event already in a thread stands for its
    /// thread (the network called a message of the thread its root). When it cannot be read,
    /// it is taken for a root with no thread yet: the best guess, and the homeserver refuses
    /// the message if it was wrong.
    async fn root_event(&self, portal: &PortalRef<N>, event_id: &EventId) -> RootEvent {
        let fallback = || RootEvent::Root {
            root: event_id.to_owned(),
            latest: event_id.to_owned(),
        };
        let event = match self.room_event(&portal.room_id, event_id).await {
            Ok(Some(event)) => event,
            Ok(None) => return fallback(),
            Err(error) => {
                tracing::debug!(%event_id, %error, "thread root unreadable; taken as it is");
                return fallback();
            }
        };
        let relates_to = &event["content"]["m.relates_to"];
        match relates_to["rel_type"].as_str() {
            Some("m.thread") => match relates_to["event_id"].as_str().map(EventId::parse) {
                Some(Ok(root)) => RootEvent::Root {
                    root,
                    latest: event_id.to_owned(),
                },
                _ => RootEvent::NoRoot,
            },
            Some(_) => RootEvent::NoRoot,
            None => {
                let latest =
                    event["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"]
                        .as_str()
                        .and_then(|id| EventId::parse(id).ok());
                RootEvent::Root {
                    root: event_id.to_owned(),
                    latest: latest.unwrap_or_else(|| event_id.to_owned()),
                }
            }
        }
    }

    /// What a Matrix message with `relation` replies to and which thread it is in, as the
    /// network gets them (see the module's documentation).
    pub(crate) async fn matrix_target(
        &self,
        portal: &PortalRef<N>,
        relation: Option<&MessageRelation>,
    ) -> NetworkResult<MatrixTarget<N>> {
        let thread = match relation {
            Some(Relation::Reply(reply)) => {
                return Ok(MatrixTarget {
                    in_reply_to: Some(reply.in_reply_to.event_id.clone()),
                    thread_root: None,
                });
            }
            Some(Relation::Thread(thread)) => thread,
            _ => {
                return Ok(MatrixTarget {
                    in_reply_to: None,
                    thread_root: None,
                });
            }
        };
        let genuine = thread
            .in_reply_to
            .as_ref()
            .filter(|_| !thread.is_falling_back)
            .map(|r| r.event_id.clone());
        let thread_root = if self.network().capabilities().threads {
            self.remote_for(portal, thread.event_id.as_str()).await?
        } else {
            None
        };
        // A thread the network cannot hold (it has no threads, or never saw the root) comes
        // as a reply to its root.
        let in_reply_to = match thread_root {
            Some(_) => genuine,
            None => genuine.or_else(|| Some(thread.event_id.clone())),
        };
        Ok(MatrixTarget {
            in_reply_to,
            thread_root,
        })
    }
}
