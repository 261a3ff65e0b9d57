use axum::{Json, extract::State};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde_json::{Value, json};

use super::{
    ApiError,
    ruma_extract::{MatrixPath, read_body},
};
use crate::{Appservice, queues::Source, transaction::TransactionBody};

/// `PUT /_matrix/app/v1/transactions/{txnId}`: the homeserver pushes events.
///
/// The answer comes as soon as the events are queued, not when they are handled: Synapse
/// sends one transaction at a time and stalls every room behind a slow answer. A transaction seen
/// before (the same id with the same events: Synapse resends after any failure) is answered 200
/// and not handled again; the same id with other events is a new transaction, since Synapse on
/// SQLite reuses ids after a restart.
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#put_matrixappv1transactionstxnid>
pub(super) async fn put_transaction(
    State(app): State<Appservice>,
    MatrixPath(txn_id): MatrixPath<String>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let role = app.inner.queues.core.options.role;
    if !role.handles_events() {
        // Accepted here, it would wait for a process that handles events to find it; refused,
        // the homeserver keeps it and retries, and the operator sees why in its logs.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unknown,
            format!(
                "this Trestle process runs the `{role}` role and takes no transactions: \
                 point the registration's url at processes with role `matrix` or `all`"
            ),
        ));
    }
    if app.stalled().is_some() {
        // Logged by the commit task, once a minute; the homeserver keeps the transaction
        // and retries.
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unknown,
            "cannot store transactions now; try again later",
        ));
    }
    let bytes = read_body(body, app.inner.body_limit).await?;
    let body: TransactionBody = serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::not_json(e.to_string()),
            Category::Data => ApiError::bad_json(e.to_string()),
        }
    })?;
    // Stored before answering: once Synapse has its 200 it forgets the transaction.
    if !app
        .queues()
        .receive(&txn_id, body, false, Source::Homeserver)
        .await?
    {
        tracing::debug!(
            txn_id,
            "transaction already received; not handling it again"
        );
    }
    // With durability `disk`, on disk too; answers waiting together share one sync.
    app.store().sync_journal().await?;
    Ok(Json(json!({})))
}
