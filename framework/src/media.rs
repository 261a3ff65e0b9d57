//! Media: uploading to and downloading from the homeserver's
//! [content repository](https://spec.matrix.org/v1.16/client-server-api/#content-repository),
//! streamed and size-limited, as the bot or a ghost.
//!
//! Nothing here holds a whole file in memory unless asked to ([`Media::upload_bytes`],
//! [`Media::download_bytes`]): bodies flow through in chunks, and every byte counts against the
//! [`Media`]'s limit (50 MiB unless set), so a hostile or broken source cannot fill the disk or
//! the memory. A body the homeserver sees break off before its `Content-Length` is discarded by
//! the homeserver, so a failed upload leaves nothing behind.
//!
//! Downloads use the authenticated endpoint (`/_matrix/client/v1/media/download`, Matrix 1.11):
//! homeservers with authenticated media on — Synapse's default — refuse the old unauthenticated
//! one for new media. Uploads have no `client/v1` form; the spec keeps them at
//! `/_matrix/media/v3/upload`, authenticated as before.

mod disposition;
mod limit;
#[cfg(test)]
mod tests;

use crate::sync::MutexExt;
use std::{
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use ruma::{IdParseError, MxcUri, OwnedMxcUri, OwnedUserId, UserId, api::EndpointError};
use serde::Deserialize;

use crate::{
    Appservice, Error, Result,
    fetch::{FetchPolicy, Fetcher, describe},
};

/// The default size limit: Synapse's default `max_upload_size`.
pub const DEFAULT_LIMIT: u64 = 50 * 1024 * 1024;

/// The default time one transfer may take, from the request to the last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The content type of media that does not say what it is.
const OCTET_STREAM: &str = "application/octet-stream";

/// Uploads and downloads media as one of the appservice's users. Cheap to clone.
///
/// ```no_run
/// use trestle::ruma::{
///     RoomId,
///     events::room::message::{ImageMessageEventContent, MessageType, RoomMessageEventContent},
/// };
///
/// async fn post_cat(app: trestle::Appservice, room: &RoomId) -> trestle::Result<()> {
///     let url = app.media().upload_from_url("https://example.org/cat.png", None).await?;
///     let image = ImageMessageEventContent::plain("cat.png".to_owned(), url);
///     let content = RoomMessageEventContent::new(MessageType::Image(image));
///     app.bot().send(room, &content).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Media {
    app: Appservice,
    user_id: OwnedUserId,
    limit: u64,
    timeout: Duration,
    /// What [`Media::upload_from_url`] fetches with; `None`: [`default_fetcher`].
    fetcher: Option<Fetcher>,
}

impl Appservice {
    /// Media, acting as the bot.
    pub fn media(&self) -> Media {
        Media {
            app: self.clone(),
            user_id: self.bot_user_id().clone(),
            limit: DEFAULT_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            fetcher: None,
        }
    }
}

/// A download under way: the headers are in, the body streams.
#[non_exhaustive]
pub struct Download {
    /// The media's type, as the homeserver gives it (Synapse adds `; charset=UTF-8` to text).
    pub content_type: Option<String>,
    /// The size, when the homeserver says it up front.
    pub content_length: Option<u64>,
    /// The name from `Content-Disposition`, as the uploader gave it: sanitize it before using
    /// it as a path.
    pub filename: Option<String>,
    /// The bytes. The stream fails once more than the limit came, or if the connection breaks.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .field("filename", &self.filename)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// Reads the whole body into memory.
    pub async fn bytes(self) -> Result<Vec<u8>> {
        // The announced length is only a hint: the limit already bounds it.
        let mut out = Vec::with_capacity(self.content_length.unwrap_or(0).min(1 << 24) as usize);
        let mut body = self.body;
        while let Some(chunk) = body.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct UploadResponse {
    content_uri: OwnedMxcUri,
}

impl Media {
    /// The same, acting as `user_id` — a ghost, registered on first use if it is not yet.
    pub fn as_user(mut self, user_id: &UserId) -> Media {
        self.user_id = user_id.to_owned();
        self
    }

    /// The same with another size limit, in bytes, for uploads and downloads alike. A homeserver
    /// has its own (Synapse's `max_upload_size`, 50 MiB by default); a larger limit here does
    /// not lift it.
    pub fn with_limit(mut self, bytes: u64) -> Media {
        self.limit = bytes;
        self
    }

    /// The same with another time limit for one whole transfer (10 minutes unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Media {
        self.timeout = timeout;
        self
    }

    /// The same, fetching [`Media::upload_from_url`]'s URLs with `fetcher`: a plugin's own
    /// [`FetchPolicy`], say one that lets private addresses through because its configuration
    /// says so.
    pub fn with_fetcher(mut self, fetcher: Fetcher) -> Media {
        self.fetcher = Some(fetcher);
        self
    }

    /// The user this acts as.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The size limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Uploads `body` and returns its `mxc://` URI
    /// ([`POST /_matrix/media/v3/upload`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav3upload)).
    ///
    /// With `size` known, the body streams straight to the homeserver: more than the limit is
    /// refused before anything is sent, and a body longer or shorter than `size` fails the
    /// upload. Without it, the body is first written to a temporary file, because homeservers
    /// want the length up front (Synapse answers 400 to an upload without `Content-Length`).
    /// Either way the upload fails as soon as more than the limit was read; the error then says
    /// `media larger than the size limit of … bytes`, and the homeserver stores nothing.
    pub async fn upload_stream<S, E>(
        &self,
        body: S,
        content_type: &str,
        filename: Option<&str>,
        size: Option<u64>,
    ) -> Result<OwnedMxcUri>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = body
            .map_err(|e| Error::Other(format!("reading the media to upload: {}", e.into())))
            .boxed();
        self.upload(body, content_type, filename, size).await
    }

    /// Uploads bytes already in memory.
    pub async fn upload_bytes(
        &self,
        bytes: impl Into<Bytes>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri> {
        let bytes = bytes.into();
        let size = bytes.len() as u64;
        let body = futures_util::stream::once(async { Ok(bytes) }).boxed();
        self.upload(body, content_type, filename, Some(size)).await
    }

    /// Fetches `url` and uploads what it answers, streaming: the remote file is never whole in
    /// memory. The content type is the remote's (`application/octet-stream` if it names none);
    /// the file name is `filename`, else the remote's `Content-Disposition` name. A remote that
    /// announces more than the limit is refused before its body is read.
    ///
    /// The URL may come from a stranger, so it is fetched through a [`Fetcher`] that will not
    /// reach this machine or a private, loopback or link-local network (checked for the URL,
    /// each name's addresses and every redirect; `localhost` and `127.0.0.1` are refused with
    /// [`Error::Fetch`] before any request): by default one with [`FetchPolicy::default`]'s
    /// rules, or the one [`Media::with_fetcher`] gave. For a URL the plugin itself trusts, see
    /// [`Media::upload_from_trusted_url`]. The fetch never carries the appservice's token.
    pub async fn upload_from_url(&self, url: &str, filename: Option<&str>) -> Result<OwnedMxcUri> {
        let fetcher = match &self.fetcher {
            Some(fetcher) => fetcher.clone(),
            None => default_fetcher()?,
        };
        let request = fetcher
            .request(reqwest::Method::GET, url)
            .map_err(|e| Error::Fetch(format!("fetching {}: {e}", without_query(url))))?;
        self.upload_fetched(request, url, filename).await
    }

    /// As [`Media::upload_from_url`], for a URL the plugin trusts: fetched wherever it points,
    /// this machine and private networks included, following up to 10 redirects anywhere
    /// (through the environment's proxy, if one is set). Only for URLs that come from the
    /// plugin's own code or its administrator's configuration — never for one a room member
    /// typed or a remote network sent, which could make Trestle read internal services.
    pub async fn upload_from_trusted_url(
        &self,
        url: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri> {
        let request = trusted_client()?.get(url);
        self.upload_fetched(request, url, filename).await
    }

    async fn upload_fetched(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri> {
        let shown = without_query(url);
        let fetch_error = move |e: reqwest::Error| {
            Error::Fetch(format!("fetching {shown}: {}", describe(&e.without_url())))
        };
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(fetch_error.clone())?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Fetch(format!(
                "fetching {}: the server answered {status}",
                without_query(url)
            )));
        }
        let content_type = header(response.headers(), CONTENT_TYPE)
            .unwrap_or(OCTET_STREAM)
            .to_owned();
        let remote_name =
            header(response.headers(), CONTENT_DISPOSITION).and_then(disposition::filename);
        let filename = filename.map(str::to_owned).or(remote_name);
        let size = response.content_length();
        let body = response.bytes_stream().map_err(fetch_error).boxed();
        self.upload(body, &content_type, filename.as_deref(), size)
            .await
    }

    async fn upload(
        &self,
        body: BoxStream<'static, Result<Bytes>>,
        content_type: &str,
        filename: Option<&str>,
        size: Option<u64>,
    ) -> Result<OwnedMxcUri> {
        let (body, size) = match size {
            Some(size) if size > self.limit => return Err(limit::too_large(self.limit)),
            Some(size) => (body, size),
            None => {
                let (file, size) = limit::spool(body, self.limit).await?;
                (limit::file_stream(file), size)
            }
        };
        self.app.intent(&self.user_id).ensure_registered().await?;

        // reqwest turns a failing body into its own error, which says only that the body
        // failed; the slot keeps ours, which says why.
        let failure = Arc::new(Mutex::new(None::<Error>));
        let slot = failure.clone();
        let body = limit::Limited::new(body, self.limit, Some(size)).map_err(move |e| {
            let message = e.to_string();
            *slot.lock_unpoisoned() = Some(e);
            message
        });

        let mut url = self.url(&["_matrix", "media", "v3", "upload"])?;
        if let Some(filename) = filename {
            url.query_pairs_mut().append_pair("filename", filename);
        }
        let client = self.app.client();
        let sent = client
            .http()
            .post(url)
            .bearer_auth(client.as_token())
            .header(CONTENT_TYPE, content_type)
            // Without it reqwest would send the stream chunked, which Synapse refuses.
            .header(CONTENT_LENGTH, size)
            .timeout(self.timeout)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        let taken = failure.lock_unpoisoned().take();
        let response = match (sent, taken) {
            (Err(_), Some(ours)) => return Err(ours),
            (Err(e), None) => return Err(self.explain_broken_upload(e.into(), size).await),
            (Ok(response), _) => response,
        };
        if !response.status().is_success() {
            return Err(matrix_error(response).await);
        }
        let bytes = response.bytes().await?;
        let answer: UploadResponse = serde_json::from_slice(&bytes)?;
        Ok(answer.content_uri)
    }

    /// The homeserver's upload limit in bytes, if it names one
    /// ([`GET /_matrix/client/v1/media/config`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediaconfig)).
    pub async fn homeserver_limit(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Config {
            #[serde(rename = "m.upload.size")]
            upload_size: Option<u64>,
        }
        let url = self.url(&["_matrix", "client", "v1", "media", "config"])?;
        self.app.intent(&self.user_id).ensure_registered().await?;
        let client = self.app.client();
        let response = client
            .http()
            .get(url)
            .bearer_auth(client.as_token())
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(matrix_error(response).await);
        }
        let config: Config = serde_json::from_slice(&response.bytes().await?)?;
        Ok(config.upload_size)
    }

    /// Synapse does not refuse an upload over its limit up front: it reads the body up to the
    /// limit and then drops the connection, without an answer (it answers `413 M_TOO_LARGE` only
    /// when its limit is below the 13 MiB it accepts for any request). A broken connection
    /// alone would be a baffling error, so it is checked against the homeserver's limit.
    async fn explain_broken_upload(&self, error: Error, size: u64) -> Error {
        match self.homeserver_limit().await {
            Ok(Some(max)) if size > max => limit::too_large_for_homeserver(max),
            _ => error,
        }
    }

    /// Starts downloading `mxc`
    /// ([`GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid)),
    /// authenticated as this [`Media`]'s user. Media announced as larger than the limit is
    /// refused before its body is read; the body stream fails once more than the limit came.
    /// The whole transfer must end within the timeout, so read the body without dawdling.
    pub async fn download(&self, mxc: &MxcUri) -> Result<Download> {
        let (server_name, media_id) = mxc.parts().map_err(IdParseError::from)?;
        let url = self.url(&[
            "_matrix",
            "client",
            "v1",
            "media",
            "download",
            server_name.as_str(),
            media_id,
        ])?;
        self.app.intent(&self.user_id).ensure_registered().await?;
        let client = self.app.client();
        let response = client
            .http()
            .get(url)
            .bearer_auth(client.as_token())
            .timeout(self.timeout)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(matrix_error(response).await);
        }
        let content_length = response.content_length();
        if content_length.is_some_and(|n| n > self.limit) {
            return Err(limit::too_large(self.limit));
        }
        let headers = response.headers();
        let content_type = header(headers, CONTENT_TYPE).map(str::to_owned);
        let filename = header(headers, CONTENT_DISPOSITION).and_then(disposition::filename);
        let body = response.bytes_stream().map_err(Error::from).boxed();
        Ok(Download {
            content_type,
            content_length,
            filename,
            body: limit::Limited::new(body, self.limit, content_length).boxed(),
        })
    }

    /// Downloads `mxc` whole, within the limit: the bytes and their content type.
    pub async fn download_bytes(&self, mxc: &MxcUri) -> Result<(Vec<u8>, Option<String>)> {
        let download = self.download(mxc).await?;
        let content_type = download.content_type.clone();
        Ok((download.bytes().await?, content_type))
    }

    /// `<homeserver><path>?user_id=<user>`: identity assertion picks the user to act as.
    fn url(&self, segments: &[&str]) -> Result<url::Url> {
        let base = self.app.client().base_url();
        let mut url = url::Url::parse(base)
            .map_err(|e| Error::Other(format!("bad homeserver URL {base}: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| Error::Other(format!("bad homeserver URL {base}")))?
            .pop_if_empty()
            .extend(segments);
        url.query_pairs_mut()
            .append_pair("user_id", self.user_id.as_str());
        Ok(url)
    }
}

/// The homeserver's error answer as a Matrix error (`errcode`, message, status).
async fn matrix_error(response: reqwest::Response) -> Error {
    let mut builder = http::Response::builder().status(response.status());
    if let Some(headers) = builder.headers_mut() {
        headers.extend(
            response
                .headers()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => return e.into(),
    };
    match builder.body(body) {
        Ok(http_response) => Error::from(
            <ruma::api::error::Error as EndpointError>::from_http_response(http_response),
        ),
        Err(e) => Error::Other(format!("bad response from the homeserver: {e}")),
    }
}

/// Whether `error` says the media was too large: over a [`Media`]'s limit, or over the
/// homeserver's (`M_TOO_LARGE`).
pub fn is_too_large(error: &Error) -> bool {
    match error {
        Error::Other(message) => message.starts_with(limit::TOO_LARGE),
        _ => matches!(error.kind(), Some(ruma::api::error::ErrorKind::TooLarge)),
    }
}

fn header(headers: &http::HeaderMap, name: http::HeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}

/// A URL fit for messages and logs: signed URLs carry secrets in the query.
fn without_query(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "an invalid URL".to_owned(),
    }
}

/// The [`Fetcher`] of [`Media::upload_from_url`] unless another is given: public addresses only.
/// It is not the homeserver client, so that the `as_token` can never travel to a stranger; it
/// is shared, so connections to one host are reused.
fn default_fetcher() -> Result<Fetcher> {
    static FETCHER: OnceLock<Fetcher> = OnceLock::new();
    if let Some(fetcher) = FETCHER.get() {
        return Ok(fetcher.clone());
    }
    let fetcher = Fetcher::new(FetchPolicy {
        // Each transfer sets its own ([`Media::with_timeout`]).
        timeout: DEFAULT_TIMEOUT,
        ..FetchPolicy::default()
    })?;
    Ok(FETCHER.get_or_init(|| fetcher).clone())
}

/// The client of [`Media::upload_from_trusted_url`], which reaches any address. Like the
/// default fetcher, never the homeserver client.
fn trusted_client() -> Result<reqwest::Client> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A stalled server fails the fetch long before the transfer's own timeout.
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("trestle/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(CLIENT.get_or_init(|| client).clone())
}
