//! The size limit, enforced while bytes flow, and spooling media of unknown size to a file.

use std::{
    io::SeekFrom,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream::BoxStream};
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
};

use crate::{Error, Result};

/// How much is read from a spool file at a time.
const CHUNK: usize = 64 * 1024;

/// How the error for media over the limit begins; [`super::is_too_large`] looks for it.
pub(crate) const TOO_LARGE: &str = "media larger than the size limit of ";

/// The error for media over `limit` bytes, naming the limit.
pub(crate) fn too_large(limit: u64) -> Error {
    Error::Other(format!("{TOO_LARGE}{limit} bytes ({})", human(limit)))
}

/// The error for media over the homeserver's own limit of `limit` bytes.
pub(crate) fn too_large_for_homeserver(limit: u64) -> Error {
    Error::Other(format!(
        "{TOO_LARGE}{limit} bytes ({}) set by the homeserver",
        human(limit)
    ))
}

fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Passes a body through, failing as soon as it has produced more than `limit` bytes, or more or
/// fewer than the length it announced. Failing early matters: the source may be endless, and an
/// upload the homeserver sees break off before its `Content-Length` is discarded, never stored.
///
/// For the same reason the chunk that completes the announced length is held back until the
/// source has ended: were it passed on at once, the homeserver would have a complete upload and
/// store it even though the source went on and the caller is told the upload failed.
pub(crate) struct Limited {
    inner: BoxStream<'static, Result<Bytes>>,
    read: u64,
    limit: u64,
    announced: Option<u64>,
    held: Option<Bytes>,
    /// The source has ended; it must not be polled again.
    ended: bool,
    /// This stream has ended, with or without an error.
    done: bool,
}

impl Limited {
    pub(crate) fn new(
        inner: BoxStream<'static, Result<Bytes>>,
        limit: u64,
        announced: Option<u64>,
    ) -> Self {
        Limited {
            inner,
            read: 0,
            limit,
            announced,
            held: None,
            ended: false,
            done: false,
        }
    }

    /// Counts `chunk`: an error if it breaks a limit, else whether it completes the body.
    fn tally(&mut self, chunk: &Bytes) -> Result<bool> {
        self.read += chunk.len() as u64;
        if self.read > self.limit {
            return Err(too_large(self.limit));
        }
        match self.announced {
            Some(announced) if self.read > announced => Err(Error::Other(format!(
                "the media is longer than the {announced} bytes announced"
            ))),
            Some(announced) => Ok(self.read == announced),
            None => Ok(false),
        }
    }

    fn finish(&mut self) -> Option<Result<Bytes>> {
        self.done = true;
        match self.announced {
            Some(announced) if self.read < announced => Some(Err(Error::Other(format!(
                "the media ended after {} of the {announced} bytes announced",
                self.read
            )))),
            _ => None,
        }
    }
}

impl Stream for Limited {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if self.ended {
                return Poll::Ready(match self.held.take() {
                    Some(chunk) => Some(Ok(chunk)),
                    None => self.finish(),
                });
            }
            match ready!(self.inner.poll_next_unpin(cx)) {
                None => self.ended = true,
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => match self.tally(&chunk) {
                    Ok(true) => self.held = Some(chunk),
                    Ok(false) => return Poll::Ready(Some(Ok(chunk))),
                    // After an error the source is not polled again: it may be endless.
                    Err(e) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// Writes `body` (at most `limit` bytes) to an anonymous temporary file and returns the file,
/// rewound, with its size. The homeserver needs the size before the first byte (Synapse refuses
/// an upload without `Content-Length`), and a file keeps memory flat however big the media is;
/// the operating system deletes it when it is closed.
pub(crate) async fn spool(
    body: BoxStream<'static, Result<Bytes>>,
    limit: u64,
) -> Result<(File, u64)> {
    let file = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| Error::Other(format!("creating a spool file: {e}")))??;
    let mut file = File::from_std(file);
    let mut body = Limited::new(body, limit, None);
    let mut size = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        file.write_all(&chunk).await?;
        size += chunk.len() as u64;
    }
    // tokio writes in the background: flush before seeking, or the seek races the last write.
    file.flush().await?;
    file.seek(SeekFrom::Start(0)).await?;
    Ok((file, size))
}

/// Reads a spooled file back as a body.
pub(crate) fn file_stream(file: File) -> BoxStream<'static, Result<Bytes>> {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = file.read_buf(&mut buf).await?;
        Ok((n > 0).then(|| (buf.freeze(), file)))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;

    fn chunks(sizes: &[usize]) -> BoxStream<'static, Result<Bytes>> {
        let chunks: Vec<Result<Bytes>> = sizes
            .iter()
            .map(|&n| Ok(Bytes::from(vec![7u8; n])))
            .collect();
        futures_util::stream::iter(chunks).boxed()
    }

    async fn collect(stream: Limited) -> Result<usize> {
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.iter().map(Bytes::len).sum())
    }

    #[tokio::test]
    async fn exactly_the_limit_passes() {
        assert_eq!(
            collect(Limited::new(chunks(&[4, 6]), 10, None))
                .await
                .unwrap(),
            10
        );
        assert_eq!(
            collect(Limited::new(chunks(&[4, 6]), 10, Some(10)))
                .await
                .unwrap(),
            10
        );
    }

    #[tokio::test]
    async fn one_byte_over_fails_and_stops_reading() {
        let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = polled.clone();
        // An endless source: the limit must end it.
        let endless = futures_util::stream::repeat_with(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Bytes::from_static(b"abc"))
        })
        .boxed();
        let mut limited = Limited::new(endless, 10, None);
        let mut passed = 0;
        let error = loop {
            match limited.next().await.unwrap() {
                Ok(chunk) => passed += chunk.len(),
                Err(e) => break e,
            }
        };
        assert_eq!(passed, 9);
        assert!(
            error.to_string().contains("size limit of 10 bytes"),
            "{error}"
        );
        assert!(limited.next().await.is_none());
        assert_eq!(polled.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_body_must_match_its_announced_length() {
        let long = collect(Limited::new(chunks(&[5, 5]), 100, Some(8))).await;
        assert!(
            long.unwrap_err().to_string().contains("longer than the 8"),
            "long"
        );
        let short = collect(Limited::new(chunks(&[5]), 100, Some(8))).await;
        assert!(
            short
                .unwrap_err()
                .to_string()
                .contains("ended after 5 of the 8"),
            "short"
        );
    }

    #[tokio::test]
    async fn the_completing_chunk_waits_for_the_end() {
        let mut limited = Limited::new(chunks(&[5, 3, 2]), 100, Some(8));
        assert_eq!(limited.next().await.unwrap().unwrap().len(), 5);
        // The 3 bytes that complete the announced 8 are never let out: 2 more followed.
        let error = limited.next().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("longer than the 8"), "{error}");
        assert!(limited.next().await.is_none());

        let mut exact = Limited::new(chunks(&[5, 0, 3, 0]), 100, Some(8));
        assert_eq!(exact.next().await.unwrap().unwrap().len(), 5);
        assert_eq!(exact.next().await.unwrap().unwrap().len(), 3);
        assert!(exact.next().await.is_none());
        assert!(exact.next().await.is_none());
    }

    #[tokio::test]
    async fn spooling_keeps_every_byte_and_the_limit() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let pieces: Vec<Result<Bytes>> = data
            .chunks(7_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (file, size) = spool(futures_util::stream::iter(pieces).boxed(), 200_000)
            .await
            .unwrap();
        assert_eq!(size, 200_000);
        let back: Vec<Bytes> = file_stream(file).try_collect().await.unwrap();
        assert_eq!(back.concat(), data);

        let over = spool(chunks(&[100_000, 100_001]), 200_000).await;
        assert!(over.unwrap_err().to_string().contains("200000 bytes"));
    }

    #[test]
    fn limits_are_named_in_words() {
        assert_eq!(
            too_large(50 * 1024 * 1024).to_string(),
            "media larger than the size limit of 52428800 bytes (50 MiB)"
        );
        assert_eq!(human(2048), "2 KiB");
        assert_eq!(human(1536), "1536 B");
    }
}
