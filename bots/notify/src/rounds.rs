//! The loop the feed poller and the forwarding service share: a round of work, then a wait
//! until the next is due or something wakes it early, until the appservice stops.
//!
//! Both are registered with [`trestle::Router::singleton`], so where several Trestle processes
//! share one PostgreSQL database one of them works at a time: the framework holds the lease,
//! renews it while the service runs, drops the service when it cannot, and hands it over at
//! once when the process stops.

use std::time::Duration;

use trestle::Appservice;

use crate::Result;

/// Runs a service's rounds until the appservice stops. `round` does one round of work and says
/// how long until the next is due; `wake` starts one early.
pub async fn run_rounds<F, Fut>(
    app: &Appservice,
    service: &'static str,
    wake: &tokio::sync::Notify,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    loop {
        let wait = round().await.unwrap_or_else(|error| {
            tracing::warn!(%error, service, "service round failed; trying again soon");
            Duration::from_secs(5)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = app.stopping() => return,
        }
    }
}
