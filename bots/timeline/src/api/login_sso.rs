//! Logging in where the homeserver offers single sign-on (`m.login.sso`), by the login-token
//! flow of the spec
//! ([client-server API, "Client login via SSO"](https://spec.matrix.org/v1.16/client-server-api/#client-login-via-sso)):
//!
//! 1. The page's link leads to `GET /api/login/sso`, which makes a random `state`, binds it to
//!    the browser with a cookie (`HttpOnly`, `SameSite=Lax`, ten minutes) and sends the browser to
//!    the homeserver's `/_matrix/client/v3/login/sso/redirect?redirectUrl=<callback>?state=…`.
//! 2. After the identity provider, the homeserver sends the browser back to the callback with a
//!    `loginToken`. The callback takes it only with the cookie of the same `state`: a link that
//!    carries someone else's login token (to log the victim in as the attacker) arrives without
//!    that cookie and is refused, its token unspent. The token is exchanged (`m.login.token`)
//!    and the session kept in memory, under the state, for the page to collect.
//! 3. The callback sends the browser to the page, which collects the session with
//!    `POST /api/login/sso/finish` (same cookie; answered once) into `sessionStorage`: the access
//!    token never appears in a URL.

use super::*;
use trestle::axum::extract::OriginalUri;

/// A sign-on started and not yet collected is forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// The cookie that binds a sign-on's state to the browser that started it.
const COOKIE: &str = "trestle_timeline_sso";
/// Sign-ons in flight at most; past it the oldest are dropped, so strangers cannot fill memory.
const MAX_PENDING: usize = 10_000;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/login/flows", get(flows))
        .route("/api/login/sso", get(start))
        .route("/api/login/sso/callback", get(callback))
        .route("/api/login/sso/finish", post(finish))
}

/// A user and their access token.
type Session = (OwnedUserId, String);

/// Sign-ons in flight: their state, when they started, and the session once the homeserver
/// gave it.
#[derive(Default)]
pub(crate) struct Pending(Mutex<HashMap<String, (Instant, Option<Session>)>>);

impl Pending {
    fn begin(&self) -> String {
        let state = trestle::registration::generate_token();
        let mut pending = self.0.lock_unpoisoned();
        pending.retain(|_, (at, _)| at.elapsed() < PENDING_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(state, _)| state.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(state.clone(), (Instant::now(), None));
        state
    }

    /// Whether `state` was started here, lately, and has no session yet.
    fn awaiting(&self, state: &str) -> bool {
        self.0
            .lock_unpoisoned()
            .get(state)
            .is_some_and(|(at, session)| at.elapsed() < PENDING_TTL && session.is_none())
    }

    fn complete(&self, state: &str, session: Session) {
        if let Some(entry) = self.0.lock_unpoisoned().get_mut(state) {
            entry.1 = Some(session);
        }
    }

    fn collect(&self, state: &str) -> Option<Session> {
        let mut pending = self.0.lock_unpoisoned();
        match pending.get(state) {
            Some((at, Some(_))) if at.elapsed() < PENDING_TTL => {
                pending.remove(state).and_then(|(_, session)| session)
            }
            _ => None,
        }
    }
}

/// `GET /api/login/flows`: what the page offers.
async fn flows(State(web): State<Web>) -> ApiResult {
    let flows = web.users.login_flows().await?;
    Ok(Json(
        json!({ "password": flows.password, "sso": flows.sso }),
    ))
}

/// Where the plugin's routes start as the browser sees them (`https://example.org/timeline/`):
/// the `public_url` setting, else the request's own host and the path before `suffix`.
fn public_base(web: &Web, headers: &HeaderMap, uri: &OriginalUri, suffix: &str) -> String {
    if let Some(url) = &web.settings.public_url {
        return format!("{}/", url.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}{}", path_base(uri, suffix))
}

/// The path before `suffix` (`/timeline/` of `/timeline/api/login/sso`).
fn path_base(uri: &OriginalUri, suffix: &str) -> String {
    let path = uri.path();
    let base = path.strip_suffix(suffix).unwrap_or("/");
    if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    }
}

/// The path the browser sees the plugin's routes under: `public_url`'s (a proxy in front may
/// serve them under another prefix than Trestle's), else the request's.
fn browser_path_base(web: &Web, uri: &OriginalUri, suffix: &str) -> String {
    public_path_base(web.settings.public_url.as_deref(), uri, suffix)
}

fn public_path_base(public_url: Option<&str>, uri: &OriginalUri, suffix: &str) -> String {
    match public_url.and_then(|u| url::Url::parse(u).ok()) {
        Some(url) => format!("{}/", url.path().trim_end_matches('/')),
        None => path_base(uri, suffix),
    }
}

fn cookie(web: &Web, uri: &OriginalUri, suffix: &str, value: &str, max_age: u64) -> String {
    let secure = web
        .settings
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https:"));
    format!(
        "{COOKIE}={value}; Path={}api/login/sso; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        browser_path_base(web, uri, suffix),
        if secure { "; Secure" } else { "" }
    )
}

/// The state in the browser's cookie, if any.
fn cookie_state(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

fn redirect(location: &str, set_cookie: Option<String>) -> ApiResult<Response> {
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response();
    if let Some(cookie) = set_cookie {
        let value = header::HeaderValue::try_from(cookie)
            .map_err(|e| ApiError::bad(format!("cannot set the sign-on cookie: {e}")))?;
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `GET /api/login/sso`: to the homeserver's single sign-on, with a fresh state bound to this
/// browser.
async fn start(
    State(web): State<Web>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> ApiResult<Response> {
    const SUFFIX: &str = "api/login/sso";
    if !web.users.login_flows().await?.sso {
        return Err(ApiError::not_found(
            "the homeserver offers no single sign-on: log in with a password",
        ));
    }
    let state = web.sso.begin();
    let mut callback = url::Url::parse(&format!(
        "{}api/login/sso/callback",
        public_base(&web, &headers, &uri, SUFFIX)
    ))
    .map_err(|e| ApiError::bad(format!("the page's own address: {e}")))?;
    callback.query_pairs_mut().append_pair("state", &state);
    let homeserver = web
        .settings
        .homeserver_public_url
        .as_deref()
        .unwrap_or(web.app.client().base_url())
        .trim_end_matches('/');
    let mut location = url::Url::parse(&format!(
        "{homeserver}/_matrix/client/v3/login/sso/redirect"
    ))
    .map_err(|e| ApiError::bad(format!("the homeserver's address: {e}")))?;
    location
        .query_pairs_mut()
        .append_pair("redirectUrl", callback.as_str());
    redirect(
        location.as_str(),
        Some(cookie(&web, &uri, SUFFIX, &state, PENDING_TTL.as_secs())),
    )
}

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    #[serde(rename = "loginToken")]
    login_token: Option<String>,
}

/// `GET /api/login/sso/callback?state=…&loginToken=…`: the homeserver's answer, taken only in
/// the browser that asked for it.
async fn callback(
    State(web): State<Web>,
    headers: HeaderMap,
    uri: OriginalUri,
    Query(query): Query<Callback>,
) -> ApiResult<Response> {
    let (Some(state), Some(login_token)) = (query.state, query.login_token) else {
        return Err(ApiError::bad(
            "`state` and `loginToken` are both required: start at the page's sign-on link",
        ));
    };
    let bound = cookie_state(&headers).is_some_and(|cookie| cookie == state);
    if !bound || !web.sso.awaiting(&state) {
        tracing::warn!(
            bound,
            "refused a sign-on callback this browser did not start"
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "this sign-on was not started in this browser, or it expired: start again from the page",
        ));
    }
    let session = web.users.login_with_token(&login_token).await?;
    tracing::info!(user = %session.0, "logged in by single sign-on");
    web.sso.complete(&state, session);
    // Back to the page (`…/api/login/sso/callback` → `…/`), which collects the session.
    let page = browser_path_base(&web, &uri, "api/login/sso/callback");
    redirect(&format!("{page}?sso"), None)
}

/// `POST /api/login/sso/finish`: the session of this browser's completed sign-on, once.
async fn finish(
    State(web): State<Web>,
    headers: HeaderMap,
    uri: OriginalUri,
) -> ApiResult<Response> {
    let session = cookie_state(&headers).and_then(|state| web.sso.collect(&state));
    let Some((user_id, access_token)) = session else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "no completed sign-on for this browser",
        ));
    };
    let mut response =
        Json(json!({ "user_id": user_id, "access_token": access_token })).into_response();
    let gone = cookie(&web, &uri, "api/login/sso/finish", "", 0);
    if let Ok(value) = header::HeaderValue::try_from(gone) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trestle::axum::http::{HeaderValue, Uri};

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; trestle_timeline_sso=abc ;b=2"),
        );
        assert_eq!(cookie_state(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("trestle_timeline_sso="),
        );
        assert_eq!(cookie_state(&headers), None);
    }

    #[test]
    fn paths_keep_the_hosts_prefix() {
        let uri = OriginalUri(Uri::from_static("/timeline/api/login/sso/callback?x=1"));
        assert_eq!(path_base(&uri, "api/login/sso/callback"), "/timeline/");
        let uri = OriginalUri(Uri::from_static("/api/login/sso"));
        assert_eq!(path_base(&uri, "api/login/sso"), "/");
        // Behind a proxy that serves the routes under another prefix, the browser's path wins.
        let uri = OriginalUri(Uri::from_static("/timeline/api/login/sso"));
        let public = Some("https://example.org/tl");
        assert_eq!(public_path_base(public, &uri, "api/login/sso"), "/tl/");
        let public = Some("https://example.org/");
        assert_eq!(public_path_base(public, &uri, "api/login/sso"), "/");
        assert_eq!(public_path_base(None, &uri, "api/login/sso"), "/timeline/");
    }

    #[test]
    fn a_state_is_collected_once_and_only_when_complete() {
        let pending = Pending::default();
        let state = pending.begin();
        assert_eq!(state.len(), 64);
        assert!(pending.awaiting(&state));
        assert!(!pending.awaiting("not-a-state"));
        assert_eq!(pending.collect(&state), None);
        let user = OwnedUserId::try_from("@carol:example.org").unwrap();
        pending.complete(&state, (user.clone(), "token".into()));
        assert!(!pending.awaiting(&state), "a state is spent once completed");
        assert_eq!(pending.collect(&state), Some((user, "token".into())));
        assert_eq!(pending.collect(&state), None);
    }
}
