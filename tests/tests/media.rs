//! Media against a real Synapse: uploads as the bot, from a URL and over the limit; downloads as
//! a real user and as a ghost, through the authenticated endpoints.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::{path::Path, sync::Arc, time::Duration};

use ruma::{
    OwnedMxcUri, RoomId, UInt, UserId,
    events::room::{
        ImageInfo,
        message::{ImageMessageEventContent, MessageType, RoomMessageEventContent},
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use trestle::{Registration, Router, media::is_too_large};
use trestle_tests::{appservice::Harness, synapse::UserClient};

const MIB: usize = 1024 * 1024;

fn registration() -> Registration {
    Registration::generate("media", None, "mediabot", "media_", "localhost")
}

/// `len` deterministic pseudo-random bytes (xorshift), which no layer can compress or mistake
/// for a real image.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A file the loopback server hands out.
struct File {
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// Sent with `Transfer-Encoding: chunked` and no `Content-Length`, as a streaming server
    /// would.
    chunked: bool,
}

/// Serves `files` over HTTP/1.1 on 127.0.0.1 and returns the base URL. Hand-written, because the
/// test only needs `GET`, and both framings a remote server may use.
async fn serve(files: Vec<File>) -> String {
    let files = Arc::new(files);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                let mut request_line = String::new();
                socket.read_line(&mut request_line).await?;
                loop {
                    let mut line = String::new();
                    if socket.read_line(&mut line).await? == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or("");
                let socket = socket.get_mut();
                let Some(file) = files.iter().find(|f| f.path == path) else {
                    return socket
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                };
                let framing = if file.chunked {
                    "Transfer-Encoding: chunked".to_owned()
                } else {
                    format!("Content-Length: {}", file.body.len())
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\n{framing}\r\nConnection: close\r\n\r\n",
                    file.content_type
                );
                socket.write_all(head.as_bytes()).await?;
                if file.chunked {
                    for chunk in file.body.chunks(64 * 1024) {
                        socket
                            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                            .await?;
                        socket.write_all(chunk).await?;
                        socket.write_all(b"\r\n").await?;
                    }
                    socket.write_all(b"0\r\n\r\n").await?;
                } else {
                    socket.write_all(&file.body).await?;
                }
                socket.shutdown().await
            });
        }
    });
    base
}

/// A client that talks to loopback servers directly, whatever proxy the environment names.
fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Downloads `mxc` as a real user through `GET /_matrix/client/v1/media/download`.
async fn download_as(user: &UserClient, mxc: &str) -> reqwest::Response {
    let path = mxc.strip_prefix("mxc://").expect("an mxc URI");
    http()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{path}",
            user.base_url()
        ))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Every file in Synapse's media store: an upload that was not stored adds none.
fn stored_files(dir: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { count(&path) } else { 1 }
                })
                .sum()
        })
    }
    count(&dir.join("media_store"))
}

#[tokio::test]
async fn an_upload_by_the_bot_reaches_a_user_byte_for_byte() {
    let harness = Harness::start(registration(), Router::new()).await;
    let (user, room) = harness.user_in_room_with_bot("alice").await;
    let room_id = <&RoomId>::try_from(room.as_str()).unwrap();
    let data = noise(3 * MIB + 12_345, 1);

    let mxc = harness
        .app
        .media()
        .upload_bytes(data.clone(), "image/png", Some("noise.png"))
        .await
        .unwrap();
    assert_eq!(mxc.server_name().unwrap().as_str(), "localhost");

    let mut info = ImageInfo::new();
    info.mimetype = Some("image/png".to_owned());
    info.size = UInt::new(data.len() as u64);
    let content = RoomMessageEventContent::new(MessageType::Image(
        ImageMessageEventContent::plain("noise.png".to_owned(), mxc.clone()).info(Box::new(info)),
    ));
    let event_id = harness.app.bot().send(room_id, &content).await.unwrap();
    let event = user.event(&room, event_id.as_str()).await;
    assert_eq!(event["content"]["msgtype"], "m.image");
    let url = event["content"]["url"].as_str().unwrap();
    assert_eq!(url, mxc.as_str());

    let response = download_as(&user, url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("image/png"));
    assert_eq!(
        header(&response, "content-length"),
        Some(data.len().to_string().as_str())
    );
    // image/png is on Synapse's list of types a browser may show inline.
    assert_eq!(
        header(&response, "content-disposition"),
        Some("inline; filename=noise.png")
    );
    assert!(response.bytes().await.unwrap() == data, "bytes differ");

    // Synapse serves new media only through the authenticated endpoint: the old one says 404.
    let (status, body) = user
        .call(
            reqwest::Method::GET,
            &format!("/_matrix/media/v3/download/{}", &url["mxc://".len()..]),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_ghost_downloads_what_the_bot_uploaded() {
    let harness = Harness::start(registration(), Router::new()).await;
    let data = noise(2 * MIB + 1, 2);
    let mxc = harness
        .app
        .media()
        .upload_bytes(data.clone(), "application/pdf", Some("Résumé 2024.pdf"))
        .await
        .unwrap();

    // Never used before: the download registers the ghost first.
    let ghost = UserId::parse("@media_ghost:localhost").unwrap();
    let download = harness
        .app
        .media()
        .as_user(&ghost)
        .download(&mxc)
        .await
        .unwrap();
    assert_eq!(download.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(download.content_length, Some(data.len() as u64));
    // Not ASCII, so Synapse sends `filename*=utf-8''…`.
    assert_eq!(download.filename.as_deref(), Some("Résumé 2024.pdf"));
    assert!(download.bytes().await.unwrap() == data, "bytes differ");

    let error = harness
        .app
        .media()
        .as_user(&ghost)
        .with_limit(MIB as u64)
        .download_bytes(&mxc)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");

    // The identity is asserted: a user outside the namespace is refused.
    let stranger = UserId::parse("@stranger:localhost").unwrap();
    let error = harness
        .app
        .media()
        .as_user(&stranger)
        .download(&mxc)
        .await
        .unwrap_err();
    assert!(error.status().is_some(), "{error}");

    let missing = OwnedMxcUri::from("mxc://localhost/doesnotexist");
    let error = harness.app.media().download(&missing).await.unwrap_err();
    assert_eq!(
        error.status(),
        Some(reqwest::StatusCode::NOT_FOUND),
        "{error}"
    );
}

#[tokio::test]
async fn a_url_is_streamed_into_the_media_repository() {
    let harness = Harness::start(registration(), Router::new()).await;
    let photo = noise(3 * MIB, 3);
    let table = b"a,b\n1,2\n".repeat(100_000);
    let remote = serve(vec![
        File {
            path: "/photo.jpg",
            content_type: "image/jpeg",
            body: photo.clone(),
            chunked: false,
        },
        File {
            path: "/table",
            content_type: "text/csv",
            body: table.clone(),
            chunked: true,
        },
    ])
    .await;
    // The test's file server is on loopback, which only a trusted URL may reach.
    let media = harness.app.media();

    let mxc = media
        .upload_from_trusted_url(&format!("{remote}/photo.jpg"), Some("photo.jpg"))
        .await
        .unwrap();
    let download = media.download(&mxc).await.unwrap();
    assert_eq!(download.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(download.filename.as_deref(), Some("photo.jpg"));
    assert!(download.bytes().await.unwrap() == photo, "photo differs");

    // No length announced: spooled, then uploaded with its length.
    let mxc = media
        .upload_from_trusted_url(&format!("{remote}/table"), None)
        .await
        .unwrap();
    let (bytes, content_type) = media.download_bytes(&mxc).await.unwrap();
    assert_eq!(bytes.len(), table.len());
    assert!(bytes == table, "table differs");
    // Synapse names the charset of text it serves.
    assert_eq!(content_type.as_deref(), Some("text/csv; charset=UTF-8"));

    let error = media
        .upload_from_trusted_url(&format!("{remote}/nothing-here"), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
}

#[tokio::test]
async fn over_the_limit_nothing_is_stored() {
    let harness = Harness::start(registration(), Router::new()).await;
    let big = noise(3 * MIB, 4);
    let remote = serve(vec![
        File {
            path: "/announced",
            content_type: "video/mp4",
            body: big.clone(),
            chunked: false,
        },
        File {
            path: "/unannounced",
            content_type: "video/mp4",
            body: big.clone(),
            chunked: true,
        },
    ])
    .await;
    let media = harness.app.media().with_limit(MIB as u64);
    let before = stored_files(harness.synapse.dir());

    // Known size: refused before anything is sent.
    let error = media
        .upload_bytes(big.clone(), "video/mp4", None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert!(
        error.to_string().contains("1048576 bytes (1 MiB)"),
        "{error}"
    );
    let error = media
        .upload_from_trusted_url(&format!("{remote}/announced"), None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");

    // Unknown size: cut off while spooling, before anything is sent.
    let error = media
        .upload_from_trusted_url(&format!("{remote}/unannounced"), None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");

    // A source that announces less than it has: Synapse gets part of the body, then the
    // connection breaks, and keeps nothing.
    let source = http()
        .get(format!("{remote}/unannounced"))
        .send()
        .await
        .unwrap();
    let error = media
        .upload_stream(
            source.bytes_stream(),
            "video/mp4",
            Some("liar.mp4"),
            Some(512 * 1024),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("longer than the 524288 bytes announced"),
        "{error}"
    );

    // Over Synapse's own limit (`max_upload_size`, 50 MiB): Synapse reads 50 MiB, then drops
    // the connection without an answer; the error still says why.
    let error = harness
        .app
        .media()
        .with_limit(u64::MAX)
        .upload_bytes(vec![0u8; 51 * MIB], "application/octet-stream", None)
        .await
        .unwrap_err();
    assert!(is_too_large(&error), "{error}");
    assert!(
        error
            .to_string()
            .contains("52428800 bytes (50 MiB) set by the homeserver"),
        "{error}"
    );

    // Give Synapse time to notice the broken connections, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_files(harness.synapse.dir()), before);

    // Within the limit, the same Media works.
    let small = noise(MIB, 5);
    let mxc = media
        .upload_bytes(small.clone(), "video/mp4", None)
        .await
        .unwrap();
    assert!(media.download_bytes(&mxc).await.unwrap().0 == small);
    assert!(stored_files(harness.synapse.dir()) > before);
}
