//! Media links for the remote side: a signed, expiring URL of the bridge's own HTTP listener
//! that streams one file of the homeserver's media repository, so that people on the remote
//! network can open what Matrix users send without an account and without the homeserver
//! serving media unauthenticated.
//!
//! Since Matrix 1.11 media is downloaded with an access token
//! ([`GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid)),
//! and Synapse refuses the old unauthenticated endpoint for new media: a bare homeserver link
//! pasted into IRC no longer opens. [`BridgeHandle::media_link`] turns an `mxc://` URI into
//! `<public_url>/media/v1/download/<server>/<media id>?expires=<unix seconds>&sig=<signature>`;
//! the kit answers it by downloading the file as the bot and passing it through.
//!
//! It is never an open proxy: the signature is an HMAC-SHA256, under a key only the bridge
//! knows, of the `mxc://` URI and the expiry, so only files the bridge itself linked can be
//! fetched, only until the link expires, and only from the homeserver; it is checked in
//! constant time. A wrong signature (or a signed link with another file's path) gets
//! `403 M_FORBIDDEN`, an expired link `410`, a file over the size limit `413 M_TOO_LARGE`.
//!
//! The key is [`MediaLinkConfig::key`] when set (several processes behind one address must
//! share it), else made once and kept in the store, so links outlive a restart.

mod key;
mod serve;
#[cfg(test)]
mod tests;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use ruma::MxcUri;
use serde::Deserialize;
use sha2::Sha256;

use super::{BridgeError, BridgeHandle, Network, NetworkResult};

pub(crate) use serve::routes;

/// Where the links are served, under the bridge's web root.
pub(crate) const PATH: &str = "/media/v1/download";

/// The settings of media links, [`super::BridgeConfig::media_links`].
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MediaLinkConfig {
    /// The address people on the remote network reach the bridge's web root at
    /// (`https://bridge.example.org/irc`), for a bridge behind a reverse proxy. Unset: the
    /// registration's `url`, where the homeserver reaches the appservice.
    pub public_url: Option<String>,
    /// The secret links are signed with (any string; long and random). Unset: a random key
    /// made once and kept in the store.
    pub key: Option<String>,
    /// Seconds a link stays valid (7 days unless set).
    pub lifetime: u64,
    /// The largest file a link serves, in bytes (50 MiB unless set).
    pub max_size: u64,
}

/// Written out without the key, which signs the links.
impl std::fmt::Debug for MediaLinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaLinkConfig")
            .field("public_url", &self.public_url)
            .field("key", &self.key.as_ref().map(|_| "<hidden>"))
            .field("lifetime", &self.lifetime)
            .field("max_size", &self.max_size)
            .finish()
    }
}

impl Default for MediaLinkConfig {
    fn default() -> Self {
        MediaLinkConfig {
            public_url: None,
            key: None,
            lifetime: 7 * 24 * 3600,
            max_size: trestle::media::DEFAULT_LIMIT,
        }
    }
}

impl MediaLinkConfig {
    /// The public address of the bridge's web root.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// The signing secret.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// How long links stay valid, in seconds.
    pub fn lifetime(mut self, seconds: u64) -> Self {
        self.lifetime = seconds;
        self
    }

    /// The largest file served, in bytes.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }
}

/// Why a link is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkRefusal {
    /// The signature is not ours for this file and expiry: forged, altered, or another
    /// file's.
    Forged,
    /// The signature is ours, and the link has expired.
    Expired,
}

/// Signs and checks media links with one key. [`BridgeHandle::media_link`] uses the bridge's;
/// this is public for tests and tools that make links for a key they know.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(..)")
    }
}

impl LinkSigner {
    /// A signer with `key`.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        LinkSigner { key: key.into() }
    }

    fn mac(&self, mxc: &MxcUri, expires: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        // The domain and the separators keep one (file, expiry) pair from reading as another.
        mac.update(b"trestle media link v1\n");
        mac.update(mxc.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The signature of `mxc` until `expires` (Unix seconds), as it goes in a link.
    pub fn signature(&self, mxc: &MxcUri, expires: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(mxc, expires).finalize().into_bytes())
    }

    /// Checks a link's signature (in constant time), then its expiry against `now` (Unix
    /// seconds).
    pub fn verify(
        &self,
        mxc: &MxcUri,
        expires: u64,
        signature: &str,
        now: u64,
    ) -> Result<(), LinkRefusal> {
        let given = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LinkRefusal::Forged)?;
        self.mac(mxc, expires)
            .verify_slice(&given)
            .map_err(|_| LinkRefusal::Forged)?;
        if expires <= now {
            return Err(LinkRefusal::Expired);
        }
        Ok(())
    }

    /// The link to `mxc` under `base` (the bridge's public web root), valid until `expires`.
    pub fn link(&self, base: &str, mxc: &MxcUri, expires: u64) -> NetworkResult<String> {
        let (server, media_id) = mxc.parts().map_err(ruma::IdParseError::from)?;
        Ok(format!(
            "{}{PATH}/{server}/{media_id}?expires={expires}&sig={}",
            base.trim_end_matches('/'),
            self.signature(mxc, expires),
        ))
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    u64::try_from(trestle::store::now_ms() / 1000).unwrap_or(0)
}

/// What the bridge keeps for its links: the signer, once its key is known.
#[derive(Default)]
pub(crate) struct Links {
    signer: tokio::sync::OnceCell<LinkSigner>,
}

impl<N: Network> BridgeHandle<N> {
    /// A link to `mxc` that anyone can open, for [`super::BridgeConfig::media_links`]'s
    /// lifetime: the bridge serves the file from the homeserver on the bot's behalf, with no
    /// token needed (see the module [`media`](crate::media)). For networks that show media as
    /// links, where the homeserver's own address would need an access token.
    pub async fn media_link(&self, mxc: &MxcUri) -> NetworkResult<String> {
        let config = &self.config().media_links;
        let expires = unix_now().saturating_add(config.lifetime);
        let app = self.app()?;
        let base = match (&config.public_url, &app.registration().url) {
            (Some(url), _) | (None, Some(url)) if !url.is_empty() => url.clone(),
            _ => {
                return Err(BridgeError::BadRequest(
                    "media links need media_links.public_url (the registration has no url)".into(),
                ));
            }
        };
        self.link_signer().await?.link(&base, mxc, expires)
    }

    /// The signer of this bridge's links.
    pub(crate) async fn link_signer(&self) -> NetworkResult<&LinkSigner> {
        self.shared
            .media
            .signer
            .get_or_try_init(|| async {
                let key = match self.config().media_links.key.as_deref() {
                    Some(key) if !key.is_empty() => key.as_bytes().to_vec(),
                    _ => key::stored(&self.store()?).await?,
                };
                Ok(LinkSigner::new(key))
            })
            .await
    }
}
