//! The bridge's own requests (`iq` get and set, [RFC 6120 §8.2.3](https://www.rfc-editor.org/rfc/rfc6120#section-8.2.3))
//! and their answers: one mechanism for every module that asks something of the server, a room
//! or a user (upload slots and service discovery, vCards, role and affiliation changes).
//!
//! Answers are taken off the stream as they arrive ([`intercept`]), not in turn with the
//! stanzas handled one by one: a module handling a stanza may wait for an answer that arrives
//! after it.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::sync::oneshot;
use tokio_xmpp::{Stanza, jid::Jid, minidom::Element, parsers::iq::Iq};
use trestle::sync::MutexExt;
use trestle_bridge::{BridgeError, NetworkResult};

use super::Hub;
use crate::xmpp::stanzas;

/// How long a request waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// The answer to a request: its payload, or why it was refused (the error's condition, and
/// its text when it has one).
pub type Answer = Result<Option<Element>, String>;

/// Which kind of request: one that reads (`get`) or one that changes something (`set`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `iq type='get'`.
    Get,
    /// `iq type='set'`.
    Set,
}

/// The requests waiting for their answers, by id, and what module `files` found of the
/// server.
#[derive(Default)]
pub struct Requests {
    /// Told the answer of each request sent, by the request's id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// The HTTP upload service (XEP-0363), once discovery found it (module `files`).
    pub upload_service: Mutex<Option<Jid>>,
}

/// Takes the answer to one of the bridge's requests off the stream; answers whether `stanza`
/// was one.
pub fn intercept(hub: &Hub, stanza: &Stanza) -> bool {
    let (id, answer) = match stanza {
        Stanza::Iq(Iq::Result { id, payload, .. }) => (id, Ok(payload.clone())),
        Stanza::Iq(Iq::Error { id, error, .. }) => {
            let condition = format!("{:?}", error.defined_condition);
            let why = match error.texts.values().next() {
                Some(text) => format!("{condition}, {text}"),
                None => condition,
            };
            (id, Err(why))
        }
        _ => return false,
    };
    let Some(waiting) = hub.requests.waiting.lock_unpoisoned().remove(id) else {
        return false;
    };
    // Whoever asked may have stopped waiting: the answer is dropped all the same.
    let _ = waiting.send(answer);
    true
}

impl Hub {
    /// Sends a request with `payload` from `from` to `to` and waits for its answer; `None`
    /// when none came in time.
    pub async fn request(
        &self,
        kind: Kind,
        from: Jid,
        to: Jid,
        payload: Element,
    ) -> Option<Answer> {
        let id = stanzas::fresh_id();
        let (tell, answer) = oneshot::channel();
        self.requests
            .waiting
            .lock_unpoisoned()
            .insert(id.clone(), tell);
        let (from, to, id_sent) = (Some(from), Some(to), id.clone());
        self.send(match kind {
            Kind::Get => Iq::Get {
                from,
                to,
                id: id_sent,
                payload,
            },
            Kind::Set => Iq::Set {
                from,
                to,
                id: id_sent,
                payload,
            },
        });
        let answer = tokio::time::timeout(ANSWER_WAIT, answer).await;
        self.requests.waiting.lock_unpoisoned().remove(&id);
        answer.ok().and_then(Result::ok)
    }

    /// Sends a `get` request with `payload` from `from` to `to` and waits for its answer's
    /// payload: a refusal is a remote error, no answer one worth retrying.
    pub async fn ask(
        &self,
        from: Jid,
        to: Jid,
        payload: Element,
    ) -> NetworkResult<Option<Element>> {
        let what = payload.name().to_owned();
        match self.request(Kind::Get, from, to.clone(), payload).await {
            Some(Ok(payload)) => Ok(payload),
            Some(Err(why)) => Err(BridgeError::Remote(format!(
                "{to} refused a {what} request: {why}"
            ))),
            None => Err(BridgeError::Retriable(format!(
                "{to} did not answer a {what} request"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `iq` read as a stanza from the server.
    fn stanza(xml: &str) -> Stanza {
        Stanza::Iq(Iq::try_from(xml.parse::<Element>().unwrap()).unwrap())
    }

    #[tokio::test]
    async fn answers_reach_whoever_waits_and_refusals_say_why() {
        let hub = Hub::new(
            crate::settings::Settings::default()
                .check(std::path::Path::new("trestle.yaml"))
                .unwrap(),
        );
        let (tell, answer) = oneshot::channel();
        hub.requests
            .waiting
            .lock_unpoisoned()
            .insert("r1".into(), tell);
        // An answer nobody waits for stays on the stream.
        assert!(!intercept(
            &hub,
            &stanza("<iq xmlns='jabber:client' type='result' id='other'/>")
        ));
        assert!(intercept(
            &hub,
            &stanza(
                "<iq xmlns='jabber:client' type='error' id='r1'><error type='auth'>\
                 <forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>not a moderator</text>\
                 </error></iq>"
            )
        ));
        let why = answer.await.unwrap().unwrap_err();
        assert_eq!(why, "Forbidden, not a moderator");
        // Taken once: a second copy is no answer to anyone.
        assert!(!intercept(
            &hub,
            &stanza("<iq xmlns='jabber:client' type='result' id='r1'/>")
        ));
    }
}
