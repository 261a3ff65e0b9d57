//! Each plugin's web routes under `/<plugin>`, its root with and without the slash.

use axum::{body::Body, extract::OriginalUri};
use http::Request;
use tower::ServiceExt;

use crate::*;

fn paged(_: &PluginSettings<'_>) -> Result<Router> {
    Ok(Router::new().web(|_| {
        axum::Router::new()
            .route(
                "/",
                get(|uri: OriginalUri| async move { format!("root, asked as {}", uri.0) }),
            )
            .route("/page", get(|| async { "page" }))
    }))
}

/// Two plugins, one with web routes, served by a host built from a configuration file.
async fn host(dir: &std::path::Path) -> Host {
    let path = dir.join("trestle.yaml");
    let text = "homeserver:\n  server_name: localhost\n  url: http://127.0.0.1:9\n\
                listen: 127.0.0.1:0\n";
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let plugins = [
        Plugin::new("paged", "paged", "paged_", paged),
        Plugin::new("bare", "bare", "bare_", |_| Ok(Router::new())),
    ];
    Host::new(&config, &plugins).await.unwrap()
}

async fn get_text(router: &axum::Router, path: &str) -> (u16, String) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_plugins_root_answers_with_and_without_a_trailing_slash() {
    let dir = tempfile::tempdir().unwrap();
    let router = host(dir.path()).await.router();
    assert_eq!(
        get_text(&router, "/paged").await,
        (200, "root, asked as /paged".to_owned())
    );
    assert_eq!(
        get_text(&router, "/paged/").await,
        (200, "root, asked as /paged/".to_owned())
    );
    assert_eq!(
        get_text(&router, "/paged/?q=1").await,
        (200, "root, asked as /paged/?q=1".to_owned())
    );
    assert_eq!(
        get_text(&router, "/paged/page").await,
        (200, "page".to_owned())
    );
    // A plugin without a page answers both forms alike: the API's 404 M_UNRECOGNIZED.
    for path in ["/bare", "/bare/"] {
        let (status, body) = get_text(&router, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("M_UNRECOGNIZED"), "{path}: {body}");
    }
    // The API under each plugin is unchanged.
    let (status, body) = get_text(
        &router,
        "/paged/_matrix/app/v1/users/%40paged_a%3Alocalhost",
    )
    .await;
    assert_eq!(status, 401, "{body}");
}
