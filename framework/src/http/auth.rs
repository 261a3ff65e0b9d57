use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::Appservice;

struct TokenQuery {
    access_token: Option<String>,
}

/// Checks the homeserver's token: `Authorization: Bearer <hs_token>`, or the legacy
/// `access_token` query parameter. When both are sent they must agree.
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#authorization>
pub(super) async fn require_hs_token(
    State(app): State<Appservice>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = match request.headers().get(http::header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::forbidden("malformed Authorization header"))?;
            let token = value
                .strip_prefix("Bearer ")
                .ok_or_else(|| ApiError::forbidden("Authorization must be a Bearer token"))?;
            Some(token.trim().to_owned())
        }
    };
    let query = request
        .uri()
        .query()
        .and_then(|q| token_from_query(q).access_token);
    let token = match (header, query) {
        (None, None) => return Err(ApiError::unauthorized()),
        (Some(h), Some(q)) if h != q => {
            return Err(ApiError::forbidden(
                "Authorization header and access_token differ",
            ));
        }
        (Some(token), _) | (None, Some(token)) => token,
    };
    let expected = app.registration().hs_token.as_bytes();
    if !bool::from(token.as_bytes().ct_eq(expected)) {
        return Err(ApiError::forbidden("wrong hs_token"));
    }
    Ok(next.run(request).await)
}

fn token_from_query(query: &str) -> TokenQuery {
    let pairs = url::form_urlencoded::parse(query.as_bytes());
    let access_token = pairs
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned());
    TokenQuery { access_token }
}
