//! The web page: one HTML document, a script and a style sheet, embedded in the binary; and
//! the Atom feeds.

use trestle::axum::{
    Router,
    extract::{OriginalUri, Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    api::{ApiError, Web},
    atom, content, query,
};

const HTML: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/timeline.js");
const STYLE: &str = include_str!("page/timeline.css");

/// Scripts and styles come only from the plugin's own files; nothing may frame the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes(web: Web) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/timeline.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/timeline.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/atom/{user_id}", get(feed))
        .with_state(web)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Where the plugin's routes start, from the page's own address: `/timeline/` on the host,
/// `/` when the appservice serves them alone.
fn base(uri: &OriginalUri) -> String {
    let path = uri.path();
    if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    }
}

async fn index(uri: OriginalUri) -> Response {
    let html = HTML.replace("{{BASE}}", &content::escape(&base(&uri)));
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

async fn feed(
    State(web): State<Web>,
    uri: OriginalUri,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    web.ready().await?;
    let user = trestle::ruma::UserId::parse(&user_id)
        .map_err(|e| ApiError::not_found(format!("{user_id:?} is not a user id: {e}")))?;
    let profile = query::profile(web.db(), "", user.as_str(), None, 50).await?;
    if profile.room_id.is_none() {
        return Err(ApiError::not_found(format!("{user} has no timeline")));
    }
    let xml = atom::feed(&profile, uri.path());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        xml,
    )
        .into_response())
}
