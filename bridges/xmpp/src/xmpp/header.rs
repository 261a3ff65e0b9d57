//! The server's stream header on a component stream, as tokio-xmpp's XML streams read it.
//!
//! XEP-0114 streams carry no `version` (they predate XMPP 1.0's stream features), and
//! tokio-xmpp reads a header without one only when built with its `component` feature, which
//! the bridge does not use (see [`super::component`]). [`Versioned`] passes the bytes from the
//! server through and adds `version='1.0'` to its stream header when it has none; nothing
//! after the header is touched.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest stream header looked for; a server sending more without one is not one.
const MAX_HEADER: usize = 4096;

/// A connection whose first stream header from the server has a `version`.
pub struct Versioned<S> {
    inner: S,
    /// Bytes read up to the end of the header, until it is complete.
    scanned: Vec<u8>,
    /// Bytes ready to hand out (the header, amended).
    ready: Vec<u8>,
    /// Whether the header went by.
    done: bool,
}

impl<S> Versioned<S> {
    /// Wraps a connection to the server.
    pub fn new(inner: S) -> Self {
        Versioned {
            inner,
            scanned: Vec::new(),
            ready: Vec::new(),
            done: false,
        }
    }
}

/// Where the stream header in `bytes` ends (its `>`), if it is complete.
fn header_end(bytes: &[u8]) -> Option<usize> {
    let start = find(bytes, b":stream ").or_else(|| find(bytes, b"<stream "))?;
    bytes[start..]
        .iter()
        .position(|&b| b == b'>')
        .map(|end| start + end)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The bytes with `version='1.0'` added to the header ending at `end`, unless it has one.
pub fn amend(mut bytes: Vec<u8>, end: usize) -> Vec<u8> {
    let tag_start = find(&bytes[..end], b":stream ")
        .or_else(|| find(&bytes[..end], b"<stream "))
        .unwrap_or(0);
    if find(&bytes[tag_start..end], b"version=").is_none() {
        bytes.splice(end..end, b" version='1.0'".iter().copied());
    }
    bytes
}

impl<S: AsyncRead + Unpin> AsyncRead for Versioned<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = read.filled();
            if filled.is_empty() {
                // The server closed before its header ended: what came goes on as it is.
                this.done = true;
                this.ready = std::mem::take(&mut this.scanned);
                continue;
            }
            this.scanned.extend_from_slice(filled);
            if let Some(end) = header_end(&this.scanned) {
                this.ready = amend(std::mem::take(&mut this.scanned), end);
                this.done = true;
            } else if this.scanned.len() > MAX_HEADER {
                this.ready = std::mem::take(&mut this.scanned);
                this.done = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Versioned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_header_without_version_gets_one_and_the_rest_passes() {
        let server = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                      id='abc' xmlns='jabber:component:accept'><handshake/>";
        let mut read = String::new();
        Versioned::new(server.as_bytes())
            .read_to_string(&mut read)
            .await
            .unwrap();
        assert_eq!(
            read,
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             id='abc' xmlns='jabber:component:accept' version='1.0'><handshake/>"
        );
        let versioned = "<stream:stream version='1.0' id='x'><a/>";
        let mut read = String::new();
        Versioned::new(versioned.as_bytes())
            .read_to_string(&mut read)
            .await
            .unwrap();
        assert_eq!(read, versioned);
    }
}
