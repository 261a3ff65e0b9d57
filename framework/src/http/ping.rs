use axum::response::Response;
use ruma::api::appservice::ping::send_ping;

use super::{Ruma, error::ruma_response};

/// `POST /_matrix/app/v1/ping`: the homeserver checks that it can reach us.
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#post_matrixappv1ping>
pub(super) async fn ping(Ruma(request): Ruma<send_ping::v1::Request>) -> Response {
    tracing::debug!(transaction_id = ?request.transaction_id, "pinged by the homeserver");
    ruma_response(send_ping::v1::Response::new())
}
