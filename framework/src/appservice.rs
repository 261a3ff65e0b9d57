//! The appservice: registration, homeserver client, store and router, tied together and served.

use std::{collections::HashSet, future::Future, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use ruma::{
    OwnedRoomAliasId, OwnedServerName, OwnedTransactionId, OwnedUserId, UserId,
    api::{AppserviceUserIdentity, client::appservice::request_ping},
};
use serde::Deserialize;
use tokio::net::TcpListener;
use trestle_registration::{NamespaceKind, Registration};

use crate::{
    Error, Intent, Result, Router, Store, client::HomeserverClient, dispatch::Dispatcher,
    router::EventContext, thirdparty::ThirdPartyLookup, transaction::Incoming,
};

/// Answers the homeserver's question "does this user exist?" (`GET /users/{userId}`): return
/// `true` to have the ghost registered and the homeserver told yes.
pub type UserQuery =
    Arc<dyn Fn(Appservice, OwnedUserId) -> BoxFuture<'static, Result<bool>> + Send + Sync>;
/// Answers "does this alias exist?" (`GET /rooms/{roomAlias}`): create the room with the
/// alias, then return `true`.
pub type AliasQuery =
    Arc<dyn Fn(Appservice, OwnedRoomAliasId) -> BoxFuture<'static, Result<bool>> + Send + Sync>;

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

pub(crate) struct AppInner {
    pub(crate) registration: Registration,
    pub(crate) server_name: OwnedServerName,
    pub(crate) bot_user_id: OwnedUserId,
    pub(crate) client: HomeserverClient,
    pub(crate) store: Store,
    pub(crate) router: Router,
    pub(crate) command_prefix: Arc<str>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) registered: tokio::sync::Mutex<HashSet<OwnedUserId>>,
    pub(crate) user_query: Option<UserQuery>,
    pub(crate) alias_query: Option<AliasQuery>,
    pub(crate) thirdparty: Option<Arc<dyn ThirdPartyLookup>>,
    pub(crate) body_limit: usize,
}

/// Builds an [`Appservice`].
#[must_use]
pub struct AppserviceBuilder {
    registration: Registration,
    homeserver_url: String,
    server_name: String,
    router: Router,
    store: Option<Store>,
    user_query: Option<UserQuery>,
    alias_query: Option<AliasQuery>,
    thirdparty: Option<Arc<dyn ThirdPartyLookup>>,
    body_limit: usize,
}

impl AppserviceBuilder {
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

    /// Answers user queries from the homeserver.
    pub fn on_user_query<F, Fut>(mut self, query: F) -> Self
    where
        F: Fn(Appservice, OwnedUserId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool>> + Send + 'static,
    {
        self.user_query = Some(Arc::new(move |app, user| Box::pin(query(app, user))));
        self
    }

    /// Answers room alias queries from the homeserver.
    pub fn on_alias_query<F, Fut>(mut self, query: F) -> Self
    where
        F: Fn(Appservice, OwnedRoomAliasId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool>> + Send + 'static,
    {
        self.alias_query = Some(Arc::new(move |app, alias| Box::pin(query(app, alias))));
        self
    }

    /// Answers the `/thirdparty` endpoints.
    pub fn thirdparty(mut self, lookup: impl ThirdPartyLookup) -> Self {
        self.thirdparty = Some(Arc::new(lookup));
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
        self.registration.validate_bot(&self.server_name, &origin)?;
        let server_name = OwnedServerName::try_from(self.server_name.as_str())?;
        let bot_user_id = UserId::parse(self.registration.bot_user_id(&self.server_name))?;
        let client = HomeserverClient::new(&self.homeserver_url, &self.registration.as_token)?;
        let store = match self.store {
            Some(store) => store,
            None => Store::in_memory().await?,
        };
        let command_prefix = Arc::from(self.router.options.command_prefix.as_str());
        Ok(Appservice {
            inner: Arc::new(AppInner {
                registration: self.registration,
                server_name,
                bot_user_id,
                client,
                store,
                router: self.router,
                command_prefix,
                dispatcher: Dispatcher::new(),
                registered: tokio::sync::Mutex::new(HashSet::new()),
                user_query: self.user_query,
                alias_query: self.alias_query,
                thirdparty: self.thirdparty,
                body_limit: self.body_limit,
            }),
        })
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
            user_query: None,
            alias_query: None,
            thirdparty: None,
            body_limit: 32 * 1024 * 1024,
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

    /// The bot's user id.
    pub fn bot_user_id(&self) -> &OwnedUserId {
        &self.inner.bot_user_id
    }

    /// The homeserver client.
    pub fn client(&self) -> &HomeserverClient {
        &self.inner.client
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Acts as the bot.
    pub fn bot(&self) -> Intent {
        Intent::new(self.clone(), self.inner.bot_user_id.clone())
    }

    /// Acts as any user of the appservice.
    pub fn intent(&self, user_id: &UserId) -> Intent {
        Intent::new(self.clone(), user_id.to_owned())
    }

    /// Acts as the ghost `@<localpart>:<server name>`.
    pub fn ghost(&self, localpart: &str) -> Result<Intent> {
        let user_id = UserId::parse(format!("@{localpart}:{}", self.inner.server_name))?;
        Ok(self.intent(&user_id))
    }

    /// Whether `user_id` is one of ours: the bot or in an exclusive user namespace.
    pub fn is_own_user(&self, user_id: &UserId) -> bool {
        *user_id == self.inner.bot_user_id
            || self
                .inner
                .registration
                .namespaces
                .matches_exclusive(NamespaceKind::Users, user_id.as_str())
    }

    /// The axum router serving the Application Service API, for embedding or testing with
    /// `tower::ServiceExt::oneshot`.
    pub fn http_router(&self) -> axum::Router {
        crate::http::router(self.clone())
    }

    /// Items received but not yet handled.
    pub fn pending(&self) -> usize {
        self.inner.dispatcher.pending()
    }

    /// Waits until every received item has been handled.
    pub async fn idle(&self) {
        self.inner.dispatcher.idle().await
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
        let response = self
            .client()
            .send(request, AppserviceUserIdentity::default())
            .await?;
        Ok(response.duration)
    }

    /// Serves the Application Service API on `listener` until `shutdown` completes, then stops
    /// accepting requests and waits (up to 30 s) for queued events to be handled.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(appservice = %self.inner.registration.id, %addr, "listening");
        let pinger = self.clone();
        let ping = tokio::spawn(async move {
            // The homeserver reaches us only once we listen, so ping from a task.
            for attempt in 1..=5u32 {
                match pinger.ping_homeserver().await {
                    Ok(rtt) => {
                        tracing::info!(?rtt, "homeserver ping succeeded");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, attempt, "homeserver ping failed");
                        tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                    }
                }
            }
        });
        let served = axum::serve(listener, self.http_router())
            .with_graceful_shutdown(shutdown)
            .await;
        ping.abort();
        if tokio::time::timeout(Duration::from_secs(30), self.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.pending(),
                "stopping with events still being handled"
            );
        }
        served.map_err(Error::from)
    }

    /// Queues the items of one transaction.
    pub(crate) fn enqueue(&self, items: Vec<Incoming>) {
        for item in items {
            let app = self.clone();
            self.inner.dispatcher.push(item, move |item| {
                let app = app.clone();
                async move { app.handle(item).await }
            });
        }
    }

    async fn handle(&self, item: Arc<Incoming>) {
        if let Incoming::Timeline(event) = &*item
            && event.event_type == "m.room.member"
        {
            self.track_membership(event).await;
        }
        let own = match &*item {
            Incoming::Timeline(e) => self.is_own_user(&e.sender),
            _ => false,
        };
        if own && !self.inner.router.options.own_events {
            return;
        }
        let ctx = EventContext::new(self.clone(), item, self.inner.command_prefix.clone());
        self.inner.router.dispatch(ctx).await;
    }

    async fn track_membership(&self, event: &crate::transaction::TimelineEvent) {
        #[derive(Deserialize)]
        struct Member {
            content: MemberContent,
        }
        #[derive(Deserialize)]
        struct MemberContent {
            membership: String,
        }
        let Some(state_key) = &event.state_key else {
            return;
        };
        let Ok(user_id) = UserId::parse(state_key.as_str()) else {
            return;
        };
        if !self.is_own_user(&user_id) {
            return;
        }
        let Ok(member) = serde_json::from_str::<Member>(event.json.get()) else {
            return;
        };
        let membership = member.content.membership;
        if let Err(error) = self
            .store()
            .set_membership(event.room_id.as_str(), user_id.as_str(), &membership)
            .await
        {
            tracing::error!(%error, "could not record a membership");
        }
        if membership == "invite"
            && user_id == self.inner.bot_user_id
            && self.inner.router.options.accept_invites
        {
            match self.bot().join(&event.room_id).await {
                Ok(()) => tracing::info!(room_id = %event.room_id, "joined on invite"),
                Err(error) => {
                    tracing::warn!(room_id = %event.room_id, %error, "could not join on invite")
                }
            }
        }
    }
}
