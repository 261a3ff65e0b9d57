//! Files both ways. From XMPP, a message with an out-of-band URL
//! ([XEP-0066](https://xmpp.org/extensions/xep-0066.html), which is also how an HTTP upload,
//! [XEP-0363](https://xmpp.org/extensions/xep-0363.html), is shared) is fetched and uploaded
//! to Matrix as the sender's ghost: `m.image`, `m.video`, `m.audio` or `m.file` by its type.
//! From Matrix, a file is put on the server's HTTP upload service (found through service
//! discovery, [XEP-0030](https://xmpp.org/extensions/xep-0030.html)) as the sender's JID and
//! sent as its URL with an out-of-band element; without a service it goes as the kit's media
//! link.
//!
//! A URL from XMPP is chosen by a stranger: it is fetched with the framework's safe fetcher,
//! which reaches only public addresses, unless it is under the server's own upload service's
//! `upload_url` (configured, so trusted), which may be on loopback or a private network.

use std::time::Duration;

use reqwest::{Method, Url};
use tokio_xmpp::{
    jid::Jid,
    parsers::{
        disco::{DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult},
        http_upload::{SlotRequest, SlotResult},
        message::Message,
        oob::Oob,
    },
};
use trestle::{
    fetch::{FetchPolicy, Fetcher},
    ruma::MxcUri,
    sync::MutexExt,
};
use trestle_bridge::{BridgeError, MessageContent, NetworkResult};

use crate::{
    hub::{Hub, Kit},
    ids::{self, UserId},
};

/// The feature an HTTP upload service announces.
const HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// The most bytes of one file fetched from XMPP: the homeserver's usual upload limit.
const MAX_FILE: usize = trestle::media::DEFAULT_LIMIT as usize;

/// How long fetching or putting one file may take.
const TRANSFER: Duration = Duration::from_secs(120);

impl Hub {
    /// Whether `jid` is an HTTP upload service (its service discovery says so).
    async fn is_upload_service(&self, jid: &Jid) -> bool {
        let from = Jid::from(self.bot_jid().clone());
        let query = DiscoInfoQuery { node: None };
        let Ok(Some(answer)) = self.ask(from, jid.clone(), query.into()).await else {
            return false;
        };
        DiscoInfoResult::try_from(answer).is_ok_and(|info| info.features.contains(HTTP_UPLOAD))
    }

    /// The server's HTTP upload service: the configured one, or the first of the server's
    /// items that is one. Remembered once found; looked for again while there is none (the
    /// server may have been down).
    async fn upload_service(&self) -> Option<Jid> {
        if let Some(found) = self.requests.upload_service.lock_unpoisoned().clone() {
            return Some(found);
        }
        let configured = self.cfg.settings.upload_service().ok().flatten();
        let candidates = match configured {
            Some(jid) => vec![jid],
            None => self.server_items().await,
        };
        for candidate in candidates {
            if self.is_upload_service(&candidate).await {
                *self.requests.upload_service.lock_unpoisoned() = Some(candidate.clone());
                return Some(candidate);
            }
        }
        None
    }

    /// The items of the server's domain (the component's domain less its first label): its
    /// components and services.
    async fn server_items(&self) -> Vec<Jid> {
        let Some((_, server)) = self.domain().split_once('.') else {
            return Vec::new();
        };
        let Ok(server) = Jid::new(server) else {
            return Vec::new();
        };
        let from = Jid::from(self.bot_jid().clone());
        let query = DiscoItemsQuery {
            node: None,
            rsm: None,
        };
        match self.ask(from, server, query.into()).await {
            Ok(Some(answer)) => DiscoItemsResult::try_from(answer)
                .map(|items| items.items.into_iter().map(|item| item.jid).collect())
                .unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::info!(%error, "the server's services could not be listed");
                Vec::new()
            }
        }
    }

    /// Puts a Matrix file on the server's upload service as `from` and answers the URL it is
    /// served at; `None` when the server has no upload service.
    pub async fn share_file(
        &self,
        bridge: &Kit,
        from: &Jid,
        mxc: &MxcUri,
        content: &MessageContent,
    ) -> NetworkResult<Option<String>> {
        let Some(service) = self.upload_service().await else {
            return Ok(None);
        };
        let app = bridge.app()?;
        let (bytes, downloaded_type) = app.media().download_bytes(mxc).await?;
        let content_type = content
            .mimetype
            .clone()
            .or(downloaded_type)
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let request = SlotRequest {
            filename: file_name(&content.body),
            size: bytes.len() as u64,
            content_type: Some(content_type.clone()),
        };
        let answer = self
            .ask(from.clone(), service.clone(), request.into())
            .await?;
        let slot = answer
            .ok_or_else(|| BridgeError::Remote(format!("{service} gave no upload slot")))
            .and_then(|slot| {
                SlotResult::try_from(slot)
                    .map_err(|e| BridgeError::Remote(format!("{service}'s upload slot: {e}")))
            })?;
        // The slot comes from the server the bridge is configured for, through its component
        // stream: its URL is the server's own, so the configured server is reached wherever
        // it is.
        let client = reqwest::Client::builder()
            .timeout(TRANSFER)
            .build()
            .map_err(|e| BridgeError::Remote(format!("an HTTP client: {e}")))?;
        let mut put = client
            .put(&slot.put.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        for header in &slot.put.headers {
            put = put.header(header.name.as_str(), &header.value);
        }
        let response = put
            .send()
            .await
            .map_err(|e| BridgeError::Retriable(format!("putting a file on {service}: {e}")))?;
        if !response.status().is_success() {
            return Err(BridgeError::Remote(format!(
                "{service} refused the file: {}",
                response.status()
            )));
        }
        Ok(Some(slot.get.url))
    }

    /// A fetcher for `url`: the trusting one for the server's own upload service, the safe
    /// one for any other.
    fn fetcher_for(&self, url: &Url) -> NetworkResult<Fetcher> {
        let trusted = self
            .cfg
            .settings
            .upload_url()
            .ok()
            .flatten()
            .is_some_and(|base| is_under(url, &base));
        let policy = FetchPolicy {
            allow_private: trusted,
            // The server's own files are served where it says: a redirect could go anywhere.
            max_redirects: if trusted { 0 } else { 5 },
            max_bytes: MAX_FILE,
            timeout: TRANSFER,
        };
        Ok(Fetcher::new(policy)?)
    }

    /// Fetches `url` and uploads it to Matrix as `sender`'s ghost: its content with the file
    /// name from the URL and the type the server gave (or the name suggests).
    async fn fetch_file(
        &self,
        bridge: &Kit,
        sender: &UserId,
        url: &str,
    ) -> NetworkResult<MessageContent> {
        let parsed = Url::parse(url)
            .map_err(|e| BridgeError::BadRequest(format!("a file's URL {url:?}: {e}")))?;
        let fetcher = self.fetcher_for(&parsed)?;
        let response = fetcher
            .request(Method::GET, url)?
            .send()
            .await
            .map_err(|e| BridgeError::Remote(format!("fetching {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(BridgeError::Remote(format!(
                "fetching {url}: {}",
                response.status()
            )));
        }
        let name = url_file_name(&parsed);
        let served = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned())
            .filter(|value| !value.is_empty() && value != "application/octet-stream");
        let content_type = served.unwrap_or_else(|| type_by_name(&name).to_owned());
        let bytes = fetcher.body(response).await?;
        let ghost = bridge.ghost_user_id(sender)?;
        let mxc = bridge
            .app()?
            .media()
            .as_user(&ghost)
            .upload_bytes(bytes, &content_type, Some(&name))
            .await?;
        Ok(MessageContent::media(name, mxc, Some(content_type)))
    }
}

/// The content of a message from XMPP with the body `body`: its file when it carries one (an
/// out-of-band URL) that could be fetched, else its text.
pub async fn content(
    bridge: &Kit,
    sender: &UserId,
    message: &Message,
    body: String,
) -> MessageContent {
    let Some(url) = oob_url(message) else {
        return ids::content(body);
    };
    match bridge.network().fetch_file(bridge, sender, &url).await {
        Ok(file) => file,
        Err(error) => {
            // Nothing is lost: the message arrives as its text, the URL in it.
            tracing::info!(%url, %error, "a file from XMPP could not be fetched; sent as its text");
            ids::content(body)
        }
    }
}

/// The message's out-of-band URL (XEP-0066), if it has one.
pub fn oob_url(message: &Message) -> Option<String> {
    message
        .payloads
        .iter()
        .find_map(|p| Oob::try_from(p.clone()).ok())
        .map(|oob| oob.url)
}

/// `message` with an out-of-band element for `url`, so that clients show the file itself.
pub fn with_oob(mut message: Message, url: &str) -> Message {
    message.payloads.push(
        Oob {
            url: url.to_owned(),
            desc: None,
        }
        .into(),
    );
    message
}

/// Whether `url` is under `base`: the same scheme, host and port, and a path that starts
/// with the base's.
fn is_under(url: &Url, base: &Url) -> bool {
    let folder = match base.path() {
        path if path.ends_with('/') => path.to_owned(),
        path => format!("{path}/"),
    };
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.path().starts_with(&folder)
}

/// A file name for the upload service from a Matrix body: no path, never empty.
fn file_name(body: &str) -> String {
    let name = body.trim().rsplit(['/', '\\']).next().unwrap_or_default();
    match name.trim() {
        "" => "file".to_owned(),
        name => name.to_owned(),
    }
}

/// The file name a URL ends with (`file` if none).
fn url_file_name(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default();
    file_name(last)
}

/// The type a file's name suggests, for servers that do not say.
fn type_by_name(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("mp4" | "m4v") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("m4a") => "audio/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_under_the_upload_service_are_trusted() {
        let base = Url::parse("http://127.0.0.1:5280/file_share").unwrap();
        let under = |url: &str| is_under(&Url::parse(url).unwrap(), &base);
        assert!(under("http://127.0.0.1:5280/file_share/abc/cat.png"));
        assert!(!under("http://127.0.0.1:5280/file_share_other/cat.png"));
        assert!(!under("http://127.0.0.1:5280/admin"));
        assert!(!under("http://127.0.0.1:5281/file_share/abc/cat.png"));
        assert!(!under("https://127.0.0.1:5280/file_share/abc/cat.png"));
        assert!(!under("http://127.0.0.2:5280/file_share/abc/cat.png"));
        // Dot segments are resolved before the comparison.
        assert!(!under("http://127.0.0.1:5280/file_share/../admin"));
    }

    #[test]
    fn names_and_types_of_files() {
        assert_eq!(file_name("holiday/cat.png"), "cat.png");
        assert_eq!(file_name("  "), "file");
        let url = Url::parse("https://upload.example.org/x/y/Cat.JPG").unwrap();
        assert_eq!(url_file_name(&url), "Cat.JPG");
        assert_eq!(type_by_name("Cat.JPG"), "image/jpeg");
        assert_eq!(type_by_name("notes"), "application/octet-stream");
    }

    #[test]
    fn out_of_band_urls_are_read_and_written() {
        let message = Message::groupchat(Jid::new("room@conference.example").unwrap());
        assert!(oob_url(&message).is_none());
        let with = with_oob(message, "https://upload.example.org/a/cat.png");
        assert_eq!(
            oob_url(&with).as_deref(),
            Some("https://upload.example.org/a/cat.png")
        );
    }
}
