//! The homeserver client: ruma requests sent with reqwest, as the appservice.
//!
//! Every request carries the registration's `as_token`; identity assertion (`user_id`, and
//! `device_id` where set) picks which of the appservice's users it acts as.
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#identity-assertion>

use std::{borrow::Cow, collections::BTreeSet, sync::Arc, time::Duration};

use ruma::{
    OwnedUserId,
    api::{
        AppserviceUserIdentity, IncomingResponse, MatrixVersion, OutgoingRequest,
        SupportedVersions,
        auth_scheme::{AuthScheme, SendAccessToken},
        error::ErrorKind,
        path_builder::{PathBuilder, SinglePath, VersionHistory},
    },
};

use crate::{Error, Result};

/// A client of the homeserver's client-server API, authenticated as the appservice.
#[derive(Clone, Debug)]
pub struct HomeserverClient {
    inner: Arc<ClientInner>,
}

#[derive(Clone, Debug)]
struct ClientInner {
    http: reqwest::Client,
    base_url: String,
    /// `base_url` parsed once: each request only swaps in its path and query.
    base: url::Url,
    /// The path of `base_url` without its last `/`, usually empty: what ruma puts before an
    /// endpoint's path, so that the request it makes holds the path and query alone.
    base_path: String,
    as_token: String,
    versions: SupportedVersions,
    /// The user a request naming none acts as, where that is not the registration's
    /// `sender_localpart` (see [`HomeserverClient::acting_as`]).
    default_user: Option<OwnedUserId>,
}

/// Chooses a ruma endpoint's path from the versions we speak. ruma has two path builders, and
/// each wants a different input; this trait lets one generic `send` serve both.
pub trait PathInput: PathBuilder {
    /// The input the path builder needs.
    fn input(versions: &SupportedVersions) -> Self::Input<'_>;
}

impl PathInput for VersionHistory {
    fn input(versions: &SupportedVersions) -> Self::Input<'_> {
        Cow::Borrowed(versions)
    }
}

impl PathInput for SinglePath {
    fn input(_: &SupportedVersions) -> Self::Input<'_> {}
}

impl HomeserverClient {
    /// A client for the homeserver at `base_url` (e.g. `https://matrix.example.org`).
    pub fn new(base_url: impl Into<String>, as_token: impl Into<String>) -> Result<Self> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let base = url::Url::parse(&base_url)
            .map_err(|e| Error::Config(format!("homeserver URL `{base_url}`: {e}")))?;
        let mut http = reqwest::Client::builder();
        if base.scheme() == "http" {
            // The client reaches nothing but the homeserver (no redirects, below), so over plain
            // HTTP, the usual set-up beside the homeserver, it never needs the system's trust
            // roots, whose reading and parsing were a tenth of the echo appservice's start
            // (17.8 M of its instructions under callgrind).
            http = http.tls_certs_only(std::iter::empty());
        }
        if !proxy_from_environment() {
            // reqwest otherwise consults its (empty) matcher of the environment's proxies twice
            // for every request: 1.3 k instructions a send (docs/benchmarks.md, session 34).
            http = http.no_proxy();
        }
        let http = http
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("trestle/", env!("CARGO_PKG_VERSION")))
            // The client-server API does not redirect, and retrying is the outbox's business:
            // turned off. (reqwest keeps its redirect layer all the same, and it parses each URL
            // twice per request: docs/benchmarks.md, "What is still in the way".) `never()` alone
            // still copies every request in case it is retried; a limit of 0 retries does not.
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()?;
        // Synapse and every current homeserver speak v1.11+; choosing the stable paths from these
        // avoids a /versions round-trip before the first request.
        let versions = SupportedVersions {
            versions: BTreeSet::from([
                MatrixVersion::V1_11,
                MatrixVersion::V1_12,
                MatrixVersion::V1_13,
            ]),
            features: BTreeSet::new(),
        };
        let base_path = base.path().trim_end_matches('/').to_owned();
        Ok(HomeserverClient {
            inner: Arc::new(ClientInner {
                http,
                base,
                base_path,
                base_url,
                as_token: as_token.into(),
                versions,
                default_user: None,
            }),
        })
    }

    /// The same client, sending a request that names no user as `user` rather than as the
    /// registration's `sender_localpart`: the bot, where it is a user of the namespace apart
    /// from the sender (`AppserviceBuilder::bot`), so that every action of the bot asserts its
    /// id. [`HomeserverClient::send_as_appservice`] still acts as the sender.
    #[must_use]
    pub fn acting_as(self, user: OwnedUserId) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.default_user = Some(user);
        HomeserverClient {
            inner: Arc::new(inner),
        }
    }

    /// The homeserver's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The HTTP client, for requests ruma does not model as a whole (streamed media).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The appservice token.
    pub(crate) fn as_token(&self) -> &str {
        &self.inner.as_token
    }

    /// Sends `request` as the user in `identity` (the bot when empty), once. Retrying is the
    /// outbox's business, which knows whether a request may be repeated.
    pub async fn send<R>(
        &self,
        request: R,
        mut identity: AppserviceUserIdentity<'_>,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        Error: From<ruma::api::error::FromHttpResponseError<R::EndpointError>>,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        if identity.user_id.is_none() {
            identity.user_id = self.inner.default_user.as_deref();
        }
        self.send_asserting(request, identity).await
    }

    /// Sends `request` as the appservice itself, the registration's `sender_localpart`, even
    /// where the bot is another user: what only the appservice may ask (registering a user,
    /// a ping), and which must work before the bot exists.
    pub async fn send_as_appservice<R>(&self, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        Error: From<ruma::api::error::FromHttpResponseError<R::EndpointError>>,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.send_asserting(request, AppserviceUserIdentity::default())
            .await
    }

    async fn send_asserting<R>(
        &self,
        request: R,
        identity: AppserviceUserIdentity<'_>,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        Error: From<ruma::api::error::FromHttpResponseError<R::EndpointError>>,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        // ruma makes the path and query only (the base URL is parsed once, in `base`), and the
        // identity goes straight into the query here: adding it to the request ruma made
        // (`try_into_http_request_with_identity`) copied its URI, serialized the identity
        // through serde and parsed the URI again, for every request.
        let http_request = request.try_into_http_request::<Vec<u8>>(
            &self.inner.base_path,
            SendAccessToken::Appservice(&self.inner.as_token),
            R::PathBuilder::input(&self.inner.versions),
        )?;
        let response = self.execute(http_request, identity).await?;
        Ok(R::IncomingResponse::try_from_http_response(response)?)
    }

    async fn execute(
        &self,
        request: http::Request<Vec<u8>>,
        identity: AppserviceUserIdentity<'_>,
    ) -> Result<http::Response<bytes::Bytes>> {
        let (parts, body) = request.into_parts();
        let url = self.url(&parts.uri, identity);
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        *request.body_mut() = Some(body.into());
        let mut response = self.inner.http.execute(request).await?;
        // The headers are moved over, not copied one by one.
        let headers = std::mem::take(response.headers_mut());
        let status = response.status();
        let body = response.bytes().await?;
        let mut http_response = http::Response::new(body);
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        Ok(http_response)
    }

    /// The URL of a request whose path and query ruma made as `uri`, asserting `identity`.
    fn url(&self, uri: &http::Uri, identity: AppserviceUserIdentity<'_>) -> url::Url {
        let mut url = self.inner.base.clone();
        url.set_path(uri.path());
        match identity_query(uri.query(), identity) {
            Some(query) => url.set_query(Some(&query)),
            None => url.set_query(uri.query()),
        }
        url
    }
}

/// Whether the environment names a proxy reqwest would use (`ALL_PROXY`, `HTTP_PROXY`,
/// `HTTPS_PROXY`, upper or lower case). On macOS and Windows reqwest may read the system's
/// settings too, so there the answer is always yes.
fn proxy_from_environment() -> bool {
    const NAMES: [&str; 6] = [
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
    ];
    cfg!(any(target_os = "macos", windows))
        || NAMES.iter().any(|name| std::env::var_os(name).is_some())
}

/// The query of a request that asserts `identity`: the request's own `query` with `user_id`
/// and `device_id` added, form-encoded as ruma would add them, or `None` if the identity is
/// empty and the query stays as it is.
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#identity-assertion>
fn identity_query(query: Option<&str>, identity: AppserviceUserIdentity<'_>) -> Option<String> {
    if identity.user_id.is_none() && identity.device_id.is_none() {
        return None;
    }
    let mut pairs =
        url::form_urlencoded::Serializer::for_suffix(query.unwrap_or_default().to_owned(), 0);
    if let Some(user_id) = identity.user_id {
        pairs.append_pair("user_id", user_id.as_str());
    }
    if let Some(device_id) = identity.device_id {
        pairs.append_pair("device_id", device_id.as_str());
    }
    Some(pairs.finish())
}

/// How long the homeserver asked us to wait, for `M_LIMIT_EXCEEDED`.
pub(crate) fn retry_delay(error: &Error) -> Option<Duration> {
    use ruma::api::error::RetryAfter;
    match error.kind()? {
        ErrorKind::LimitExceeded(data) => Some(match data.retry_after {
            Some(RetryAfter::Delay(d)) => d,
            Some(RetryAfter::DateTime(at)) => at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
            None => Duration::from_secs(1),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use ruma::{
        api::{
            OutgoingRequestAppserviceExt,
            client::message::{get_message_events, send_message_event},
        },
        device_id,
        events::room::message::RoomMessageEventContent,
        owned_room_id, user_id,
    };

    use super::*;

    /// Asserts that the URL the client makes for `request` is the one ruma makes with the
    /// identity from the base URL `base`.
    fn assert_same_url<R>(
        client: &HomeserverClient,
        base: &str,
        identity: AppserviceUserIdentity<'_>,
        request: R,
    ) where
        R: OutgoingRequest + Clone,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let token = || SendAccessToken::Appservice("token");
        let input = || R::PathBuilder::input(&client.inner.versions);
        let theirs = request
            .clone()
            .try_into_http_request_with_identity::<Vec<u8>>(
                base.trim_end_matches('/'),
                token(),
                identity,
                input(),
            )
            .unwrap();
        let mine = request
            .try_into_http_request::<Vec<u8>>(&client.inner.base_path, token(), input())
            .unwrap();
        assert_eq!(
            client.url(mine.uri(), identity).to_string(),
            theirs.uri().to_string()
        );
    }

    /// A request's URL is the one ruma makes when it adds the identity itself, for a base URL
    /// with and without a path, a request with and without a query of its own, and each
    /// identity.
    #[test]
    fn a_request_url_is_the_one_ruma_makes_with_the_identity() {
        let room = owned_room_id!("!r/oom:x");
        let requests = || {
            let state = send_message_event::v3::Request::new(
                room.clone(),
                "a txn/with?odd&chars".into(),
                &RoomMessageEventContent::text_plain("x"),
            )
            .unwrap();
            let mut messages =
                get_message_events::v3::Request::new(room.clone(), ruma::api::Direction::Backward);
            messages.from = Some("t 1&2".into());
            (state, messages)
        };
        let identities = [
            AppserviceUserIdentity::default(),
            AppserviceUserIdentity::new(user_id!("@ghost_1:x")),
            {
                let mut both = AppserviceUserIdentity::new(user_id!("@g+h:x"));
                both.device_id = Some(device_id!("DEV 1"));
                both
            },
        ];
        for base in ["http://127.0.0.1:8008", "https://x.example/matrix/"] {
            let client = HomeserverClient::new(base, "token").unwrap();
            for identity in identities {
                let (state, messages) = requests();
                assert_same_url(&client, base, identity, state);
                assert_same_url(&client, base, identity, messages);
            }
        }
    }
}
