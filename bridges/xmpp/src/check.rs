//! The bridge's part of `trestle check`: the XMPP server's component port answers a component
//! stream header (XEP-0114) for the bridge's domain. It stops there, before the handshake: a
//! handshake for a domain whose component is connected (the running bridge's) could take the
//! domain from it.

use std::{future::Future, path::Path, pin::Pin, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use trestle::plugin::{Finding, PluginSettings};

use crate::settings::{ComponentConfig, Settings};

/// How long the server has to connect and answer the header.
const WAIT: Duration = Duration::from_secs(10);
/// How long to wait after the server's header for a stream error that may follow it.
const AFTER_HEADER: Duration = Duration::from_millis(500);

/// Opens a component stream to the configured server and reads its answer.
pub(crate) fn check(
    settings: &PluginSettings<'_>,
) -> Pin<Box<dyn Future<Output = Vec<Finding>> + Send>> {
    let config = settings.config_path().to_path_buf();
    let read = settings.read_for_check(|s: Settings| s.check(&config));
    Box::pin(async move {
        let checked = match read {
            Ok(checked) => checked,
            Err(finding) => return vec![finding],
        };
        match checked.component {
            None => vec![Finding::Note(format!(
                "xmpp: no XMPP server to bridge: set `server` and `secret` under \
                 `plugins.xmpp.settings` in {} (docs/xmpp.md)",
                config.display()
            ))],
            Some(component) => vec![check_component(&config, &component).await],
        }
    })
}

async fn check_component(config: &Path, component: &ComponentConfig) -> Finding {
    let place = format!("xmpp: component port {}", component.server);
    let field = |name: &str| format!("`plugins.xmpp.settings.{name}` in {}", config.display());
    match timeout(WAIT, open_stream(&component.server, &component.domain)).await {
        Err(_) => Finding::Fail(format!(
            "{place}: no stream header within {} s: is it the server's component port \
             (`component_ports` in Prosody's configuration)? Check {}",
            WAIT.as_secs(),
            field("server")
        )),
        Ok(Err(error)) => Finding::Fail(format!(
            "{place}: {error}; check {}, and that the XMPP server runs",
            field("server")
        )),
        Ok(Ok(Answer::Header)) => Finding::Ok(format!(
            "{place} answers the stream header for the component `{}`",
            component.domain
        )),
        Ok(Ok(Answer::Error(condition))) if condition == "host-unknown" => Finding::Fail(format!(
            "{place}: the server has no component `{}` (stream error host-unknown): set {} to \
             the name of a `Component` in its configuration, or add `Component \"{}\"` with \
             the bridge's secret there",
            component.domain,
            field("domain"),
            component.domain
        )),
        Ok(Ok(Answer::Error(condition))) => Finding::Fail(format!(
            "{place}: the server refused the stream for `{}` (stream error {condition}); check {} \
             and {}",
            component.domain,
            field("server"),
            field("domain")
        )),
        Ok(Ok(Answer::Other(text))) => Finding::Fail(format!(
            "{place}: the answer is no XMPP stream ({text:?}): is it the component port? Check {}",
            field("server")
        )),
    }
}

/// What the server answered to the header.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Its own header, and no error after it.
    Header,
    /// A stream error, with its condition (`host-unknown`, …).
    Error(String),
    /// Something that is not an XMPP stream (the start of it).
    Other(String),
}

async fn open_stream(server: &str, domain: &str) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("could not connect: {e}"))?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        escape(domain)
    );
    stream
        .write_all(header.as_bytes())
        .await
        .map_err(|e| format!("could not send the stream header: {e}"))?;
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    loop {
        // Once the header is in, a stream error would follow at once: wait briefly for it.
        let read = if header_end(&answer).is_some() {
            match timeout(AFTER_HEADER, stream.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => break,
            }
        } else {
            stream.read(&mut buf).await
        };
        match read.map_err(|e| format!("could not read the answer: {e}"))? {
            0 => break,
            n => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
        if stream_error(&answer).is_some() || answer.len() > 64 * 1024 {
            break;
        }
    }
    // A polite end; the server closes the stream without a handshake anyway.
    let _ = stream.write_all(b"</stream:stream>").await;
    Ok(classify(&answer))
}

fn classify(answer: &str) -> Answer {
    if let Some(condition) = stream_error(answer) {
        return Answer::Error(condition);
    }
    if header_end(answer).is_some() {
        return Answer::Header;
    }
    Answer::Other(answer.chars().take(80).collect())
}

/// Where the server's `<stream:stream …>` header ends, if it is all in.
fn header_end(answer: &str) -> Option<usize> {
    let start = answer.find("<stream:stream")?;
    answer[start..].find('>').map(|end| start + end + 1)
}

/// The condition of a `<stream:error>` in the answer: its first child element's name.
fn stream_error(answer: &str) -> Option<String> {
    let start = answer.find("<stream:error")?;
    let rest = &answer[start..];
    let inner = &rest[rest.find('>')? + 1..];
    let child = inner.trim_start().strip_prefix('<')?;
    let name: String = child
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
}
