//! A plain XMPP client for the tests, on tokio-xmpp and xmpp-parsers (nothing of the
//! bridge's): logs in to the test server, joins rooms, sends and waits for stanzas.

use std::{str::FromStr, time::Duration};

use futures_util::StreamExt;
use tokio_xmpp::{
    Client, Event, Stanza,
    connect::DnsConfig,
    jid::{BareJid, Jid},
    minidom::Element,
    parsers::{
        http_upload::{SlotRequest, SlotResult},
        iq::Iq,
        message::{Id, Lang, Message, MessageType},
        message_correct::Replace,
        muc::{Muc, user::MucUser, user::Status},
        oob::Oob,
        presence::Presence,
    },
    xmlstream::Timeouts,
};

use super::prosody::{DOMAIN, Prosody, UPLOAD, password};

/// How long a test waits for a stanza.
pub const WAIT: Duration = Duration::from_secs(30);

/// A logged-in user.
pub struct XmppClient {
    client: Client,
    /// The user's bare JID.
    pub jid: BareJid,
}

impl XmppClient {
    /// Logs `user` in, available (so that messages to their bare JID reach this session).
    pub async fn connect(server: &Prosody, user: &str) -> XmppClient {
        let jid = BareJid::new(&format!("{user}@{DOMAIN}")).unwrap();
        let mut client = Client::new_plaintext(
            jid.clone(),
            password(user),
            DnsConfig::addr(&format!("127.0.0.1:{}", server.c2s_port)),
            Timeouts::default(),
        );
        let online = tokio::time::timeout(WAIT, async {
            loop {
                match client.next().await {
                    Some(Event::Online { .. }) => return,
                    Some(Event::Disconnected(error)) => panic!("{user} could not log in: {error}"),
                    Some(_) => {}
                    None => panic!("{user}'s stream ended"),
                }
            }
        })
        .await;
        assert!(
            online.is_ok(),
            "{user} did not log in:\n{}",
            server.log_tail()
        );
        let mut me = XmppClient { client, jid };
        me.send(Presence::available()).await;
        me
    }

    /// Sends a stanza.
    pub async fn send(&mut self, stanza: impl Into<Stanza>) {
        self.client.send_stanza(stanza.into()).await.unwrap();
    }

    /// Waits for the first stanza `wanted` takes (others are dropped).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(Stanza) -> Option<T>,
    ) -> T {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.client.next().await {
                    Some(Event::Stanza(stanza)) => {
                        if let Some(found) = wanted(stanza) {
                            return found;
                        }
                    }
                    Some(_) => {}
                    None => panic!("the stream ended waiting for {what}"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{} waited in vain for {what}", self.jid))
    }

    /// Waits for a message `wanted` takes.
    pub async fn expect_message(
        &mut self,
        what: &str,
        wanted: impl Fn(&Message) -> bool,
    ) -> Message {
        self.expect(what, |stanza| match stanza {
            Stanza::Message(message) if wanted(&message) => Some(message),
            _ => None,
        })
        .await
    }

    /// Waits for a presence `wanted` takes.
    pub async fn expect_presence(
        &mut self,
        what: &str,
        wanted: impl Fn(&Presence) -> bool,
    ) -> Presence {
        self.expect(what, |stanza| match stanza {
            Stanza::Presence(presence) if wanted(&presence) => Some(presence),
            _ => None,
        })
        .await
    }

    /// Joins a room as `nick` and waits until in (the room's own presence of us).
    pub async fn join(&mut self, room: &str, nick: &str) {
        let occupant = Jid::from_str(&format!("{room}/{nick}")).unwrap();
        self.send(
            Presence::available()
                .with_to(occupant.clone())
                .with_payload(Muc::new()),
        )
        .await;
        self.expect_presence("our own presence in the room", |p| {
            p.from.as_ref() == Some(&occupant) && statuses(p).contains(&Status::SelfPresence)
        })
        .await;
        // The subject comes last: then the join is complete.
        self.expect_message("the room's subject", |m| {
            m.from
                .as_ref()
                .is_some_and(|f| f.to_bare().to_string() == room)
                && !m.subjects.is_empty()
        })
        .await;
    }

    /// Sends `body` to a room (`groupchat`) or a user (`chat`) with the id `id`.
    pub async fn say(&mut self, kind: MessageType, to: &str, id: &str, body: &str) {
        let mut message = Message::new_with_type(kind, Jid::from_str(to).unwrap())
            .with_body(Lang::new(), body.to_owned());
        message.id = Some(Id(id.to_owned()));
        self.send(message).await;
    }

    /// Corrects the message `target` (XEP-0308).
    pub async fn correct(
        &mut self,
        kind: MessageType,
        to: &str,
        id: &str,
        target: &str,
        body: &str,
    ) {
        let mut message = Message::new_with_type(kind, Jid::from_str(to).unwrap())
            .with_body(Lang::new(), body.to_owned())
            .with_payload(Replace {
                id: Id(target.to_owned()),
            });
        message.id = Some(Id(id.to_owned()));
        self.send(message).await;
    }

    /// Retracts the message `target` (XEP-0424), with a fallback body as clients send.
    pub async fn retract(&mut self, kind: MessageType, to: &str, id: &str, target: &str) {
        let retract: Element =
            format!("<retract xmlns='urn:xmpp:message-retract:1' id='{target}'/>")
                .parse()
                .unwrap();
        let mut message = Message::new_with_type(kind, Jid::from_str(to).unwrap())
            .with_body(Lang::new(), "/me retracted a message".to_owned());
        message.payloads.push(retract);
        message.id = Some(Id(id.to_owned()));
        self.send(message).await;
    }

    /// Sends `body` as a reply (XEP-0461) to the message `target` (in a room, the room's id).
    pub async fn reply(&mut self, kind: MessageType, to: &str, id: &str, target: &str, body: &str) {
        let reply = format!("<reply xmlns='urn:xmpp:reply:0' id='{target}'/>");
        self.send_with(kind, to, id, Some(body), &reply).await;
    }

    /// Reacts to the message `target` with `emojis` (XEP-0444: the whole set; none takes them
    /// back).
    pub async fn react(
        &mut self,
        kind: MessageType,
        to: &str,
        id: &str,
        target: &str,
        emojis: &[&str],
    ) {
        let inner: String = emojis
            .iter()
            .map(|e| format!("<reaction>{e}</reaction>"))
            .collect();
        let reactions =
            format!("<reactions xmlns='urn:xmpp:reactions:0' id='{target}'>{inner}</reactions>");
        self.send_with(kind, to, id, None, &reactions).await;
    }

    /// Sends a message with the id `id`, `body` if any, and the payload `xml`.
    async fn send_with(
        &mut self,
        kind: MessageType,
        to: &str,
        id: &str,
        body: Option<&str>,
        xml: &str,
    ) {
        let mut message = Message::new_with_type(kind, Jid::from_str(to).unwrap());
        if let Some(body) = body {
            message.bodies.insert(Lang::new(), body.to_owned());
        }
        message.payloads.push(xml.parse::<Element>().unwrap());
        message.id = Some(Id(id.to_owned()));
        self.send(message).await;
    }

    /// Puts `data` on the server's upload service (XEP-0363: a slot, then an HTTP PUT) and
    /// answers the URL it is served at.
    pub async fn upload(&mut self, data: &[u8], name: &str, content_type: &str) -> String {
        let request = SlotRequest {
            filename: name.to_owned(),
            size: data.len() as u64,
            content_type: Some(content_type.to_owned()),
        };
        let mut iq = Iq::from_get("upload-slot", request);
        if let Iq::Get { to, .. } = &mut iq {
            *to = Some(Jid::from_str(UPLOAD).unwrap());
        }
        self.send(iq).await;
        let slot = self
            .expect("an upload slot", |stanza| match stanza {
                Stanza::Iq(Iq::Result {
                    id,
                    payload: Some(payload),
                    ..
                }) if id == "upload-slot" => Some(SlotResult::try_from(payload).unwrap()),
                Stanza::Iq(Iq::Error { id, error, .. }) if id == "upload-slot" => {
                    panic!("no upload slot: {error:?}")
                }
                _ => None,
            })
            .await;
        let mut put = reqwest::Client::new()
            .put(&slot.put.url)
            .header("content-type", content_type)
            .body(data.to_vec());
        for header in &slot.put.headers {
            put = put.header(header.name.as_str(), &header.value);
        }
        let status = put.send().await.unwrap().status();
        assert!(status.is_success(), "the upload service answered {status}");
        slot.get.url
    }

    /// Shares `url` in a room or with a user as clients share files: the URL as the body and
    /// in an out-of-band element (XEP-0066).
    pub async fn share(&mut self, kind: MessageType, to: &str, id: &str, url: &str) {
        let mut message = Message::new_with_type(kind, Jid::from_str(to).unwrap())
            .with_body(Lang::new(), url.to_owned())
            .with_payload(Oob {
                url: url.to_owned(),
                desc: None,
            });
        message.id = Some(Id(id.to_owned()));
        self.send(message).await;
    }

    /// Sends a `set` request with the payload `xml` to `to` and waits for it to be done.
    pub async fn set(&mut self, to: &str, id: &str, xml: &str) {
        self.send(Iq::Set {
            from: None,
            to: Some(Jid::from_str(to).unwrap()),
            id: id.to_owned(),
            payload: xml.parse::<Element>().unwrap(),
        })
        .await;
        self.expect("the answer", |stanza| match stanza {
            Stanza::Iq(Iq::Result { id: answered, .. }) if answered == id => Some(()),
            Stanza::Iq(Iq::Error {
                id: answered,
                error,
                ..
            }) if answered == id => panic!("{to} refused {xml}: {error:?}"),
            _ => None,
        })
        .await;
    }

    /// Sets a room's subject.
    pub async fn set_subject(&mut self, room: &str, subject: &str) {
        let mut message = Message::groupchat(Jid::from_str(room).unwrap());
        message.subjects.insert(Lang::new(), subject.to_owned());
        self.send(message).await;
    }
}

/// A room presence's status codes.
pub fn statuses(presence: &Presence) -> Vec<Status> {
    presence
        .payloads
        .iter()
        .find_map(|p| MucUser::try_from(p.clone()).ok())
        .map(|u| u.status)
        .unwrap_or_default()
}

/// A message's body (the tests' messages have one, in no language or the server's).
pub fn body(message: &Message) -> Option<&str> {
    message.bodies.values().next().map(String::as_str)
}

/// A message's out-of-band URL (XEP-0066), read as XML.
pub fn oob_url(message: &Message) -> Option<String> {
    let oob = message
        .payloads
        .iter()
        .find(|p| p.is("x", "jabber:x:oob"))?;
    oob.get_child("url", "jabber:x:oob").map(Element::text)
}

/// The id of the message a retraction retracts (its `<retract/>`, read as XML).
pub fn retracts(message: &Message) -> Option<String> {
    payload_id(message, "retract", "urn:xmpp:message-retract:1")
}

/// The id of the message a correction replaces (its `<replace/>`, read as XML).
pub fn replaces(message: &Message) -> Option<String> {
    payload_id(message, "replace", "urn:xmpp:message-correct:0")
}

/// The id the room gave a message (XEP-0359 `stanza-id`, read as XML).
pub fn stanza_id(message: &Message) -> Option<String> {
    payload_id(message, "stanza-id", "urn:xmpp:sid:0")
}

/// The id of the message a reply replies to (XEP-0461, its `<reply/>`, read as XML).
pub fn replies_to(message: &Message) -> Option<String> {
    payload_id(message, "reply", "urn:xmpp:reply:0")
}

/// The message a reactions message (XEP-0444) is to and the emojis in it, read as XML.
pub fn reactions(message: &Message) -> Option<(String, Vec<String>)> {
    let reactions = message
        .payloads
        .iter()
        .find(|p| p.is("reactions", "urn:xmpp:reactions:0"))?;
    let emojis = reactions.children().map(|r| r.text()).collect();
    Some((reactions.attr("id")?.to_owned(), emojis))
}

/// The `id` of the message's payload `name` in `ns`, read as XML.
fn payload_id(message: &Message, name: &str, ns: &str) -> Option<String> {
    let payload = message.payloads.iter().find(|p| p.is(name, ns))?;
    payload.attr("id").map(str::to_owned)
}
