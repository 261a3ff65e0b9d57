use super::*;

fn names() -> Arc<FixedResolver> {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    Arc::new(
        FixedResolver::new()
            .with("intranet.example", &[ip("127.0.0.1")])
            .with("metadata.example", &[ip("169.254.169.254"), ip("fd00::1")])
            .with("mixed.example", &[ip("10.0.0.1"), ip("93.184.216.34")])
            .with("public.example", &[ip("93.184.216.34")]),
    )
}

fn policy(allow_private: bool) -> FetchPolicy {
    FetchPolicy {
        allow_private,
        max_redirects: 3,
        max_bytes: 1024,
        timeout: Duration::from_secs(5),
    }
}

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
    let resolver = GuardedResolver {
        inner: Arc::new(SystemResolver),
        allow_private: false,
    };
    let name: Name = "localhost".parse().unwrap();
    assert!(resolver.resolve(name).await.is_err());
    let allowing = GuardedResolver {
        inner: Arc::new(SystemResolver),
        allow_private: true,
    };
    let name: Name = "localhost".parse().unwrap();
    assert!(allowing.resolve(name).await.is_ok());
    // And the URL check stops a literal loopback address before any request.
    let fetcher = Fetcher::new(policy(false)).unwrap();
    assert!(
        fetcher
            .request(reqwest::Method::GET, "http://127.0.0.1:1/")
            .is_err()
    );
}

#[tokio::test]
async fn a_destination_that_resolves_only_to_private_addresses_is_refused_up_front() {
    let fetcher = Fetcher::with_resolver(policy(false), names()).unwrap();
    let check = |url: &str| {
        let url = Url::parse(url).unwrap();
        let fetcher = fetcher.clone();
        async move {
            fetcher
                .check_destination(&url)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let refused = check("http://intranet.example:8080/hook")
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        "intranet.example resolves to 127.0.0.1, a private or local address, which may not be \
         fetched"
    );
    let refused = check("https://metadata.example/").await.unwrap_err();
    assert!(refused.contains("169.254.169.254"), "{refused}");
    assert!(check("http://localhost/").await.is_err());
    assert!(check("http://[::1]/").await.is_err());
    // One public address is enough: requests use it and skip the others.
    check("http://mixed.example/").await.unwrap();
    check("https://public.example/").await.unwrap();
    check("https://93.184.216.34/").await.unwrap();
    // A name that does not resolve now may later; requests check it then.
    check("https://unknown.example/").await.unwrap();

    let allowing = Fetcher::with_resolver(policy(true), names()).unwrap();
    let url = Url::parse("http://intranet.example/").unwrap();
    allowing.check_destination(&url).await.unwrap();
}

#[tokio::test]
async fn requests_connect_only_to_addresses_the_policy_allows() {
    use axum::routing::get;
    let app = axum::Router::new().route("/", get(|| async { "inside" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://intranet.example:{port}/");

    let fetcher = Fetcher::with_resolver(policy(false), names()).unwrap();
    let refused = fetcher
        .request(reqwest::Method::GET, &url)
        .unwrap()
        .send()
        .await
        .unwrap_err();
    assert!(
        describe(&refused).contains("intranet.example resolves to no public address"),
        "{}",
        describe(&refused)
    );

    let allowing = Fetcher::with_resolver(policy(true), names()).unwrap();
    let response = allowing
        .request(reqwest::Method::GET, &url)
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(allowing.body(response).await.unwrap(), b"inside");
    server.abort();
}

#[tokio::test]
async fn redirects_are_bounded_and_bodies_limited() {
    use axum::{response::Redirect, routing::get};
    let app = axum::Router::new()
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
        .route("/big", get(|| async { "x".repeat(2048) }))
        .route("/small", get(|| async { "hello" }))
        .route("/hop", get(|| async { Redirect::temporary("/small") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let fetcher = Fetcher::new(policy(true)).unwrap();
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
