//! The Application Service API: the HTTP endpoints the homeserver calls.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/>
//!
//! Every known route checks the homeserver's token first; unknown routes and wrong methods get
//! the spec's `M_UNRECOGNIZED` whatever the token, as Synapse expects when it probes. Every
//! other refusal is a Matrix error too (JSON with an `errcode`, never axum's plain text): a
//! path parameter that does not decode (`%FF`) or parse is `400 M_INVALID_PARAM`.

mod auth;
mod error;
mod ping;
mod query;
mod ruma_extract;
mod thirdparty;
mod transactions;

use axum::{
    Router,
    routing::{get, post, put},
};

pub use error::ApiError;
pub use ruma_extract::Ruma;

use crate::Appservice;

impl Appservice {
    /// The axum router serving the Application Service API, for embedding or testing with
    /// `tower::ServiceExt::oneshot`.
    pub fn http_router(&self) -> axum::Router {
        let api = router(self.clone());
        match self.web_routes() {
            Some(web) => api.merge(web),
            None => api,
        }
    }
}

/// The API's routes, bound to `app`.
pub(crate) fn router(app: Appservice) -> Router {
    const V1: &str = "/_matrix/app/v1";
    Router::new()
        .route(
            &format!("{V1}/transactions/{{txn_id}}"),
            put(transactions::put_transaction),
        )
        .route(&format!("{V1}/users/{{user_id}}"), get(query::query_user))
        .route(
            &format!("{V1}/rooms/{{room_alias}}"),
            get(query::query_alias),
        )
        .route(
            &format!("{V1}/thirdparty/protocol/{{protocol}}"),
            get(thirdparty::protocol),
        )
        .route(
            &format!("{V1}/thirdparty/user/{{protocol}}"),
            get(thirdparty::users_for_protocol),
        )
        .route(
            &format!("{V1}/thirdparty/location/{{protocol}}"),
            get(thirdparty::locations_for_protocol),
        )
        .route(
            &format!("{V1}/thirdparty/user"),
            get(thirdparty::users_for_id),
        )
        .route(
            &format!("{V1}/thirdparty/location"),
            get(thirdparty::locations_for_alias),
        )
        .route(&format!("{V1}/ping"), post(ping::ping))
        // Layers added with route_layer run only for matched routes, so a request for an
        // unknown path is told 404 before its token is looked at.
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_hs_token,
        ))
        // Outside the spec's paths and its token: Prometheus scrapes without Matrix credentials.
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::unrecognized("unknown endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(app)
}

/// `GET /metrics`: counters and queue depths in Prometheus' text format.
async fn metrics(axum::extract::State(app): axum::extract::State<Appservice>) -> String {
    crate::metrics::exposition([(app.registration().id.as_str(), &app)]).await
}

#[cfg(test)]
mod tests;
