//! Images: uploaded with the caller's own token to the homeserver's
//! [content repository](https://spec.matrix.org/v1.16/client-server-api/#content-repository),
//! and shown to the page through the plugin, which downloads them from the authenticated media
//! endpoint as its bot.
//!
//! The page's `<img>` elements cannot send an access token, so the plugin proxies: `GET
//! /media/{server}/{media_id}` answers only for media that an indexed post or a known avatar
//! uses (it is no open proxy to the homeserver's media), and only with the image types a post
//! may carry, under a sandboxing Content-Security-Policy.

use trestle::axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, rejection::BytesRejection},
};

use super::*;
use crate::content::IMAGE_TYPES;

/// The largest image a post may carry.
pub(crate) const MAX_IMAGE_BYTES: usize = 8 * 1024 * 1024;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route(
            "/api/media",
            post(upload).layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route("/media/{server}/{media_id}", get(download))
}

/// A `Content-Type`'s media type, without its parameters, in lower case; empty when absent.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The image type `bytes` start like, whatever the request says.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// `POST /api/media`: the body is the image itself, its `Content-Type` one of
/// [`IMAGE_TYPES`]. Answers `201 {"content_uri", "mimetype", "size"}`.
async fn upload(
    State(web): State<Web>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = web.caller(&headers).await?;
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!(
                "the image could not be read ({}); at most {} MiB are allowed",
                e.body_text(),
                MAX_IMAGE_BYTES >> 20
            ),
        )
    })?;
    let declared = media_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if !IMAGE_TYPES.contains(&declared.as_str()) {
        return Err(ApiError::bad(format!(
            "`Content-Type` {declared:?} is not one of {}",
            IMAGE_TYPES.join(", ")
        )));
    }
    if body.is_empty() {
        return Err(ApiError::bad("the image is empty"));
    }
    // A file that is not what it says would be shown as what it says: refuse it here.
    if sniff(&body) != Some(declared.as_str()) {
        return Err(ApiError::bad(format!(
            "the file is not a {declared} image (its first bytes say otherwise)"
        )));
    }
    let size = body.len();
    let uri = web
        .users
        .upload(&caller.token, body.to_vec(), &declared)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "content_uri": uri, "mimetype": declared, "size": size })),
    ))
}

/// Whether an indexed post or a known avatar uses `mxc`.
async fn in_use(web: &Web, mxc: &str) -> ApiResult<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM timeline_posts WHERE image_mxc = $1
         UNION SELECT 1 FROM timeline_profiles WHERE avatar_url = $1",
    )
    .bind(mxc)
    .fetch_optional(web.db())
    .await
    .map_err(trestle::Error::from)?;
    Ok(found.is_some())
}

/// `GET /media/{server}/{media_id}`: an image the timeline shows, read from the homeserver's
/// authenticated media as the bot.
async fn download(
    State(web): State<Web>,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    web.ready().await?;
    let mxc = format!("mxc://{server}/{media_id}");
    let uri = trestle::ruma::OwnedMxcUri::from(mxc.as_str());
    if uri.validate().is_err() || !in_use(&web, &mxc).await? {
        return Err(ApiError::not_found(format!(
            "{mxc} is no image of the timeline's"
        )));
    }
    let download = web
        .app
        .media()
        .with_limit(MAX_IMAGE_BYTES as u64)
        .download(&uri)
        .await?;
    let content_type = media_type(download.content_type.as_deref());
    let Some(shown) = IMAGE_TYPES.iter().find(|t| **t == content_type) else {
        return Err(ApiError::not_found(format!(
            "{mxc} is {content_type:?}, not an image the timeline shows"
        )));
    };
    let mut response = Response::new(Body::from_stream(download.body));
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, *shown),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Opened on its own, the image can do nothing: no script, no forms, no plugins.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ),
        (header::CONTENT_DISPOSITION, "inline"),
        // Media never changes under its URI.
        (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    if let Some(length) = download.content_length {
        headers.insert(header::CONTENT_LENGTH, length.into());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn images_are_known_by_their_first_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<svg onload=alert(1)>"), None);
        assert_eq!(sniff(b"RIFF"), None);
    }
}
