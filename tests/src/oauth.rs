//! A small OAuth 2.0 provider (RFC 6749's authorization code grant), which Synapse signs users on
//! with through `oidc_providers` (without the `openid` scope it reads the user from the provider's
//! userinfo endpoint, as it does for GitHub): for tests of logins where the homeserver offers only
//! single sign-on, through the kind of provider most deployments use.
//!
//! Whoever visits its `/authorize` is the one user it was started for, as if they had typed
//! their password there: the browser goes back to the `redirect_uri` with a fresh code and the
//! `state` it came with. Synapse trades the code at `/token` (once, for the redirect URI it was
//! issued for, with the client's secret) for an access token, and reads the user at `/userinfo`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::loopback::LoopbackServer;
use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

/// The client Synapse is registered as.
const CLIENT_ID: &str = "synapse";
const CLIENT_SECRET: &str = "synapse-secret";

/// A running OAuth 2.0 provider; dropping it stops it.
pub struct OAuthServer {
    server: LoopbackServer,
    shared: Arc<Shared>,
}

struct Shared {
    user: String,
    display_name: String,
    /// Code → the redirect URI it was issued for.
    codes: Mutex<HashMap<String, String>>,
    /// Access tokens handed out.
    tokens: Mutex<Vec<String>>,
    authorizations: AtomicUsize,
    userinfos: AtomicUsize,
}

impl OAuthServer {
    /// Starts a provider on a free loopback port that signs everyone on as `user` (its `sub`),
    /// named `display_name`.
    pub async fn start(user: &str, display_name: &str) -> OAuthServer {
        let shared = Arc::new(Shared {
            user: user.to_owned(),
            display_name: display_name.to_owned(),
            codes: Mutex::default(),
            tokens: Mutex::default(),
            authorizations: AtomicUsize::new(0),
            userinfos: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(shared.clone());
        OAuthServer {
            server: LoopbackServer::start(app).await,
            shared,
        }
    }

    /// The `oidc_providers` block of `homeserver.yaml` for this provider. `skip_verification`,
    /// as Synapse's own docs advise for a provider on plain HTTP in tests: it lets the issuer be
    /// `http://`.
    pub fn synapse_config(&self) -> String {
        let url = self.server.url();
        format!(
            "oidc_providers:\n  - idp_id: oauth\n    idp_name: \"Test OAuth\"\n    \
             discover: false\n    skip_verification: true\n    issuer: \"{url}/\"\n    \
             client_id: \"{CLIENT_ID}\"\n    client_secret: \"{CLIENT_SECRET}\"\n    \
             client_auth_method: client_secret_post\n    scopes: [\"profile\"]\n    \
             authorization_endpoint: \"{url}/authorize\"\n    token_endpoint: \"{url}/token\"\n    \
             userinfo_endpoint: \"{url}/userinfo\"\n    user_profile_method: userinfo_endpoint\n    \
             user_mapping_provider:\n      config:\n        subject_claim: sub\n        \
             localpart_template: \"{{{{ user.sub }}}}\"\n        \
             display_name_template: \"{{{{ user.name }}}}\"\n"
        )
    }

    /// How many times a browser came to `/authorize`.
    pub fn authorizations(&self) -> usize {
        self.shared.authorizations.load(Ordering::SeqCst)
    }

    /// How many times the user was read with a good access token.
    pub fn userinfos(&self) -> usize {
        self.shared.userinfos.load(Ordering::SeqCst)
    }
}

/// `GET /authorize?response_type=code&client_id=…&redirect_uri=…&state=…`: the user is signed
/// on at once; back to the client with a code.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (Some(redirect), Some("code"), Some(CLIENT_ID)) = (
        query.get("redirect_uri"),
        query.get("response_type").map(String::as_str),
        query.get("client_id").map(String::as_str),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "not a code request of the known client",
        )
            .into_response();
    };
    shared.authorizations.fetch_add(1, Ordering::SeqCst);
    let code = trestle::registration::generate_token();
    shared
        .codes
        .lock()
        .unwrap()
        .insert(code.clone(), redirect.clone());
    let mut location = reqwest::Url::parse(redirect).unwrap();
    location.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = query.get("state") {
        location.query_pairs_mut().append_pair("state", state);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// `POST /token` (form): a code, once, for the redirect URI it was issued for, by the client
/// with its secret.
async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("grant_type") != Some("authorization_code")
        || field("client_id") != Some(CLIENT_ID)
        || field("client_secret") != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let issued_for = field("code").and_then(|code| shared.codes.lock().unwrap().remove(code));
    if issued_for.is_none() || issued_for.as_deref() != field("redirect_uri") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let access = trestle::registration::generate_token();
    shared.tokens.lock().unwrap().push(access.clone());
    Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600}))
        .into_response()
}

/// `GET /userinfo` with `Authorization: Bearer <token>`: the user.
async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known =
        bearer.is_some_and(|token| shared.tokens.lock().unwrap().iter().any(|t| t == token));
    if !known {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    shared.userinfos.fetch_add(1, Ordering::SeqCst);
    Json(json!({"sub": shared.user, "name": shared.display_name})).into_response()
}
