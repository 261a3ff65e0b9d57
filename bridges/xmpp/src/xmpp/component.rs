//! The component's connection to the server ([XEP-0114](https://xmpp.org/extensions/xep-0114.html)):
//! one stream for the whole bridge, over which it may send as any JID of its domain. It is
//! made again whenever it drops, waiting longer after each failed attempt; what the bridge
//! sends meanwhile waits in the queue, and goes once the bridge's JIDs are back in their rooms
//! (a room refuses a message from a JID that is not in it).
//!
//! Written here on tokio-xmpp's XML streams rather than with its `component` feature: that
//! feature switches xmpp-parsers' stanza namespace to `jabber:component:accept` for the whole
//! program, which breaks every client stream in the same binary (an XMPP client beside the
//! bridge, the tests' own client). Stanzas are built and read as `jabber:client` stanzas and
//! moved to and from the component's namespace at the stream ([`move_namespace`]).

use std::{borrow::Cow, io, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::BufStream,
    net::TcpStream,
    sync::{mpsc, oneshot},
};
use tokio_xmpp::{
    Stanza,
    minidom::{Element, Node},
    parsers::{component::Handshake, iq::Iq, ping::Ping},
    xmlstream::{ReadError, StreamHeader, Timeouts, XmlStream, initiate_stream},
};

use super::header::Versioned;
use crate::settings::ComponentConfig;

/// The component protocol's namespace.
const COMPONENT_NS: &str = "jabber:component:accept";
/// The namespace xmpp-parsers reads stanzas in.
const CLIENT_NS: &str = "jabber:client";

/// The longest wait between attempts to connect, however many failed.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// How long a new stream waits for the stanzas to send before the queue (then sends the queue
/// without them).
const RESUME_WAIT: Duration = Duration::from_secs(30);

/// What the connection tells whoever runs it.
#[derive(Debug)]
pub enum Event {
    /// The stream is up (again): `first` is false after a reconnection, when rooms must be
    /// joined again. Nothing queued is sent until `resume` is answered with the stanzas to send
    /// before the queue (the joins), or dropped.
    Online {
        /// Whether this is the first connection since the bridge started.
        first: bool,
        /// Takes the stanzas that go before the queue.
        resume: oneshot::Sender<Vec<Stanza>>,
    },
    /// A stanza for one of the component's JIDs.
    Stanza(Box<Stanza>),
}

type Stream = XmlStream<BufStream<Versioned<TcpStream>>, Element>;

/// Connects and authenticates: the stream header, then the handshake (a SHA-1 of the stream
/// id and the secret).
async fn connect(config: &ComponentConfig) -> io::Result<Stream> {
    let tcp = TcpStream::connect(&config.server).await?;
    let header = StreamHeader {
        from: None,
        to: Some(Cow::Borrowed(config.domain.as_str())),
        id: None,
    };
    let mut pending = initiate_stream(
        BufStream::new(Versioned::new(tcp)),
        COMPONENT_NS,
        header,
        Timeouts::default(),
    )
    .await?;
    let id = pending.take_header().id.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "the server's stream has no id")
    })?;
    let mut stream: Stream = pending.skip_features();
    let handshake = Handshake::from_stream_id_and_password(id.into_owned(), &config.secret);
    stream.send(&handshake).await?;
    loop {
        match stream.next().await {
            Some(Ok(reply)) if reply.is("handshake", COMPONENT_NS) => return Ok(stream),
            Some(Ok(other)) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the server refused the component: {}", String::from(&other)),
                ));
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(error))) => return Err(error),
            Some(Err(ReadError::ParseError(error))) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    error.to_string(),
                ));
            }
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the server closed the stream",
                ));
            }
        }
    }
}

/// `element` with every element in the namespace `from` moved to `to`: stanzas arrive in the
/// component's namespace and xmpp-parsers reads them in the client's, and back on sending.
pub fn move_namespace(mut element: Element, from: &str, to: &str) -> Element {
    let ns = match element.ns() {
        ns if ns == from => to.to_owned(),
        ns => ns,
    };
    let mut moved = Element::bare(element.name(), ns);
    *moved.attrs_mut() = element.attrs().clone();
    for node in element.take_nodes() {
        match node {
            Node::Element(child) => {
                moved.append_child(move_namespace(child, from, to));
            }
            Node::Text(text) => moved.append_text_node(text),
        }
    }
    moved
}

/// A stanza as the component stream carries it.
fn outgoing_element(stanza: Stanza) -> Element {
    move_namespace(Element::from(stanza), CLIENT_NS, COMPONENT_NS)
}

/// A stanza from the component stream, if the element is one.
fn incoming_stanza(element: Element) -> Result<Stanza, tokio_xmpp::FromElementError> {
    Stanza::try_from(move_namespace(element, COMPONENT_NS, CLIENT_NS))
}

/// The wait after `failures` attempts in a row failed: `delay`, doubled after each failure,
/// at most [`MAX_DELAY`] (or `delay`, if that is longer).
fn backoff(delay: Duration, failures: u32) -> Duration {
    let doubled = delay.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    doubled.min(MAX_DELAY.max(delay))
}

/// Runs the connection until `outgoing` closes or `stop` is told (or dropped): connects (again
/// after a wait that starts at `delay` and grows while attempts fail), sends what comes through
/// `outgoing` and hands what arrives to `events`. A stanza the stream failed to take is sent
/// again on the next stream. At `stop`, what is queued is sent before the stream closes, so
/// that it is not lost when another process takes the component over.
pub async fn run(
    config: ComponentConfig,
    delay: Duration,
    outgoing: &mut mpsc::UnboundedReceiver<Stanza>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut first = true;
    let mut failures = 0;
    let mut unsent: Option<Element> = None;
    loop {
        let connected = tokio::select! {
            connected = connect(&config) => connected,
            _ = &mut stop => return,
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(error) => {
                failures += 1;
                let wait = backoff(delay, failures);
                tracing::warn!(server = %config.server, %error, ?wait, "no component connection to XMPP; trying again");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = &mut stop => return,
                }
                continue;
            }
        };
        tracing::info!(server = %config.server, domain = %config.domain, "connected to XMPP as a component");
        let (resume, resumed) = oneshot::channel();
        if events.send(Event::Online { first, resume }).is_err() {
            return;
        }
        first = false;
        let before = match tokio::time::timeout(RESUME_WAIT, resumed).await {
            Ok(Ok(stanzas)) => stanzas,
            Ok(Err(_)) | Err(_) => Vec::new(),
        };
        'stream: {
            // The joins are made again for the next stream if this one breaks already.
            for stanza in before {
                if let Err(error) = stream.send(&outgoing_element(stanza)).await {
                    tracing::warn!(%error, "a stanza could not be sent; reconnecting");
                    break 'stream;
                }
            }
            if let Some(stanza) = unsent.take()
                && let Err(error) = stream.send(&stanza).await
            {
                tracing::warn!(%error, "a stanza could not be sent; reconnecting");
                unsent = Some(stanza);
                break 'stream;
            }
            loop {
                tokio::select! {
                    received = stream.next() => match received {
                        Some(Ok(element)) => match incoming_stanza(element) {
                            Ok(stanza) => {
                                if events.send(Event::Stanza(Box::new(stanza))).is_err() {
                                    return;
                                }
                            }
                            Err(error) => tracing::info!(%error, "an XMPP element that is no stanza"),
                        },
                        // Quiet for a while: a ping to ourselves through the server keeps the
                        // stream alive (the service answers it).
                        Some(Err(ReadError::SoftTimeout)) => {
                            let mut ping = Iq::from_get("keepalive", Ping);
                            if let Iq::Get { from, to, .. } = &mut ping {
                                *from = config.domain.parse().ok();
                                *to = config.domain.parse().ok();
                            }
                            if stream.send(&outgoing_element(Stanza::Iq(ping))).await.is_err() {
                                break;
                            }
                        }
                        Some(Err(ReadError::ParseError(error))) => {
                            tracing::info!(%error, "an XMPP element that could not be read");
                        }
                        Some(Err(ReadError::HardError(error))) => {
                            tracing::warn!(%error, "the component's stream broke");
                            break;
                        }
                        Some(Err(ReadError::StreamFooterReceived)) | None => break,
                    },
                    sending = outgoing.recv() => match sending {
                        Some(stanza) => {
                            let element = outgoing_element(stanza);
                            if let Err(error) = stream.send(&element).await {
                                tracing::warn!(%error, "a stanza could not be sent; reconnecting");
                                unsent = Some(element);
                                break;
                            }
                        }
                        None => {
                            let _ = stream.shutdown().await;
                            return;
                        }
                    },
                    _ = &mut stop => {
                        while let Ok(stanza) = outgoing.try_recv() {
                            if let Err(error) = stream.send(&outgoing_element(stanza)).await {
                                tracing::warn!(%error, "a stanza could not be sent as the component stopped");
                                break;
                            }
                        }
                        let _ = stream.shutdown().await;
                        tracing::info!(server = %config.server, "the component's connection to XMPP closed");
                        return;
                    }
                }
            }
        }
        tracing::warn!(server = %config.server, "the XMPP component stream ended; reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = &mut stop => return,
        }
        // Waits grow from here if the server stays away.
        failures = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_failures_up_to_a_minute() {
        let second = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(second, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(second, 500), MAX_DELAY);
        let long = Duration::from_secs(90);
        assert_eq!(backoff(long, 3), long);
    }

    #[test]
    fn stanzas_cross_between_the_component_and_client_namespaces() {
        let xml = "<message xmlns='jabber:component:accept' to='a@b' from='c@d/e' type='chat' \
                   xml:lang='en' id='x'><body>hi</body><replace xmlns='urn:xmpp:message-correct:0' \
                   id='y'/></message>";
        let element: Element = xml.parse().unwrap();
        assert!(Stanza::try_from(element.clone()).is_err());
        let Stanza::Message(message) = incoming_stanza(element.clone()).unwrap() else {
            panic!("not a message");
        };
        assert_eq!(
            message.bodies.values().next().map(String::as_str),
            Some("hi")
        );
        assert_eq!(message.payloads.len(), 1);
        assert!(message.payloads[0].is("replace", "urn:xmpp:message-correct:0"));
        let back = outgoing_element(Stanza::Message(message));
        assert!(back.is("message", COMPONENT_NS));
        assert!(back.get_child("body", COMPONENT_NS).is_some());
        assert_eq!(back.attr("id"), Some("x"));
    }
}
