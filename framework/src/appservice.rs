//! The appservice: registration, homeserver client, store and router, tied together and served.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use ruma::{
    OwnedRoomAliasId, OwnedServerName, OwnedTransactionId, OwnedUserId, UserId,
    api::client::appservice::request_ping,
};
use tokio::net::TcpListener;
use trestle_registration::{NamespaceKind, Registration};

pub use crate::queues::SendFailureHook;
use crate::{
    Error, Result, Router, Store,
    client::HomeserverClient,
    metrics::Metrics,
    queues::{Admission, Core, Options, Queues, SendFailure, Users, WriteBack, with_send_scope},
    router::EventContext,
    store::Mode,
    thirdparty::ThirdPartyLookup,
    transaction::Incoming,
};

mod members;
mod redeliver;
mod standalone;
mod state;
#[cfg(test)]
mod tests;
mod upstream;
mod weak;

pub use standalone::Standalone;
pub use weak::WeakAppservice;

/// Answers the homeserver's question "does this user exist?" (`GET /users/{userId}`): return
/// `true` to have the ghost registered and the homeserver told yes.
pub type UserQuery =
    Arc<dyn Fn(Appservice, OwnedUserId) -> BoxFuture<'static, Result<bool>> + Send + Sync>;
/// Answers "does this alias exist?" (`GET /rooms/{roomAlias}`): create the room with the
/// alias, then return `true`.
pub type AliasQuery =
    Arc<dyn Fn(Appservice, OwnedRoomAliasId) -> BoxFuture<'static, Result<bool>> + Send + Sync>;

/// `@<localpart>:<server_name>` as a bot apart from the registration's sender: it must be
/// the sender or lie in an exclusive user namespace, or the homeserver would not let the
/// appservice act as it (or would let another appservice act as it too).
fn bot_apart(
    registration: &Registration,
    localpart: &str,
    server_name: &OwnedServerName,
) -> Result<OwnedUserId> {
    let origin = format!("registration `{}`", registration.id);
    let bot = UserId::parse(format!("@{localpart}:{server_name}"))
        .map_err(|e| Error::Config(format!("{origin}: the bot `{localpart}`: {e}")))?;
    if !registration.can_be_bot(localpart, server_name.as_str()) {
        return Err(Error::Config(format!(
            "{origin}: the bot {bot} is neither the `sender_localpart` nor in an exclusive \
             user namespace (`namespaces.users`): the homeserver would not let the appservice \
             act as it"
        )));
    }
    Ok(bot)
}

/// A running appservice. Cheap to clone: handlers take it as an extractor to act as the bot
/// or as ghosts.
#[derive(Clone)]
pub struct Appservice {
    pub(crate) inner: Arc<AppInner>,
}

impl std::fmt::Debug for Appservice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appservice")
            .field("id", &self.inner.registration.id)
            .finish_non_exhaustive()
    }
}

/// What the appservice holds; the queues below it hold only their [`Core`], and reach up
/// through [`upstream::Up`].
pub(crate) struct AppInner {
    pub(crate) registration: Registration,
    pub(crate) server_name: OwnedServerName,
    pub(crate) router: Router,
    pub(crate) command_prefix: Arc<str>,
    pub(crate) queues: Queues,
    pub(crate) user_query: Option<UserQuery>,
    pub(crate) alias_query: Option<AliasQuery>,
    pub(crate) thirdparty: Option<Arc<dyn ThirdPartyLookup>>,
    pub(crate) body_limit: usize,
    /// `true` once the appservice begins to stop; services watch it.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
}

/// Builds an [`Appservice`].
#[must_use]
pub struct AppserviceBuilder {
    registration: Registration,
    homeserver_url: String,
    server_name: String,
    router: Router,
    store: Option<Store>,
    body_limit: usize,
    on_send_failure: Option<SendFailureHook>,
    options: Options,
    bot_localpart: Option<String>,
}

/// Refuses a second live process with end-to-end encryption on one shared store: each keeps
/// its devices' keys in its own crypto store (`data_dir/crypto`), so two would each make and
/// upload their own, and decrypt what the other was sent with neither.
async fn one_encrypted_process(store: &Store, appservice_id: &str, owner: &str) -> Result<()> {
    let Some(other) = store.live_encrypted_process(appservice_id, owner).await? else {
        return Ok(());
    };
    let ago = (crate::store::now_ms() - other.heartbeat_at).max(0) / 1000;
    Err(Error::Config(format!(
        "appservice `{appservice_id}`: end-to-end encryption (the plugin's `encryption` setting) \
         keeps its state in each process, and another process already runs it with encryption on \
         (role {}, on {} pid {}, alive {ago} s ago): run an encrypted plugin in one process, or \
         turn `encryption` off in this one; a process that died is forgotten after \
         `leases.takeover_s`",
        other.role, other.host, other.pid
    )))
}

impl AppserviceBuilder {
    /// The bot's localpart, where the bot is not the registration's `sender_localpart` user:
    /// an ordinary user inside an exclusive user namespace, registered at start like a ghost
    /// and asserted (`?user_id=`) on every request made as the bot, while the sender stays
    /// hidden and never acts (mautrix's shape). Synapse refuses `/sync` to the sender, so an
    /// encrypted bot on a homeserver that does not push to-device events needs this
    /// (`docs/e2ee.md`). Unset, the bot is the sender, as before.
    pub fn bot(mut self, localpart: impl Into<String>) -> Self {
        self.bot_localpart = Some(localpart.into());
        self
    }

    /// Called with each request the homeserver refused for good (a 4xx other than 429) that
    /// no handler was awaiting. Such failures are logged either way.
    pub fn on_send_failure(mut self, hook: impl Fn(SendFailure) + Send + Sync + 'static) -> Self {
        self.on_send_failure = Some(Arc::new(hook));
        self
    }

    /// How many rooms are handled at once (each in order); 256 unless set. Work for more
    /// rooms waits in the store.
    pub fn max_concurrent_rooms(mut self, rooms: usize) -> Self {
        self.options.max_rooms = rooms.max(1);
        self
    }

    /// How many received events may wait for their handlers before the homeserver's next
    /// transaction waits too (each wait lasts 10 s at most); [`crate::DEFAULT_MAX_IN_FLIGHT`] unless
    /// set, `usize::MAX` for no bound. A burst then waits in the homeserver's own durable queue
    /// rather than behind the handlers, so the events handled last in a burst are not seconds
    /// old. [Pushing transactions](https://spec.matrix.org/v1.16/application-service-api/#pushing-events).
    pub fn max_in_flight(mut self, events: usize) -> Self {
        self.options.max_in_flight = events.max(1);
        self
    }

    /// How long handled events (counted from when they were received) and sent requests stay
    /// in the store (a day unless set), and how long transaction ids are remembered (a week
    /// unless set).
    pub fn retention(mut self, items: Duration, txn_ids: Duration) -> Self {
        self.options.keep_items = items;
        self.options.keep_txn_ids = txn_ids;
        self
    }

    /// What this process does among several sharing a PostgreSQL store: take transactions
    /// and run the handlers, run the services, or both ([`Role::All`](crate::Role::All), the
    /// default). Building fails for another role on a store this process has alone (SQLite).
    pub fn role(mut self, role: crate::Role) -> Self {
        self.options.role = role;
        self
    }

    /// The handlers.
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// The store; an in-memory SQLite store unless set.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The largest request body accepted, 32 MiB unless set. Synapse sends at most 100 events,
    /// 100 ephemeral and 100 to-device events of at most 64 KiB each.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Checks the registration against the server name and builds the appservice.
    pub async fn build(self) -> Result<Appservice> {
        let origin = format!("registration `{}`", self.registration.id);
        self.registration.validate(&origin)?;
        for warning in self.registration.warnings() {
            tracing::warn!(registration = %self.registration.id, "{warning}");
        }
        // The sender need not lie in the user namespace (Synapse does not ask it to): it is one
        // of ours all the same, see `is_own_user`.
        let server_name = OwnedServerName::try_from(self.server_name.as_str())?;
        let sender = UserId::parse(self.registration.bot_user_id(&self.server_name))?;
        let bot_user_id = match &self.bot_localpart {
            Some(localpart) => bot_apart(&self.registration, localpart, &server_name)?,
            None => sender.clone(),
        };
        let mut client = HomeserverClient::new(&self.homeserver_url, &self.registration.as_token)?;
        if bot_user_id != sender {
            client = client.acting_as(bot_user_id.clone());
        }
        let store = match self.store {
            Some(store) => store,
            None => Store::in_memory().await?,
        };
        // Chosen once: the queues ask the mode, never the backend (`store/mode.rs`).
        let mode = Mode::choose(&store);
        if self.options.role != crate::Role::All && !mode.leases() {
            return Err(Error::Config(format!(
                "role `{}`: roles divide the work of several processes sharing a PostgreSQL \
                 database; on SQLite one process does everything, so leave the role at `all` \
                 (or set `database` to a postgres:// URL)",
                self.options.role
            )));
        }
        let writeback = Arc::new(WriteBack::new(store.clone()));
        let users =
            Users::load(bot_user_id, sender, store.clone(), mode, writeback.clone()).await?;
        let command_prefix = Arc::from(self.router.options.command_prefix.as_str());
        let hooks = self.router.options.hooks.clone();
        let id = self.registration.id.clone();
        let owner = format!("{:016x}", rand::random::<u64>());
        let mut options = self.options;
        options.encryption = hooks.encryption.is_some();
        if options.encryption && mode.leases() {
            one_encrypted_process(&store, &id, &owner).await?;
            // Said now, not at the first heartbeat: a process starting just after sees it.
            let role = options.role.to_string();
            store
                .heartbeat(&id, &owner, &role, crate::store::now_ms(), true)
                .await?;
        }
        let inner = Arc::new_cyclic(|weak| AppInner {
            queues: Queues::new(Core {
                appservice_id: id,
                owner,
                client,
                store,
                mode,
                users,
                metrics: Metrics::default(),
                writeback,
                on_send_failure: self.on_send_failure,
                admission: Admission::new(options.max_in_flight),
                options,
                // The way up: to the handlers and the encryption, never holding the appservice.
                upstream: Box::new(upstream::Up::new(weak.clone(), hooks.encryption.clone())),
                receiving: tokio::sync::Mutex::new(()),
            }),
            registration: self.registration,
            server_name,
            router: self.router,
            command_prefix,
            // Declared on the router, with the handlers: one place for what a plugin answers.
            user_query: hooks.user_query.clone(),
            alias_query: hooks.alias_query.clone(),
            thirdparty: hooks.thirdparty.clone(),
            body_limit: self.body_limit,
            stop: tokio::sync::watch::Sender::new(false),
        });
        inner.queues.start();
        Ok(Appservice { inner })
    }
}

impl Appservice {
    /// Starts building an appservice for `registration`, acting on the homeserver at
    /// `homeserver_url` whose users are `@…:server_name`.
    pub fn builder(
        registration: Registration,
        homeserver_url: impl Into<String>,
        server_name: impl Into<String>,
    ) -> AppserviceBuilder {
        AppserviceBuilder {
            registration,
            homeserver_url: homeserver_url.into(),
            server_name: server_name.into(),
            router: Router::new(),
            store: None,
            body_limit: 32 * 1024 * 1024,
            on_send_failure: None,
            options: Options::default(),
            bot_localpart: None,
        }
    }

    /// The registration.
    pub fn registration(&self) -> &Registration {
        &self.inner.registration
    }

    /// The homeserver's server name.
    pub fn server_name(&self) -> &OwnedServerName {
        &self.inner.server_name
    }

    /// The bot's user id: the user the appservice acts as by default, and answers as.
    pub fn bot_user_id(&self) -> &OwnedUserId {
        self.inner.queues.core.users.bot_user_id()
    }

    /// The registration's `sender_localpart` user: the bot, unless the appservice was built
    /// with another ([`AppserviceBuilder::bot`]), when it is a hidden user that never acts.
    pub fn sender_user_id(&self) -> &OwnedUserId {
        self.inner.queues.core.users.sender()
    }

    /// The homeserver client.
    pub fn client(&self) -> &HomeserverClient {
        &self.inner.queues.core.client
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.queues.core.store
    }

    /// The queues, for the intents.
    pub(crate) fn queues(&self) -> &Queues {
        &self.inner.queues
    }

    /// The counters of `/metrics`.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.queues.core.metrics
    }

    /// Events handed to the handlers and not yet handled (`queues/admission.rs`).
    pub(crate) fn events_in_flight(&self) -> usize {
        self.inner.queues.core.admission.in_flight()
    }

    /// Sets a gauge of the plugin's own, served at `/metrics` beside the framework's, labelled
    /// with the appservice like them (and with `labels`). Keep label values to a small, fixed
    /// set (states, kinds), never user input: each value is a series.
    pub fn set_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.metrics().set_gauge(name, help, labels, value);
    }

    /// Whether `user_id` is one of ours: the bot, the sender (inside the user namespace or
    /// not) or in an exclusive user namespace — Synapse's `is_exclusive_user`.
    pub fn is_own_user(&self, user_id: &UserId) -> bool {
        user_id == self.bot_user_id()
            || user_id == self.sender_user_id()
            || self
                .inner
                .registration
                .namespaces
                .matches_exclusive(NamespaceKind::Users, user_id.as_str())
    }

    /// Items received but not yet handled.
    pub async fn inbox_depth(&self) -> Result<i64> {
        self.store().inbox_depth(&self.inner.registration.id).await
    }

    /// Why received transactions are refused, while they are: the inbox journal cannot be
    /// committed to the database (`docs/durability.md`). `/health/ready` answers 503 with it.
    pub fn stalled(&self) -> Option<String> {
        self.store().journal_stalled()
    }

    /// Requests waiting to be sent.
    pub async fn outbox_depth(&self) -> Result<i64> {
        self.store().outbox_depth(&self.inner.registration.id).await
    }

    /// Items received but not yet handled, and the oldest's arrival.
    pub async fn inbox_backlog(&self) -> Result<crate::store::Backlog> {
        self.store()
            .inbox_backlog(&self.inner.registration.id)
            .await
    }

    /// Requests waiting to be sent, and the oldest's creation.
    pub async fn outbox_backlog(&self) -> Result<crate::store::Backlog> {
        self.store()
            .outbox_backlog(&self.inner.registration.id)
            .await
    }

    /// Waits until every received item has been handled and every request sent (or given up).
    pub async fn idle(&self) {
        loop {
            let busy = self.inner.queues.busy();
            if busy == 0
                && self.inbox_depth().await.unwrap_or(1) == 0
                && self.outbox_depth().await.unwrap_or(1) == 0
            {
                return;
            }
            self.inner.queues.changed(Duration::from_millis(50)).await;
        }
    }

    /// Asks the homeserver to ping us (`POST /_matrix/client/v1/appservice/{id}/ping`). Besides
    /// proving the path works both ways, a successful ping makes Synapse retry at once any
    /// transactions it was holding back while we were down.
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#post_matrixclientv1appserviceappserviceidping>
    pub async fn ping_homeserver(&self) -> Result<Duration> {
        let mut request = request_ping::v1::Request::new(self.inner.registration.id.clone());
        request.transaction_id = Some(OwnedTransactionId::from(format!(
            "trestle-start-{}",
            rand::random::<u64>()
        )));
        // As the appservice: the ping proves the registration, and needs no bot registered.
        let response = self.client().send_as_appservice(request).await?;
        Ok(response.duration)
    }

    /// Pings the homeserver from a task (the homeserver can reach us only once we listen),
    /// retrying a few times; the result is logged.
    pub(crate) fn ping_in_background(&self) -> tokio::task::JoinHandle<()> {
        let pinger = self.clone();
        tokio::spawn(async move {
            let id = pinger.inner.registration.id.clone();
            for attempt in 1..=5u32 {
                match pinger.ping_homeserver().await {
                    Ok(rtt) => {
                        tracing::info!(appservice = %id, ?rtt, "homeserver ping succeeded");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(appservice = %id, %error, attempt, "homeserver ping failed");
                        tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                    }
                }
            }
        })
    }

    /// Serves the Application Service API on `listener` until `shutdown` completes, then stops
    /// accepting requests and lets in-flight work finish (see [`Appservice::stop`]).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(appservice = %self.inner.registration.id, %addr, "listening");
        let started = self.start();
        let app = self.clone();
        let served = axum::serve(listener, self.http_router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                app.begin_stopping();
            })
            .await;
        self.stop(started).await;
        served.map_err(Error::from)
    }

    /// Handles one inbox item: built-in behaviour, then the router. `item_key` identifies the
    /// item across re-handling; `take` is the take of its room's lease it is handled under
    /// ([`EventContext::lease_take`]).
    pub(crate) async fn handle(&self, item: Incoming, item_key: &str, take: u64) {
        let started = std::time::Instant::now();
        let item = Arc::new(item);
        // One allocation shared by the send scope and the handlers' context.
        let id = self.inner.registration.id.as_str();
        let mut key = String::with_capacity(id.len() + 1 + item_key.len());
        key.push_str(id);
        key.push('.');
        key.push_str(item_key);
        let key: Arc<str> = Arc::from(key);
        let span = tracing::info_span!(
            "event",
            appservice = %self.inner.registration.id,
            room_id = item.queue_key().map(|r| r.as_str()).unwrap_or_default(),
            event_id = match &*item { Incoming::Timeline(e) => e.event_id.as_str(), _ => "" },
            event_type = item.event_type().unwrap_or_default(),
        );
        let handled = Arc::clone(&item);
        tracing::Instrument::instrument(
            with_send_scope(Arc::clone(&key), self.handle_scoped(item, key, take)),
            span,
        )
        .await;
        self.metrics()
            .handled(handled.event_type(), started.elapsed());
    }

    async fn handle_scoped(&self, item: Arc<Incoming>, key: Arc<str>, take: u64) {
        if let Incoming::Timeline(event) = &*item
            && event.event_type == "m.room.member"
        {
            // Boxed: only membership events take this path, and inline its future made every
            // event's handling future kilobytes larger (see `Gate::admits`).
            Box::pin(self.track_membership(event)).await;
        }
        let own = match &*item {
            Incoming::Timeline(e) => self.is_own_user(&e.sender),
            _ => false,
        };
        if own && !self.inner.router.options.own_events {
            return;
        }
        // End-to-end encryption (see encryption.rs): a no-op unless installed.
        let (item, sender_trust) = self.offer_to_encryption(item).await;
        if self.taken_by_encryption(&item).await {
            return;
        }
        let ctx = EventContext::new(
            self.clone(),
            item,
            self.inner.command_prefix.clone(),
            key,
            sender_trust,
            take,
        );
        self.inner.router.dispatch(ctx).await;
    }
}
