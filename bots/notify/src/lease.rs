//! One worker per service across processes: several Trestle instances on one PostgreSQL
//! database would otherwise all poll the same feeds and deliver the same forwards.
//!
//! Each service renews a lease in the framework's lease table before each round of work and
//! skips the round when another process holds it; a holder that dies is replaced once its
//! lease runs out. On SQLite, one process owns the database and the lease is always granted.

use std::time::Duration;

use trestle::Appservice;

use crate::Result;

/// How long a lease lasts without renewal: longer than a service's longest round plus its
/// longest wait (a minute each).
pub const TTL: Duration = Duration::from_secs(300);

/// A service's claim to work.
#[derive(Clone, Debug)]
pub struct Lease {
    scope: String,
    key: &'static str,
    owner: String,
}

impl Lease {
    /// The lease of `service` of this appservice, for this process.
    pub fn new(app: &Appservice, service: &'static str) -> Self {
        Lease {
            scope: format!("{}:notify", app.registration().id),
            key: service,
            owner: crate::db::random_id(16),
        }
    }

    /// Takes or renews the lease; whether this process may work now.
    pub async fn hold(&self, app: &Appservice) -> Result<bool> {
        Ok(app
            .store()
            .lease(&self.scope, self.key, &self.owner, TTL)
            .await?)
    }

    /// Gives the lease back, so another process can take over at once.
    pub async fn release(&self, app: &Appservice) {
        if let Err(error) = app
            .store()
            .release(&self.scope, self.key, &self.owner)
            .await
        {
            tracing::warn!(%error, service = self.key, "could not release the lease");
        }
    }
}

/// Runs a service's rounds while this process holds its lease, until the appservice stops.
/// `round` does one round of work and says how long until the next is due; `wake` starts one
/// early.
pub async fn run_rounds<F, Fut>(
    app: &Appservice,
    service: &'static str,
    wake: &tokio::sync::Notify,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    let lease = Lease::new(app, service);
    loop {
        let wait = match lease.hold(app).await {
            Ok(true) => round().await,
            Ok(false) => Ok(Duration::from_secs(30)),
            Err(error) => Err(error),
        }
        .unwrap_or_else(|error| {
            tracing::warn!(%error, service, "service round failed; trying again soon");
            Duration::from_secs(5)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = app.stopping() => {
                lease.release(app).await;
                return;
            }
        }
    }
}
