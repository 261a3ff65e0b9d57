//! Fetching from servers that room members name: feeds and forwarding targets.
//!
//! A URL typed into a room must not reach the machine Trestle runs on or its private network
//! (server-side request forgery). Names are resolved by our own resolver, which drops private,
//! loopback and link-local addresses unless the configuration allows them; literal addresses
//! are checked before the request and at every redirect; redirects are bounded; bodies are
//! read up to a limit.

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

/// What fetches may do.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Whether private, loopback and link-local addresses may be reached.
    pub allow_private: bool,
    /// How many redirects are followed.
    pub max_redirects: usize,
    /// How many bytes of a response are read.
    pub max_bytes: usize,
    /// How long one request may take.
    pub timeout: Duration,
}

/// Whether `ip` is somewhere a room member must not send the bot: this machine, a private or
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

/// Refuses a URL that is not http(s), or names a forbidden literal address.
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
            "{} is a private or local address, which this bot may not fetch",
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Resolves names with the system resolver, keeping only the addresses the policy allows.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
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

/// An HTTP client that follows the policy.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: Client,
    policy: FetchPolicy,
}

impl Fetcher {
    /// A client for `policy`.
    pub fn new(policy: FetchPolicy) -> Result<Self> {
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
        let client = Client::builder()
            // A proxy from the environment would resolve names where our resolver cannot see.
            .no_proxy()
            .redirect(redirects)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .timeout(policy.timeout)
            .user_agent(concat!("trestle-notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Fetch(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher { client, policy })
    }

    /// The policy.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// A request builder for `url`, which is checked first.
    pub fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder> {
        let parsed = Url::parse(url).map_err(|e| Error::Fetch(format!("bad URL {url}: {e}")))?;
        check_url(&parsed, self.policy.allow_private)?;
        Ok(self.client.request(method, parsed))
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

/// A request error with its causes, which reqwest keeps in its source chain.
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
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:4700::1111",
            "1.1.1.1",
            "64:ff9b::5db8:d822",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_and_literal_addresses() {
        let check = |u: &str, allow| check_url(&Url::parse(u).unwrap(), allow).is_ok();
        assert!(check("https://example.org/feed", false));
        assert!(!check("http://127.0.0.1:8080/feed", false));
        assert!(!check("http://[::1]/feed", false));
        assert!(!check("http://localhost/feed", false));
        assert!(check("http://127.0.0.1:8080/feed", true));
        assert!(!check("file:///etc/passwd", true));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let policy = FetchPolicy {
            allow_private: false,
            max_redirects: 3,
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
        };
        let resolver = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_err());
        let allowing = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(allowing.resolve(name).await.is_ok());
        // And the URL check stops a literal loopback address before any request.
        let fetcher = Fetcher::new(policy).unwrap();
        assert!(
            fetcher
                .request(reqwest::Method::GET, "http://127.0.0.1:1/")
                .is_err()
        );
    }

    #[tokio::test]
    async fn redirects_are_bounded_and_bodies_limited() {
        use trestle::axum::{self, response::Redirect, routing::get};
        let app = axum::Router::new()
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route("/big", get(|| async { "x".repeat(2048) }))
            .route("/small", get(|| async { "hello" }))
            .route("/hop", get(|| async { Redirect::temporary("/small") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let fetcher = Fetcher::new(FetchPolicy {
            allow_private: true,
            max_redirects: 3,
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let get = |path: &str| {
            fetcher
                .request(reqwest::Method::GET, &format!("{base}{path}"))
                .unwrap()
                .send()
        };
        let looping = get("/loop").await.unwrap_err();
        assert!(
            describe(&looping).contains("more than 3 redirects"),
            "{looping}"
        );
        let big = get("/big").await.unwrap();
        let error = fetcher.body(big).await.unwrap_err().to_string();
        assert!(error.contains("over 1024 bytes"), "{error}");
        let hopped = get("/hop").await.unwrap();
        assert_eq!(fetcher.body(hopped).await.unwrap(), b"hello");
        server.abort();
    }
}
