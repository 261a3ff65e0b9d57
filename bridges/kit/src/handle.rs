//! The handle a network and a bridge's code act through.

use std::{ops::Deref, sync::Arc};
use trestle::sync::MutexExt;

use ruma::{OwnedUserId, UserId};
use trestle::{Appservice, Intent, WeakAppservice};

use super::{
    BridgeConfig, BridgeError, ConnectionState, Network, NetworkResult, Shared, store::BridgeStore,
};

/// The kit, as the network and the bridge's own code see it: report what happens remotely
/// (`remote_*` methods), find portals, ghosts and logins. Cheap to clone; keep one in each
/// connection task.
pub struct BridgeHandle<N: Network> {
    pub(crate) shared: Arc<Shared<N>>,
}

impl<N: Network> Clone for BridgeHandle<N> {
    fn clone(&self) -> Self {
        BridgeHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<N: Network> std::fmt::Debug for BridgeHandle<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("protocol", &self.shared.network.protocol().id)
            .finish_non_exhaustive()
    }
}

impl<N: Network> BridgeHandle<N> {
    /// The network.
    pub fn network(&self) -> &N {
        &self.shared.network
    }

    /// The kit's settings.
    pub fn config(&self) -> &BridgeConfig {
        &self.shared.config
    }

    /// The appservice, once it runs (it is known from its first call into the bridge: the
    /// start of its services, an event or a query).
    pub fn app(&self) -> NetworkResult<Appservice> {
        self.shared
            .app
            .get()
            .and_then(WeakAppservice::upgrade)
            .ok_or_else(|| {
                BridgeError::Trestle(trestle::Error::Other("the bridge is not running".into()))
            })
    }

    /// Tells the kit its appservice and brings the kit's tables up to date (once; later calls
    /// are cheap), and starts catching up every portal, since the bridge was away (module
    /// `history`). The kit does this itself on its first event, query, provisioning request
    /// or service start; a bridge's own service, which may start first, calls it before using
    /// the handle.
    pub async fn attach(&self, app: &Appservice) -> NetworkResult<()> {
        let _ = self.shared.app.set(app.downgrade());
        self.shared
            .migrated
            .get_or_try_init(|| async {
                self.store_of(app).migrate().await?;
                // Here rather than in the kit's service: whichever starts first (a login
                // connected by a command may), the gates are closed before its first live
                // message. Where processes share the store, the one that takes the kit's
                // service over catches up instead: only it hears the network.
                if Self::handoff_queue(app).is_some() {
                    return Ok(());
                }
                self.start_catch_up().await
            })
            .await?;
        Ok(())
    }

    /// Whether processes share `app`'s store (PostgreSQL, docs/scaling.md): then the logins'
    /// connections and the network's own live in the one process that holds the kit's
    /// service ([`BridgeHandle::holds_connections`]); alone on its store, a process holds
    /// everything.
    pub fn shares_store(&self, app: &Appservice) -> bool {
        Self::handoff_queue(app).is_some()
    }

    /// Whether this process holds the kit's service now, so the logins' connections and the
    /// network's own ([`Network::serve`](super::Network::serve)): true from the start of the
    /// service, before the stored logins connect, until it ends.
    pub fn holds_connections(&self) -> bool {
        self.shared
            .holding
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes when the network's own connections ([`Network::serve`]) are to close: once
    /// the appservice stops and the event in hand was sent through them. Use it rather than
    /// [`Appservice::stopping`] in `serve`.
    pub async fn serve_stopping(&self) {
        let mut stop = self.shared.serve_stop.subscribe();
        // An error means the kit is gone, which is a stop too.
        let _ = stop.wait_for(|stop| *stop).await;
    }

    pub(crate) fn store_of(&self, app: &Appservice) -> BridgeStore {
        BridgeStore {
            store: app.store().clone(),
            appservice: app.registration().id.clone(),
        }
    }

    pub(crate) fn store(&self) -> NetworkResult<BridgeStore> {
        Ok(self.store_of(&self.app()?))
    }

    /// The ghost of a remote user, ready to act.
    pub fn ghost(&self, user: &N::UserId) -> NetworkResult<Intent> {
        Ok(self
            .app()?
            .ghost(&self.shared.network.ghost_localpart(user))?)
    }

    /// The Matrix user id of a remote user's ghost.
    pub fn ghost_user_id(&self, user: &N::UserId) -> NetworkResult<OwnedUserId> {
        Ok(self.ghost(user)?.user_id().to_owned())
    }

    /// The live connection of a login, if it is connected.
    pub fn connection(&self, user: &UserId, login_id: &str) -> Option<Arc<N::Connection>> {
        let connections = self.shared.connections.lock_unpoisoned();
        connections
            .iter()
            .find(|c| c.user == *user && c.login_id == login_id)
            .map(|c| c.connection.clone())
    }

    /// A handle for one login, as [`Network::connect`] gets it.
    pub fn login_handle(&self, user: &UserId, login_id: &str) -> LoginHandle<N> {
        LoginHandle {
            bridge: self.clone(),
            user: user.to_owned(),
            login_id: login_id.to_owned(),
        }
    }
}

/// A [`BridgeHandle`] that knows which login it belongs to, given to [`Network::connect`]:
/// report the connection's state with [`LoginHandle::set_state`], and everything else through
/// the bridge handle it dereferences to.
pub struct LoginHandle<N: Network> {
    bridge: BridgeHandle<N>,
    user: OwnedUserId,
    login_id: String,
}

impl<N: Network> Clone for LoginHandle<N> {
    fn clone(&self) -> Self {
        LoginHandle {
            bridge: self.bridge.clone(),
            user: self.user.clone(),
            login_id: self.login_id.clone(),
        }
    }
}

impl<N: Network> std::fmt::Debug for LoginHandle<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginHandle")
            .field("user", &self.user)
            .field("login_id", &self.login_id)
            .finish_non_exhaustive()
    }
}

impl<N: Network> Deref for LoginHandle<N> {
    type Target = BridgeHandle<N>;

    fn deref(&self) -> &BridgeHandle<N> {
        &self.bridge
    }
}

impl<N: Network> LoginHandle<N> {
    /// The Matrix user the login belongs to.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The login's id among the user's logins.
    pub fn login_id(&self) -> &str {
        &self.login_id
    }

    /// Records the connection's state. When it changes, the user is told with a notice in
    /// their management room ("connection lost: …", "connected again").
    pub async fn set_state(&self, state: ConnectionState) -> NetworkResult<()> {
        self.bridge
            .set_login_state(&self.user, &self.login_id, state)
            .await
    }
}
