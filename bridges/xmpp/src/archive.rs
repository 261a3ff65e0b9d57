//! A room's archive ([XEP-0313](https://xmpp.org/extensions/xep-0313.html), MAM), read for the
//! kit's history: a new portal's last messages, and what the bridge missed while it was away.
//!
//! The bot asks the room (as the component's JID: a public room's archive is open to anyone),
//! and the room answers with one message per archived one, then the query's end. Those answers
//! are taken off the component's stream before the stanzas the bridge handles in turn
//! ([`intercept`]): a live message waits for its chat's history to be posted, which must not
//! wait for the live message in turn.
//!
//! A room names each message by its `stanza-id` ([XEP-0359](https://xmpp.org/extensions/xep-0359.html)),
//! the same in the archive and live, so the message map is keyed by it and a message is
//! bridged once however it came.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio_xmpp::{
    Stanza,
    jid::{BareJid, Jid},
    minidom::Element,
    parsers::{
        iq::Iq,
        mam::{Fin, Query, QueryId, Result_},
        message::Message,
        rsm::SetQuery,
    },
};
use trestle::{ruma::MilliSecondsSinceUnixEpoch, sync::MutexExt};
use trestle_bridge::{
    BridgeError, HistoryAnchor, HistoryRequest, NetworkResult, RemoteMessage, UserInfo,
};

use crate::{
    files,
    hub::{Hub, Page},
    ids::{self, ChatId},
    xmpp::stanzas,
};

/// How long the room has to answer one page of a query.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// The most messages one page asks for (Prosody gives at most 50 a page unless configured).
const PAGE: usize = 50;

/// The most pages one catch-up reads: the kit keeps only the newest it asked for anyway.
const MAX_PAGES: usize = 20;

/// Takes an archive's answer off the stream; answers whether `stanza` was one.
pub fn intercept(hub: &Hub, stanza: &Stanza) -> bool {
    let mut queries = hub.queries.0.lock_unpoisoned();
    match stanza {
        Stanza::Message(message) => {
            let Some(result) = message
                .payloads
                .iter()
                .find_map(|p| Result_::try_from(p.clone()).ok())
            else {
                return false;
            };
            // A result for a query we no longer wait for (timed out) is dropped all the same.
            if let Some(page) = result.queryid.as_ref().and_then(|q| queries.get_mut(&q.0)) {
                page.results.push(result);
            }
            true
        }
        Stanza::Iq(Iq::Result { id, payload, .. }) => {
            let Some(page) = queries.get_mut(id) else {
                return false;
            };
            let fin = payload
                .clone()
                .ok_or_else(|| "an answer without its end".to_owned())
                .and_then(|p| Fin::try_from(p).map_err(|e| e.to_string()));
            if let Some(done) = page.done.take() {
                let _ = done.send(fin);
            }
            true
        }
        Stanza::Iq(Iq::Error { id, error, .. }) => {
            let Some(page) = queries.get_mut(id) else {
                return false;
            };
            if let Some(done) = page.done.take() {
                let _ = done.send(Err(format!("{:?}", error.defined_condition)));
            }
            true
        }
        _ => false,
    }
}

/// Where one page reads.
enum Cursor {
    /// The last messages before this one (the empty id: the newest).
    Before(String),
    /// The first messages after this one.
    After(String),
}

impl Hub {
    /// Reads one page of `room`'s archive: its messages, oldest first, and the end of the
    /// page.
    async fn archive_page(
        &self,
        room: &BareJid,
        cursor: &Cursor,
        max: usize,
    ) -> NetworkResult<(Vec<Result_>, Fin)> {
        let id = stanzas::fresh_id();
        let (before, after) = match cursor {
            Cursor::Before(id) => (Some(id.clone()), None),
            Cursor::After(id) => (None, Some(id.clone())),
        };
        let query = Query {
            queryid: Some(QueryId(id.clone())),
            node: None,
            form: None,
            set: Some(SetQuery {
                max: Some(max),
                after,
                before,
                index: None,
            }),
            flip_page: false,
        };
        let (done, answer) = oneshot::channel();
        let page = Page {
            results: Vec::new(),
            done: Some(done),
        };
        self.queries.0.lock_unpoisoned().insert(id.clone(), page);
        self.send(Iq::Set {
            from: Some(Jid::from(self.bot_jid().clone())),
            to: Some(Jid::from(room.clone())),
            id: id.clone(),
            payload: Element::from(query),
        });
        let answer = tokio::time::timeout(PAGE_WAIT, answer).await;
        let page = self.queries.0.lock_unpoisoned().remove(&id);
        let fin = match answer {
            Ok(Ok(Ok(fin))) => fin,
            Ok(Ok(Err(error))) => {
                return Err(BridgeError::Remote(format!(
                    "{room}'s archive refused: {error}"
                )));
            }
            Ok(Err(_)) | Err(_) => {
                return Err(BridgeError::Retriable(format!(
                    "{room}'s archive did not answer"
                )));
            }
        };
        Ok((page.map(|p| p.results).unwrap_or_default(), fin))
    }

    /// The archived messages of `room` where `anchor` says, oldest first, at most `limit`
    /// (the newest of them).
    async fn archive(
        &self,
        room: &BareJid,
        anchor: &HistoryAnchor<Hub>,
        limit: usize,
    ) -> NetworkResult<Vec<Result_>> {
        // Our own message is named by its event id, which the room keeps as `origin-id`: the
        // room's id of it, as kept; without one, the latest, which the kit skips where bridged.
        let after = match anchor {
            HistoryAnchor::After(id) if stanzas::is_matrix_id(id) => {
                Some(self.room_id_of(room, id).await?).filter(|kept| kept != id)
            }
            HistoryAnchor::After(id) => Some(id.clone()),
            _ => None,
        };
        match after {
            Some(id) => {
                let mut all = Vec::new();
                let mut cursor = Cursor::After(id);
                for _ in 0..MAX_PAGES {
                    let (mut results, fin) = self.archive_page(room, &cursor, PAGE).await?;
                    let last = results.last().map(|r| r.id.clone());
                    all.append(&mut results);
                    match last {
                        Some(last) if !fin.complete => cursor = Cursor::After(last),
                        _ => break,
                    }
                }
                if all.len() > limit {
                    all.drain(..all.len() - limit);
                }
                Ok(all)
            }
            None => {
                // Pages back from the newest, each one older than the one before.
                let mut pages = Vec::new();
                let mut count = 0;
                let mut cursor = Cursor::Before(String::new());
                while count < limit && pages.len() < MAX_PAGES {
                    let max = (limit - count).min(PAGE);
                    let (results, fin) = self.archive_page(room, &cursor, max).await?;
                    count += results.len();
                    let first = results.first().map(|r| r.id.clone());
                    pages.push(results);
                    match first {
                        Some(first) if !fin.complete => cursor = Cursor::Before(first),
                        _ => break,
                    }
                }
                Ok(pages.into_iter().rev().flatten().collect())
            }
        }
    }

    /// The kit's history of a chat: a room's archive; direct chats keep none here (the
    /// users' own archives are theirs).
    pub async fn history(
        &self,
        request: HistoryRequest<'_, Hub>,
    ) -> NetworkResult<Option<Vec<RemoteMessage<Hub>>>> {
        let ChatId::Muc(room) = request.chat else {
            return Ok(None);
        };
        let results = self.archive(room, &request.anchor, request.limit).await?;
        let mut messages = Vec::with_capacity(results.len());
        for result in results {
            let Some((mut remote, message)) = self.archived(room, result) else {
                continue;
            };
            // A file shared then arrives as the file, as it does live; one bridged already is
            // not fetched again (the kit skips it).
            if files::oob_url(&message).is_some()
                && request
                    .bridge
                    .event_for(request.chat, &remote.id)
                    .await?
                    .is_none()
            {
                let body = remote.content.body.clone();
                remote.content =
                    files::content(request.bridge, &remote.sender, &message, body).await;
            }
            messages.push(remote);
        }
        Ok(Some(messages))
    }

    /// An archived message, for the kit (its text; a file is fetched by the caller), with the
    /// message as archived: an occupant's message with its archive id, original time and
    /// sender. Ours, subjects, corrections and retractions are left out (history is made of
    /// messages).
    fn archived(&self, room: &BareJid, result: Result_) -> Option<(RemoteMessage<Hub>, Message)> {
        let message: Message = result.forwarded.message;
        let body = stanzas::body(&message)?;
        let occupant = message.from.clone()?.try_into_full().ok()?;
        let nick = occupant.resource().to_string();
        let origin = stanzas::message_id(&message);
        if self.is_ours(room, &nick)
            || origin.as_deref().is_some_and(stanzas::is_matrix_id)
            || stanzas::replaces(&message).is_some()
            || stanzas::retracts(&message).is_some()
        {
            return None;
        }
        if let Some(origin) = origin {
            self.remember_stanza_id(room, &origin, &result.id);
        }
        let jid = stanzas::occupant_jid(&message).or_else(|| self.real_jid(room, &nick));
        let sender = ids::occupant_user(jid, occupant);
        let mut remote = RemoteMessage::new(
            ChatId::Muc(room.clone()),
            sender,
            result.id,
            ids::content(body),
        );
        let stamp = result.forwarded.delay.map(|d| d.stamp.0.timestamp_millis());
        remote.ts = stamp
            .and_then(|ms| ms.try_into().ok())
            .map(MilliSecondsSinceUnixEpoch);
        remote.sender_info = Some(UserInfo::named(nick));
        Some((remote, message))
    }
}
