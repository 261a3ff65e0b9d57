//! A plugin's own HTTP routes and long-running tasks, which live as long as its appservice.
//!
//! Bridges hold connections to their networks and bots poll feeds: work that no event starts.
//! A [`Service`] is such a task, started with the appservice's listener and told to stop
//! with it, so a test harness and the `trestle` host run plugins the same way.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use tokio::task::JoinSet;

use crate::{Appservice, Result};

/// Builds a plugin's HTTP routes once its appservice exists.
pub(crate) type WebRoutes = Arc<dyn Fn(Appservice) -> axum::Router + Send + Sync>;

/// A named long-running task of a plugin; see [`crate::Router::service`].
#[derive(Clone)]
pub(crate) struct Service {
    pub(crate) name: &'static str,
    /// Run by one process at a time where processes share the store
    /// ([`crate::Router::singleton`]).
    pub(crate) one_process: bool,
    pub(crate) run: Arc<dyn Fn(Appservice) -> BoxFuture<'static, Result<()>> + Send + Sync>,
}

/// The running services of one appservice.
#[derive(Debug)]
pub(crate) struct Running {
    tasks: JoinSet<()>,
}

/// What runs beside an appservice's listener, from [`Appservice::start`] to
/// [`Appservice::stop`]: the first ping of the homeserver and the router's services.
#[derive(Debug)]
#[must_use = "stop it with Appservice::stop"]
pub struct Started {
    ping: tokio::task::JoinHandle<()>,
    bot: Option<tokio::task::JoinHandle<()>>,
    services: Running,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long services get to finish cleanly (say goodbye to a network) before being cut off.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long received work gets to be handled and sent once the listener is closed.
const IDLE_GRACE: Duration = Duration::from_secs(10);

impl Appservice {
    /// Completes when the appservice begins to stop: services finish their work and return.
    pub async fn stopping(&self) {
        let mut stop = self.inner.stop.subscribe();
        // An error means the sender is gone, which is a stop too.
        let _ = stop.wait_for(|stopping| *stopping).await;
    }

    /// Whether the appservice has begun to stop.
    pub fn is_stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Says the appservice is stopping ([`Appservice::stopping`] completes) as soon as its
    /// listener begins to close, before the graceful shutdown waits for every open connection:
    /// a long-lived response (a stream of server-sent events) ends on that signal, and would
    /// otherwise hold the shutdown up until it ended by itself. [`Appservice::run`] does it;
    /// public for a host that serves several appservices on one listener (crate `trestle-host`).
    /// [`Appservice::stop`] follows as before.
    pub fn begin_stopping(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Starts what runs beside serving the Application Service API: a ping of the homeserver
    /// (which can reach the appservice only once it listens) and the router's services.
    /// [`Appservice::run`] does it; public for a host that serves several appservices on one
    /// listener (crate `trestle-host`), which stops each with [`Appservice::stop`].
    pub fn start(&self) -> Started {
        // First: it clears the stop signal of an earlier run, which the bot's task watches.
        let services = self.start_services();
        Started {
            ping: self.ping_in_background(),
            bot: self.register_bot_in_background(),
            services,
        }
    }

    /// Registers the bot, where it is not the registration's sender (which the homeserver
    /// made), from a task retrying until the homeserver answers: requests made as the bot
    /// assert its id, which the homeserver takes only from a registered user. (The outbox
    /// registers it too before its first send.)
    fn register_bot_in_background(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.bot_user_id() == self.sender_user_id() {
            return None;
        }
        let app = self.clone();
        Some(tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                match app.bot().ensure_registered().await {
                    Ok(()) => return,
                    Err(error) => {
                        let bot = app.bot_user_id();
                        tracing::warn!(%bot, %error, "could not register the bot; retrying");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = app.stopping() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }))
    }

    /// Stops what [`Appservice::start`] started, once the listener is closed: services are told
    /// to stop and given a little time to finish cleanly, then received work a little more.
    pub async fn stop(&self, started: Started) {
        started.ping.abort();
        if let Some(bot) = started.bot {
            bot.abort();
        }
        self.stop_services(started.services).await;
        // Where processes share the store, the others take over what is left at once.
        if self.inner.queues.hand_over().await {
            return;
        }
        // What is not finished now is in the store and is finished on the next start.
        if tokio::time::timeout(IDLE_GRACE, self.idle()).await.is_err() {
            tracing::warn!(appservice = %self.inner.registration.id, "stopping with work left in the store for the next start");
        }
    }

    /// Starts the router's services, each restarted with a back-off when it fails or ends early.
    pub(crate) fn start_services(&self) -> Running {
        let _ = self.inner.stop.send(false);
        let mut tasks = JoinSet::new();
        let role = self.inner.queues.core.options.role;
        for service in &self.inner.router.options.hooks.services {
            if !role.runs_services() {
                tracing::info!(service = service.name, %role, "not running the service in this role");
                continue;
            }
            let (app, service) = (self.clone(), service.clone());
            tasks.spawn(supervise(app, service));
        }
        Running { tasks }
    }

    /// Tells the services to stop, and waits a little for them.
    pub(crate) async fn stop_services(&self, mut running: Running) {
        let _ = self.inner.stop.send(true);
        let drained = async { while running.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_GRACE, drained).await.is_err() {
            tracing::warn!(appservice = %self.inner.registration.id, "services did not stop in time");
            running.tasks.abort_all();
        }
    }

    /// The plugin's own routes, if it has any.
    pub(crate) fn web_routes(&self) -> Option<axum::Router> {
        let web = self.inner.router.options.hooks.web.as_ref()?;
        Some(web(self.clone()))
    }
}

async fn supervise(app: Appservice, service: Service) {
    let lease = ServiceLease::of(&app, &service);
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(lease) = &lease
            && !lease.take(&app).await
        {
            return;
        }
        let started = tokio::time::Instant::now();
        tracing::info!(service = service.name, "running the service");
        let run = run_caught((service.run)(app.clone()));
        let result = match &lease {
            None => run.await,
            Some(lease) => lease.hold_while(run).await,
        };
        if let Some(lease) = &lease {
            lease.give_back().await;
        }
        if app.is_stopping() {
            return;
        }
        match result {
            Ok(()) => tracing::warn!(
                service = service.name,
                "service ended early; starting it again"
            ),
            Err(error) => {
                tracing::error!(service = service.name, %error, "service failed; starting it again")
            }
        }
        // A service that ran a good while before failing starts over with a short wait.
        if started.elapsed() > MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = app.stopping() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The lease that lets one process of those sharing a store run a
/// [singleton](crate::Router::singleton) service.
struct ServiceLease {
    store: crate::Store,
    scope: String,
    name: &'static str,
    owner: String,
}

/// How often a process that stands by for a singleton service looks whether it is free.
const STAND_BY_LOOK: Duration = Duration::from_secs(2);

impl ServiceLease {
    /// The lease `service` needs: none unless it is a singleton on a store that processes
    /// share.
    fn of(app: &Appservice, service: &Service) -> Option<Self> {
        let core = &app.inner.queues.core;
        if !service.one_process || !core.mode.leases() {
            return None;
        }
        Some(ServiceLease {
            store: core.store.clone(),
            scope: format!("service:{}", core.appservice_id),
            name: service.name,
            owner: core.owner.clone(),
        })
    }

    /// Waits until this process holds the lease; `false` when the appservice stops first.
    async fn take(&self, app: &Appservice) -> bool {
        let mut told = false;
        // Subscribed before the first try, so a release just after it is heard.
        let mut notices = self.store.notices();
        loop {
            match self
                .store
                .lease(&self.scope, self.name, &self.owner, self.store.lease_ttl())
                .await
            {
                Ok(true) => {
                    if told {
                        tracing::info!(service = self.name, "taking the service over");
                    }
                    return true;
                }
                Ok(false) if !told => {
                    told = true;
                    tracing::info!(
                        service = self.name,
                        "another process runs this service; standing by"
                    );
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(service = self.name, %error, "could not take the service's lease")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(STAND_BY_LOOK) => {}
                () = crate::queues::lease_freed(&mut notices) => {}
                () = app.stopping() => return false,
            }
        }
    }

    /// Runs the service while renewing the lease; a lost lease ends it (dropped, before
    /// another process may start it) with an error, so the supervisor stands by again.
    async fn hold_while(&self, run: impl Future<Output = Result<()>>) -> Result<()> {
        let mut leased_at = std::time::Instant::now();
        self.store
            .keep_lease_while(&self.scope, self.name, &self.owner, &mut leased_at, run)
            .await
            .unwrap_or_else(|| {
                Err(crate::Error::Other(
                    "lost its lease to another process; stopped here".into(),
                ))
            })
    }

    async fn give_back(&self) {
        if let Err(error) = self
            .store
            .release(&self.scope, self.name, &self.owner)
            .await
        {
            tracing::warn!(service = self.name, %error, "could not give the service's lease back");
        }
    }
}

/// Runs a service, turning a panic into an error so that the supervisor restarts it.
async fn run_caught(run: impl Future<Output = Result<()>>) -> Result<()> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(_) => Err(crate::Error::Other("the service panicked".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::get;
    use trestle_registration::Registration;

    use super::*;
    use crate::Router;

    async fn serve(
        router: Router,
    ) -> (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let registration = Registration::generate("svc", None, "bot", "svc_", "x");
        let app = Appservice::builder(registration, "http://127.0.0.1:9", "x")
            .router(router)
            .build()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(app.run(listener, async {
            let _ = stopped.await;
        }));
        (url, stop, task)
    }

    #[tokio::test]
    async fn web_routes_are_served_beside_the_api_and_services_run_until_stop() {
        let starts = Arc::new(AtomicUsize::new(0));
        let clean_stops = Arc::new(AtomicUsize::new(0));
        let (s, c) = (starts.clone(), clean_stops.clone());
        let router = Router::new()
            .web(|app: Appservice| {
                let id = app.registration().id.clone();
                axum::Router::new().route(
                    "/hello",
                    get(move || async move { format!("hello from {id}") }),
                )
            })
            .service("counter", move |app| {
                let (s, c) = (s.clone(), c.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    app.stopping().await;
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            });
        let (url, stop, task) = serve(router).await;
        let body = reqwest::get(format!("{url}/hello"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello from svc");
        // The API is still there, and still wants its token.
        let status = reqwest::Client::new()
            .put(format!("{url}/_matrix/app/v1/transactions/1"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(clean_stops.load(Ordering::SeqCst), 0);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(clean_stops.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failing_service_is_restarted_with_a_growing_back_off() {
        let registration = Registration::generate("svc", None, "bot", "svc_", "x");
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = starts.clone();
        let router = Router::new().service("flaky", move |_app| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(tokio::time::Instant::now());
                Err(crate::Error::Other("network down".into()))
            }
        });
        let app = Appservice::builder(registration, "http://127.0.0.1:9", "x")
            .router(router)
            .build()
            .await
            .unwrap();
        // The store's pool keeps real time: pause only once it is built.
        tokio::time::pause();
        let running = app.start_services();
        tokio::time::sleep(Duration::from_secs(8)).await;
        app.stop_services(running).await;
        let starts = starts.lock().unwrap().clone();
        // Started at 0, then after 1 s, 2 s and 4 s of back-off.
        assert_eq!(starts.len(), 4, "{starts:?}");
        let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(gaps, vec![1, 2, 4]);
    }
}
