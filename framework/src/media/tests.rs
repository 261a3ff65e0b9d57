//! Media against a mock homeserver on a real socket, which counts what reaches it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use ruma::{OwnedMxcUri, UserId};
use serde_json::json;
use trestle_registration::Registration;

use super::is_too_large;
use crate::Appservice;

/// What one complete upload looked like.
#[derive(Clone, Debug)]
struct Upload {
    content_type: Option<String>,
    content_length: Option<String>,
    authorization: Option<String>,
    query: HashMap<String, String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Seen {
    /// Upload requests whose headers arrived.
    requests: AtomicUsize,
    /// Body bytes that arrived, complete or not.
    bytes: AtomicU64,
    /// Uploads read to the end, which a homeserver would store.
    complete: Mutex<Vec<Upload>>,
    /// The `user_id` of each download.
    downloads: Mutex<Vec<Option<String>>>,
    registrations: AtomicUsize,
}

type Shared = Arc<Seen>;

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn upload(
    State(seen): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    if query.get("filename").map(String::as_str) == Some("refuse.bin") {
        let error = json!({"errcode": "M_TOO_LARGE", "error": "Upload request body is too large"});
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(error)).into_response();
    }
    let mut stream = body.into_data_stream();
    let mut received = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                seen.bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                received.extend_from_slice(&chunk);
            }
            // The client broke off: nothing to store.
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    seen.complete.lock().unwrap().push(Upload {
        content_type: text(&headers, header::CONTENT_TYPE),
        content_length: text(&headers, header::CONTENT_LENGTH),
        authorization: text(&headers, header::AUTHORIZATION),
        query,
        body: received,
    });
    Json(json!({"content_uri": "mxc://localhost/uploaded"})).into_response()
}

/// `n` bytes of a pattern, so that a shifted or dropped chunk shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

async fn download(
    State(seen): State<Shared>,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    seen.downloads
        .lock()
        .unwrap()
        .push(query.get("user_id").cloned());
    match (server.as_str(), media_id.as_str()) {
        ("localhost", "small") => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CONTENT_DISPOSITION, "inline; filename=cat.png"),
            ],
            pattern(1000),
        )
            .into_response(),
        ("localhost", "big") => pattern(5000).into_response(),
        // No Content-Length: only counting can stop it.
        ("localhost", "endless") => Body::from_stream(futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from(pattern(1000)))
        }))
        .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"errcode": "M_NOT_FOUND", "error": "Not found"})),
        )
            .into_response(),
    }
}

async fn register(State(seen): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    seen.registrations.fetch_add(1, Ordering::SeqCst);
    let user_id = format!("@{}:localhost", body["username"].as_str().unwrap());
    Json(json!({"user_id": user_id})).into_response()
}

/// A remote file server for `upload_from_url`.
async fn remote(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "known.webp" => ([(header::CONTENT_TYPE, "image/webp")], pattern(3000)).into_response(),
        "chunked" => Body::from_stream(futures_util::stream::iter(
            (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(pattern(1000)))),
        ))
        .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An appservice whose homeserver is the mock, and what the mock saw.
async fn mock() -> (Appservice, Shared, String) {
    let seen = Shared::default();
    let router = axum::Router::new()
        .route("/_matrix/media/v3/upload", post(upload))
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}",
            get(download),
        )
        .route("/_matrix/client/v3/register", post(register))
        .route("/remote/{name}", get(remote))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let registration = Registration::generate("media", None, "mediabot", "media_", "localhost");
    let app = Appservice::builder(registration, &base, "localhost")
        .build()
        .await
        .unwrap();
    (app, seen, base)
}

fn complete(seen: &Seen) -> Vec<Upload> {
    seen.complete.lock().unwrap().clone()
}

/// Lets the mock notice a connection that broke off.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn chunks(
    count: usize,
    size: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter((0..count).map(move |_| Ok(Bytes::from(pattern(size)))))
}

#[tokio::test]
async fn an_upload_carries_length_type_name_token_and_identity() {
    let (app, seen, _) = mock().await;
    let mxc = app
        .media()
        .upload_bytes(pattern(100_000), "image/png", Some("a cat.png"))
        .await
        .unwrap();
    assert_eq!(mxc, OwnedMxcUri::from("mxc://localhost/uploaded"));
    let uploads = complete(&seen);
    assert_eq!(uploads.len(), 1);
    let upload = &uploads[0];
    assert_eq!(upload.body, pattern(100_000));
    assert_eq!(upload.content_length.as_deref(), Some("100000"));
    assert_eq!(upload.content_type.as_deref(), Some("image/png"));
    assert_eq!(
        upload.authorization,
        Some(format!("Bearer {}", app.registration().as_token))
    );
    assert_eq!(upload.query["filename"], "a cat.png");
    assert_eq!(upload.query["user_id"], "@mediabot:localhost");
}

#[tokio::test]
async fn a_known_size_over_the_limit_sends_nothing() {
    let (app, seen, _) = mock().await;
    let media = app.media().with_limit(1000);
    let error = media
        .upload_bytes(vec![0u8; 1001], "application/octet-stream", None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert!(error.to_string().contains("1000 bytes"), "{error}");
    let error = media
        .upload_stream(chunks(1, 10), "text/plain", None, Some(5000))
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    // Exactly the limit is fine.
    media
        .upload_bytes(vec![0u8; 1000], "application/octet-stream", None)
        .await
        .unwrap();
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unknown_size_is_spooled_and_sent_with_its_length() {
    let (app, seen, _) = mock().await;
    app.media()
        .upload_stream(chunks(30, 10_000), "video/mp4", Some("clip.mp4"), None)
        .await
        .unwrap();
    let upload = &complete(&seen)[0];
    assert_eq!(upload.content_length.as_deref(), Some("300000"));
    assert_eq!(upload.body, pattern(10_000).repeat(30));
}

#[tokio::test]
async fn an_endless_stream_stops_at_the_limit_and_sends_nothing() {
    let (app, seen, _) = mock().await;
    let endless =
        futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from(pattern(4096))));
    let error = app
        .media()
        .with_limit(100_000)
        .upload_stream(endless, "application/octet-stream", None, None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stream_longer_than_announced_breaks_off_and_nothing_is_stored() {
    let (app, seen, _) = mock().await;
    // Slow enough that the mock reads what was sent before the upload breaks off.
    let slow = chunks(20, 10_000).then(|chunk| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        chunk
    });
    let error = app
        .media()
        .upload_stream(slow, "application/octet-stream", None, Some(50_000))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("longer than the 50000 bytes announced"),
        "{error}"
    );
    settle().await;
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    assert!(complete(&seen).is_empty());
    // The chunk that would have completed the announced length was held back.
    assert!(seen.bytes.load(Ordering::SeqCst) <= 40_000);
}

#[tokio::test]
async fn a_failing_source_fails_the_upload_and_nothing_is_stored() {
    let (app, seen, _) = mock().await;
    let failing = chunks(3, 10_000).chain(futures_util::stream::once(async {
        Err(std::io::Error::other("disk on fire"))
    }));
    let error = app
        .media()
        .upload_stream(failing, "application/octet-stream", None, Some(40_000))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("disk on fire"), "{error}");
    settle().await;
    assert!(complete(&seen).is_empty());
}

#[tokio::test]
async fn the_homeservers_refusal_is_a_matrix_error() {
    let (app, _, _) = mock().await;
    let error = app
        .media()
        .upload_bytes(
            vec![1u8; 10],
            "application/octet-stream",
            Some("refuse.bin"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(http::StatusCode::PAYLOAD_TOO_LARGE));
    assert!(is_too_large(&error), "{error}");
}

/// A fetcher that may reach the mock on loopback, as a plugin configured so would pass.
fn loopback_fetcher() -> crate::fetch::Fetcher {
    crate::fetch::Fetcher::new(crate::fetch::FetchPolicy {
        allow_private: true,
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_url_is_fetched_and_uploaded_with_its_type() {
    let (app, seen, base) = mock().await;
    let media = app.media().with_fetcher(loopback_fetcher());
    media
        .upload_from_url(&format!("{base}/remote/known.webp"), None)
        .await
        .unwrap();
    media
        .upload_from_url(
            &format!("{base}/remote/chunked?secret=1"),
            Some("named.bin"),
        )
        .await
        .unwrap();
    let uploads = complete(&seen);
    assert_eq!(uploads[0].content_type.as_deref(), Some("image/webp"));
    assert_eq!(uploads[0].body, pattern(3000));
    assert_eq!(uploads[0].content_length.as_deref(), Some("3000"));
    assert!(!uploads[0].query.contains_key("filename"));
    assert_eq!(
        uploads[1].content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(uploads[1].body, pattern(1000).repeat(3));
    assert_eq!(uploads[1].query["filename"], "named.bin");

    let error = media
        .clone()
        .with_limit(2999)
        .upload_from_url(&format!("{base}/remote/known.webp"), None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    let error = media
        .upload_from_url(&format!("{base}/remote/gone?token=hunter2"), None)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("404"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(complete(&seen).len(), 2);
}

#[tokio::test]
async fn a_url_on_this_machine_is_refused_unless_trusted() {
    let (app, seen, base) = mock().await;
    let port = base.rsplit(':').next().unwrap();
    for url in [
        format!("{base}/remote/known.webp?token=hunter2"),
        format!("http://localhost:{port}/remote/known.webp"),
        format!("http://[::1]:{port}/remote/known.webp"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let error = app.media().upload_from_url(&url, None).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, crate::Error::Fetch(_)), "{url}: {error:?}");
        assert!(
            message.contains("a private or local address, which may not be fetched"),
            "{url}: {message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
    assert!(complete(&seen).is_empty());
    // The explicit opt-in fetches the very same URL.
    app.media()
        .upload_from_trusted_url(&format!("{base}/remote/known.webp"), None)
        .await
        .unwrap();
    assert_eq!(complete(&seen)[0].body, pattern(3000));
}

#[tokio::test]
async fn a_download_has_its_type_name_and_bytes() {
    let (app, seen, _) = mock().await;
    let download = app
        .media()
        .download(<&ruma::MxcUri>::from("mxc://localhost/small"))
        .await
        .unwrap();
    assert_eq!(download.content_type.as_deref(), Some("image/png"));
    assert_eq!(download.content_length, Some(1000));
    assert_eq!(download.filename.as_deref(), Some("cat.png"));
    let body: Vec<Bytes> = download.body.try_collect().await.unwrap();
    assert_eq!(body.concat(), pattern(1000));
    assert_eq!(
        seen.downloads.lock().unwrap().as_slice(),
        [Some("@mediabot:localhost".to_owned())]
    );
}

#[tokio::test]
async fn downloads_keep_the_limit() {
    let (app, _, _) = mock().await;
    let media = app.media().with_limit(4000);
    // Announced too large: refused before the body.
    let error = media
        .download(<&ruma::MxcUri>::from("mxc://localhost/big"))
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    // Never ending: cut off once past the limit.
    let error = media
        .download_bytes(<&ruma::MxcUri>::from("mxc://localhost/endless"))
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    let (bytes, content_type) = app
        .media()
        .download_bytes(<&ruma::MxcUri>::from("mxc://localhost/big"))
        .await
        .unwrap();
    assert_eq!(bytes, pattern(5000));
    assert_eq!(content_type.as_deref(), Some("application/octet-stream"));

    let error = media
        .download(<&ruma::MxcUri>::from("mxc://localhost/nothing"))
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), Some(ruma::api::error::ErrorKind::NotFound)),
        "{error}"
    );
    let error = media
        .download(<&ruma::MxcUri>::from("not-an-mxc"))
        .await
        .unwrap_err();
    assert!(matches!(error, crate::Error::Id(_)), "{error}");
}

#[tokio::test]
async fn a_ghost_is_registered_once_then_asserted() {
    let (app, seen, _) = mock().await;
    let ghost = UserId::parse("@media_alice:localhost").unwrap();
    let media = app.media().as_user(&ghost);
    media
        .upload_bytes(vec![1u8; 10], "text/plain", None)
        .await
        .unwrap();
    media
        .download_bytes(<&ruma::MxcUri>::from("mxc://localhost/small"))
        .await
        .unwrap();
    assert_eq!(seen.registrations.load(Ordering::SeqCst), 1);
    assert_eq!(
        complete(&seen)[0].query["user_id"],
        "@media_alice:localhost"
    );
    assert_eq!(
        seen.downloads.lock().unwrap().as_slice(),
        [Some("@media_alice:localhost".to_owned())]
    );
}
