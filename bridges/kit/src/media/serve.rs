//! Answering a media link: check it, download the file as the bot, stream it through.

use axum::{
    body::Body,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use http::{
    HeaderValue, StatusCode,
    header::{
        CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
        REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    },
};
use ruma::{OwnedMxcUri, api::error::ErrorKind};
use serde::Deserialize;
use trestle::{Appservice, http::ApiError};

use super::{LinkRefusal, PATH, unix_now};
use crate::{BridgeHandle, Network};

/// The route of media links, to be served by the appservice beside its API.
pub(crate) fn routes<N: Network>(bridge: BridgeHandle<N>, app: Appservice) -> axum::Router {
    axum::Router::new()
        .route(
            &format!("{PATH}/{{server}}/{{media_id}}"),
            get(download::<N>),
        )
        .with_state((bridge, app))
}

/// The query of a link. Both are read as text, so that a mangled link is refused as forged.
#[derive(Deserialize)]
struct LinkQuery {
    expires: Option<String>,
    sig: Option<String>,
}

/// A path or query the extractors cannot read (bad percent-encoding) is a mangled link,
/// refused with a Matrix error like any forged one rather than with their plain text.
async fn download<N: Network>(
    State((bridge, app)): State<(BridgeHandle<N>, Appservice)>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Response {
    let (Ok(Path((server, media_id))), Ok(Query(query))) = (path, query) else {
        return ApiError::forbidden("this media link is not valid").into_response();
    };
    match answer(&bridge, &app, &server, &media_id, query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer<N: Network>(
    bridge: &BridgeHandle<N>,
    app: &Appservice,
    server: &str,
    media_id: &str,
    query: LinkQuery,
) -> Result<Response, ApiError> {
    let forged = || ApiError::forbidden("this media link is not valid");
    let mxc = OwnedMxcUri::from(format!("mxc://{server}/{media_id}"));
    if !mxc.is_valid() {
        return Err(forged());
    }
    let expires: u64 = query
        .expires
        .as_deref()
        .and_then(|e| e.parse().ok())
        .ok_or_else(forged)?;
    let signature = query.sig.ok_or_else(forged)?;
    bridge.attach(app).await.map_err(ApiError::internal)?;
    let signer = bridge.link_signer().await.map_err(ApiError::internal)?;
    match signer.verify(&mxc, expires, &signature, unix_now()) {
        Ok(()) => {}
        Err(LinkRefusal::Forged) => return Err(forged()),
        Err(LinkRefusal::Expired) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                ErrorKind::Forbidden,
                "this media link has expired",
            ));
        }
    }

    let limit = bridge.config().media_links.max_size;
    let download = app
        .media()
        .with_limit(limit)
        .download(&mxc)
        .await
        .map_err(|error| refused_download(&mxc, limit, &error))?;

    let content_type = download
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let disposition = disposition(
        content_type.to_str().unwrap_or_default(),
        download.filename.as_deref(),
    );
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_DISPOSITION, disposition)
        // The file is a stranger's: never run it as a page of the bridge's origin, never
        // guess its type, never tell the next site where the link was.
        .header(X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'; style-src 'unsafe-inline'; media-src 'self'; img-src 'self'",
        )
        .header(REFERRER_POLICY, "no-referrer")
        .header(CACHE_CONTROL, "private, max-age=3600");
    if let Some(length) = download.content_length {
        response = response.header(CONTENT_LENGTH, length);
    }
    response
        .body(Body::from_stream(download.body))
        .map_err(ApiError::internal)
}

/// The answer when the homeserver would not give the file.
fn refused_download(mxc: &OwnedMxcUri, limit: u64, error: &trestle::Error) -> ApiError {
    if trestle::media::is_too_large(error) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("the file is larger than the {limit} bytes media links serve"),
        );
    }
    if matches!(error.kind(), Some(ErrorKind::NotFound)) {
        return ApiError::not_found("the file is not on the homeserver");
    }
    tracing::warn!(%mxc, %error, "a media link's file could not be downloaded");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        "the homeserver did not give the file",
    )
}

/// Types a browser may show in place; others are offered as downloads, so that a file made to
/// look like a page (HTML, SVG with scripts) is never rendered under the bridge's address.
const INLINE: &[&str] = &[
    "text/plain",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/apng",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/wave",
    "audio/x-wav",
    "audio/webm",
    "audio/flac",
    "audio/aac",
];

/// A `Content-Disposition` safe to send whatever the uploader named the file: `inline` only
/// for [`INLINE`] types, and the name without path separators or control characters, in the
/// RFC 8187 `filename*` form (every byte outside the plain set percent-encoded).
pub(super) fn disposition(content_type: &str, filename: Option<&str>) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut out = if INLINE.contains(&essence.as_str()) {
        "inline".to_owned()
    } else {
        "attachment".to_owned()
    };
    let name: String = filename
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let name = name.trim();
    if !name.is_empty() {
        out.push_str("; filename*=utf-8''");
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}
