//! Fetching URLs that strangers chose, without reaching what they must not reach.
//!
//! A URL typed into a room (a feed, a webhook target, an image to upload) must not reach the
//! machine Trestle runs on or its private network: that is server-side request forgery, and
//! the cloud metadata address `169.254.169.254` is its classic prize. A [`Fetcher`] resolves
//! names with its own resolver, which drops private, loopback and link-local addresses unless
//! its [`FetchPolicy`] allows them; checks literal addresses before the request and at every
//! redirect; bounds redirects; reads bodies up to a limit; and ignores proxies from the
//! environment, which would resolve names where the resolver cannot see.
//!
//! [`Media::upload_from_url`](crate::media::Media::upload_from_url) fetches through one by
//! default; plugins that fetch on their users' behalf (the notification bot's feeds and
//! forwards) build their own with their settings.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    Client, Response, Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};

use crate::{Error, Result};

/// What a [`Fetcher`] may do.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Whether private, loopback and link-local addresses may be reached.
    pub allow_private: bool,
    /// How many redirects are followed.
    pub max_redirects: usize,
    /// How many bytes of a response [`Fetcher::body`] reads.
    pub max_bytes: usize,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Default for FetchPolicy {
    /// Public addresses only, 5 redirects, 5 MiB, 30 seconds.
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            max_redirects: 5,
            max_bytes: 5 * 1024 * 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Whether `ip` is somewhere a stranger must not send Trestle: this machine, a private or
/// link-local network, or an address that is no host at all.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                // Carrier-grade NAT, 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            // IPv4-mapped and -compatible (::a.b.c.d), and the NAT64 prefix 64:ff9b::/96,
            // all lead to an IPv4 address, which decides.
            let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if let Some(v4) = v6
                .to_ipv4()
                .filter(|_| !v6.is_loopback() && !v6.is_unspecified())
            {
                return is_private(IpAddr::V4(v4));
            }
            if nat64 {
                let [.., a, b] = segments;
                let v4 = std::net::Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
                return is_private(IpAddr::V4(v4));
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Refuses a URL that is not http(s), or names a forbidden literal address (or `localhost`),
/// with [`Error::Fetch`] saying why.
pub fn check_url(url: &Url, allow_private: bool) -> Result<()> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Fetch(format!(
            "only http and https URLs can be fetched, not {}",
            url.scheme()
        )));
    }
    let forbidden = match url.host() {
        None => return Err(Error::Fetch("the URL has no host".into())),
        Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
    };
    if forbidden && !allow_private {
        return Err(Error::Fetch(format!(
            "{} is a private or local address, which may not be fetched",
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The operating system's resolver.
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// A resolver with fixed answers: for tests (no network, and any address you like), or to pin
/// names. A name not in the table does not resolve.
#[derive(Clone, Debug, Default)]
pub struct FixedResolver {
    names: Vec<(String, Vec<IpAddr>)>,
}

impl FixedResolver {
    /// A resolver that knows no names yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, resolving `name` to `addresses`.
    pub fn with(mut self, name: &str, addresses: &[IpAddr]) -> Self {
        self.names
            .push((name.to_ascii_lowercase(), addresses.to_vec()));
        self
    }
}

impl Resolve for FixedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let found: Option<Vec<SocketAddr>> = self
            .names
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name.as_str()))
            .map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = found.ok_or_else(|| format!("{host} is not a known name"))?;
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Resolves names with another resolver, keeping only the addresses the policy allows.
struct GuardedResolver {
    inner: Arc<dyn Resolve>,
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        let found = self.inner.resolve(name);
        Box::pin(async move {
            let allowed: Vec<SocketAddr> = found
                .await?
                .filter(|addr| allow_private || !is_private(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client that follows a [`FetchPolicy`]. Cheap to clone; connections are reused.
#[derive(Clone)]
pub struct Fetcher {
    client: Client,
    policy: FetchPolicy,
    resolver: Arc<dyn Resolve>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A client for `policy`, resolving names with the operating system's resolver.
    pub fn new(policy: FetchPolicy) -> Result<Self> {
        Self::with_resolver(policy, Arc::new(SystemResolver))
    }

    /// A client for `policy` that resolves names with `resolver` (another DNS client, or fixed
    /// answers in tests), still dropping the addresses the policy forbids.
    pub fn with_resolver(policy: FetchPolicy, resolver: Arc<dyn Resolve>) -> Result<Self> {
        let allow_private = policy.allow_private;
        let max_redirects = policy.max_redirects;
        let redirects = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                attempt.error(format!("more than {max_redirects} redirects"))
            } else if let Err(error) = check_url(attempt.url(), allow_private) {
                attempt.error(error.to_string())
            } else {
                attempt.follow()
            }
        });
        let guarded = GuardedResolver {
            inner: resolver.clone(),
            allow_private,
        };
        let client = Client::builder()
            .no_proxy()
            .redirect(redirects)
            .dns_resolver(Arc::new(guarded))
            .connect_timeout(Duration::from_secs(10).min(policy.timeout))
            // A stalled server fails long before a long transfer's own timeout.
            .read_timeout(Duration::from_secs(60).min(policy.timeout))
            .timeout(policy.timeout)
            .user_agent(concat!("trestle/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Fetch(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher {
            client,
            policy,
            resolver,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// A request builder for `url`, which is checked first (scheme and literal address; the
    /// name's addresses are checked when the request connects).
    pub fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder> {
        let parsed = Url::parse(url).map_err(|e| Error::Fetch(format!("not a URL: {e}")))?;
        check_url(&parsed, self.policy.allow_private)?;
        Ok(self.client.request(method, parsed))
    }

    /// Refuses, now, a URL that requests would refuse for its address: [`check_url`], then a
    /// name that resolves only to addresses the policy forbids. For a URL kept to be fetched
    /// later (a forwarding target), so that whoever gives it hears at once why it cannot work.
    ///
    /// A name that does not resolve at all passes: it may resolve later, and requests check
    /// its addresses again.
    pub async fn check_destination(&self, url: &Url) -> Result<()> {
        check_url(url, self.policy.allow_private)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        if self.policy.allow_private {
            return Ok(());
        }
        let Ok(name) = host.parse::<Name>() else {
            return Err(Error::Fetch(format!("{host} is not a host name")));
        };
        let Ok(found) = self.resolver.resolve(name).await else {
            return Ok(());
        };
        let found: Vec<IpAddr> = found.map(|addr| addr.ip()).collect();
        match found.first() {
            Some(ip) if found.iter().all(|ip| is_private(*ip)) => Err(Error::Fetch(format!(
                "{host} resolves to {ip}, a private or local address, which may not be fetched"
            ))),
            _ => Ok(()),
        }
    }

    /// Reads a response's body, failing past the size limit.
    pub async fn body(&self, mut response: Response) -> Result<Vec<u8>> {
        let limit = self.policy.max_bytes;
        if response
            .content_length()
            .is_some_and(|n| n as usize > limit)
        {
            return Err(Error::Fetch(format!("the response is over {limit} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Error::Fetch(describe(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(Error::Fetch(format!("the response is over {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A request error with its causes, which reqwest keeps in its source chain (its own message
/// alone says only "error sending request").
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
