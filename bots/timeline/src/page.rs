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
/// One script (the page keeps to one): the live updates, then the page, which starts them.
const SCRIPT: &str = concat!(
    include_str!("page/live.js"),
    include_str!("page/timeline.js")
);
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

#[cfg(test)]
mod tests {
    use tower::ServiceExt;
    use trestle::{
        Appservice, Registration,
        axum::{body::Body, http::Request},
    };

    use crate::{PLUGIN, Settings};

    /// The plugin's routes nested the way the `trestle` host serves them.
    async fn hosted() -> trestle::axum::Router {
        let registration =
            Registration::generate("timeline", None, "timeline", "timeline_", "localhost");
        let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
            .router(crate::router(Settings::default()).unwrap())
            .build()
            .await
            .unwrap();
        trestle_host::nest_plugin(trestle::axum::Router::new(), PLUGIN.name, app.http_router())
    }

    async fn get(router: &trestle::axum::Router, path: &str) -> (u16, String, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = trestle::axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn under_the_host_the_page_finds_its_script_and_api() {
        let router = hosted().await;
        let (status, content_type, html) = get(&router, "/timeline").await;
        assert_eq!(status, 200);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(
            html.contains("<meta name=\"timeline-base\" content=\"/timeline/\">"),
            "{html}"
        );
        assert!(html.contains("src=\"/timeline/timeline.js\""), "{html}");
        // With a trailing slash: the same page, finding the same files.
        assert_eq!(get(&router, "/timeline/").await, (200, content_type, html));
        let (status, content_type, script) = get(&router, "/timeline/timeline.js").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/javascript"),
            "{content_type}"
        );
        assert!(script.contains("sessionStorage"));
        assert!(script.contains("api/live"));
        let (status, _, css) = get(&router, "/timeline/timeline.css").await;
        assert_eq!((status, css.is_empty()), (200, false));
        let (status, _, error) = get(&router, "/timeline/api/feed").await;
        assert_eq!(status, 401);
        assert!(error.contains("M_MISSING_TOKEN"), "{error}");
        let (status, _, error) = get(&router, "/timeline/api/users/nobody").await;
        assert_eq!(status, 400);
        assert!(error.contains("not a user id"), "{error}");
        let (status, _, error) = get(&router, "/timeline/api/posts/$nothing").await;
        assert_eq!(status, 404);
        assert!(error.contains("M_NOT_FOUND"), "{error}");
        // The live stream, search and media answer under the prefix too.
        let (status, _, error) = get(&router, "/timeline/api/live").await;
        assert_eq!(status, 401);
        assert!(error.contains("M_MISSING_TOKEN"), "{error}");
        let (status, _, found) = get(&router, "/timeline/api/search?q=nothing").await;
        assert_eq!(status, 200);
        assert!(found.contains("\"posts\":[]"), "{found}");
        let (status, _, error) = get(&router, "/timeline/media/localhost/unknown").await;
        assert_eq!(status, 404);
        assert!(error.contains("no image of the timeline"), "{error}");
    }
}
