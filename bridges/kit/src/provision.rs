//! The provisioning API: the management room's operations over HTTP, for integration
//! managers and web front ends. Every request carries the bridge's shared secret as
//! `Authorization: Bearer <secret>`, and acts for the Matrix user named by `?user_id=`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/provision/v1/info` | | `{"protocol": {"id", "displayname"}, "login_fields": […]}` |
//! | GET | `/provision/v1/status?user_id=` | | `{"logins": [login…]}` |
//! | POST | `/provision/v1/login?user_id=` | `{"fields": {…}}` | login |
//! | POST | `/provision/v1/logout?user_id=` | `{"login_id": "…"}` | `{}` |
//! | GET | `/provision/v1/portals` | | `{"portals": [{"chat", "room_id", "relay"}…]}` |
//! | POST | `/provision/v1/link?user_id=` | `{"room_id": "…", "chat": "…"}` | portal |
//! | POST | `/provision/v1/unlink?user_id=` | `{"room_id": "…"}` | `{"chat": "…"}` |
//! | GET | `/provision/v1/bridge_state` | | `{"logins": [bridge state…]}` (every user's) |
//! | GET | `/provision/v1/double_puppet?user_id=` | | `{"enabled": bool}` |
//! | PUT | `/provision/v1/double_puppet?user_id=` | `{"enabled": bool}` | `{"enabled": bool}` |
//!
//! A login is `{"id", "remote_user", "remote_name", "state", "reason"}`; a bridge state is
//! `{"state_event", "reason", "user_id", "login_id", "timestamp"}` (see `BridgeState`). Errors are Matrix
//! errors (`{"errcode", "error"}`): `401 M_UNAUTHORIZED` without a secret, `403 M_FORBIDDEN`
//! with a wrong one or for an operation the user may not do, `404 M_NOT_FOUND` for an unknown
//! login or portal (and for everything while no secret is configured), `400 M_BAD_JSON` for a
//! body or parameter that does not parse. Turning double puppeting on where the bridge cannot
//! act as the user (no secret for their homeserver, a token that does not act as them) is
//! `403 M_FORBIDDEN`, saying why.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{FromRequest, Query, Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::StatusCode;
use ruma::{OwnedUserId, RoomId, api::error::ErrorKind};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use trestle::{Appservice, http::ApiError};

use super::{BridgeError, BridgeHandle, Login, LoginRequest, Network, PortalRef};

/// The routes, to be served by the appservice beside its API.
pub(crate) fn routes<N: Network>(bridge: BridgeHandle<N>, app: Appservice) -> axum::Router {
    let guard = Guard {
        bridge: bridge.clone(),
        app,
    };
    axum::Router::new()
        .route("/provision/v1/info", get(info::<N>))
        .route("/provision/v1/status", get(status::<N>))
        .route("/provision/v1/login", post(login::<N>))
        .route("/provision/v1/logout", post(logout::<N>))
        .route("/provision/v1/portals", get(portals::<N>))
        .route("/provision/v1/link", post(link::<N>))
        .route("/provision/v1/unlink", post(unlink::<N>))
        .route("/provision/v1/bridge_state", get(bridge_state::<N>))
        .route(
            "/provision/v1/double_puppet",
            get(double_puppet::<N>).put(set_double_puppet::<N>),
        )
        .layer(axum::middleware::from_fn_with_state(guard, authorize::<N>))
        .with_state(bridge)
}

/// What the secret check needs: the bridge, and its appservice to attach on first use.
struct Guard<N: Network> {
    bridge: BridgeHandle<N>,
    app: Appservice,
}

impl<N: Network> Clone for Guard<N> {
    fn clone(&self) -> Self {
        Guard {
            bridge: self.bridge.clone(),
            app: self.app.clone(),
        }
    }
}

/// Checks the shared secret in constant time, then makes sure the kit's tables exist (a
/// request may come before any event).
async fn authorize<N: Network>(
    State(Guard { bridge, app }): State<Guard<N>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(secret) = bridge
        .config()
        .provisioning_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    else {
        return ApiError::not_found("the provisioning API is not enabled").into_response();
    };
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Unauthorized,
            "missing the provisioning secret",
        )
        .into_response(),
        Some(given) if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) => {
            if let Err(error) = bridge.attach(&app).await {
                return ApiError::internal(error).into_response();
            }
            next.run(request).await
        }
        Some(_) => ApiError::forbidden("wrong provisioning secret").into_response(),
    }
}

/// A JSON body whose errors are Matrix errors.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| ApiError::bad_json(e.body_text()))
    }
}

#[derive(Deserialize)]
struct UserParam {
    user_id: Option<String>,
}

fn user_of(param: UserParam) -> Result<OwnedUserId, ApiError> {
    let user = param
        .user_id
        .ok_or_else(|| ApiError::bad_json("the user_id parameter is required"))?;
    user.parse()
        .map_err(|_| ApiError::bad_json(format!("`{user}` is not a user id")))
}

fn api_error(error: BridgeError) -> ApiError {
    match error {
        BridgeError::BadRequest(m) => ApiError::bad_json(m),
        BridgeError::Forbidden(m) => ApiError::forbidden(&m),
        BridgeError::NotLoggedIn => ApiError::not_found("not logged in"),
        e @ BridgeError::NoPortal(_) => ApiError::not_found(&e.to_string()),
        e @ BridgeError::Unsupported(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unrecognized,
            e.to_string(),
        ),
        BridgeError::Remote(m) => ApiError::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, m),
        BridgeError::Retriable(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown, m)
        }
        other => ApiError::internal(other),
    }
}

fn login_json<N: Network>(login: &Login<N>) -> Value {
    json!({
        "id": login.id,
        "remote_user": login.remote_user.to_string(),
        "remote_name": login.remote_name,
        "state": login.state.name(),
        "reason": login.state.reason(),
    })
}

fn portal_json<N: Network>(portal: &PortalRef<N>) -> Value {
    json!({ "chat": portal.chat.to_string(), "room_id": portal.room_id, "relay": portal.relay })
}

type Answer = Result<Json<Value>, ApiError>;

async fn info<N: Network>(State(bridge): State<BridgeHandle<N>>) -> Answer {
    let protocol = bridge.network().protocol();
    Ok(Json(json!({
        "protocol": {"id": protocol.id, "displayname": protocol.displayname},
        "login_fields": bridge.network().login_fields(),
    })))
}

async fn status<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
) -> Answer {
    let user = user_of(user)?;
    let logins = bridge.logins(&user).await.map_err(api_error)?;
    let logins: Vec<Value> = logins.iter().map(login_json).collect();
    Ok(Json(json!({ "logins": logins })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

async fn login<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
    Body(body): Body<LoginBody>,
) -> Answer {
    let user = user_of(user)?;
    let request = LoginRequest {
        fields: body.fields,
        ..LoginRequest::new(user)
    };
    let login = bridge.login(request).await.map_err(api_error)?;
    Ok(Json(login_json(&login)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    login_id: String,
}

async fn logout<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
    Body(body): Body<LogoutBody>,
) -> Answer {
    let user = user_of(user)?;
    if bridge
        .logout(&user, &body.login_id)
        .await
        .map_err(api_error)?
    {
        Ok(Json(json!({})))
    } else {
        Err(ApiError::not_found("no such login"))
    }
}

async fn portals<N: Network>(State(bridge): State<BridgeHandle<N>>) -> Answer {
    let portals = bridge.portals().await.map_err(api_error)?;
    let portals: Vec<Value> = portals.iter().map(portal_json).collect();
    Ok(Json(json!({ "portals": portals })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    room_id: String,
    #[serde(default)]
    chat: Option<String>,
}

fn room_of(body: &LinkBody) -> Result<ruma::OwnedRoomId, ApiError> {
    RoomId::parse(&body.room_id)
        .map_err(|_| ApiError::bad_json(format!("`{}` is not a room id", body.room_id)))
}

async fn link<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
    Body(body): Body<LinkBody>,
) -> Answer {
    let user = user_of(user)?;
    let room_id = room_of(&body)?;
    let chat = body.chat.as_deref().unwrap_or_default();
    let chat: N::ChatId = chat
        .parse()
        .map_err(|_| ApiError::bad_json(format!("`{chat}` is not a chat")))?;
    let portal = bridge
        .link(&chat, &room_id, &user)
        .await
        .map_err(api_error)?;
    Ok(Json(portal_json(&portal)))
}

async fn unlink<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
    Body(body): Body<LinkBody>,
) -> Answer {
    let user = user_of(user)?;
    let room_id = room_of(&body)?;
    let chat = bridge.unlink(&room_id, &user).await.map_err(api_error)?;
    Ok(Json(json!({ "chat": chat.to_string() })))
}

async fn bridge_state<N: Network>(State(bridge): State<BridgeHandle<N>>) -> Answer {
    let states = bridge.bridge_states().await.map_err(api_error)?;
    let states: Vec<Value> = states.iter().map(super::BridgeState::to_json).collect();
    Ok(Json(json!({ "logins": states })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DoublePuppetBody {
    enabled: bool,
}

async fn double_puppet<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
) -> Answer {
    let user = user_of(user)?;
    let enabled = bridge.double_puppeting(&user).await.map_err(api_error)?;
    Ok(Json(json!({ "enabled": enabled })))
}

async fn set_double_puppet<N: Network>(
    State(bridge): State<BridgeHandle<N>>,
    Query(user): Query<UserParam>,
    Body(body): Body<DoublePuppetBody>,
) -> Answer {
    let user = user_of(user)?;
    bridge
        .set_double_puppeting(&user, body.enabled)
        .await
        .map_err(api_error)?;
    Ok(Json(json!({ "enabled": body.enabled })))
}
