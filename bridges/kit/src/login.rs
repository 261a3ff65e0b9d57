//! Logins (puppets): stored, connected on start, reconnected with back-off, their state told
//! to their user in the management room.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};
use trestle::sync::MutexExt;

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    api::{AppserviceUserIdentity, client::room::create_room},
    events::room::message::RoomMessageEventContent,
};
use trestle::Appservice;

use super::{
    BridgeError, BridgeHandle, ConnectionState, LiveConnection, Login, LoginRequest, Network,
    NetworkResult, store::LoginRow,
};

const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How long each step of the kit's stop may take (the handed event in hand, the network's own
/// connections' goodbyes): both within the framework's grace for services.
pub(crate) const STOP_STEP: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

pub(crate) fn state_from_row(state: &str, reason: Option<String>) -> ConnectionState {
    let reason = reason.unwrap_or_default();
    match state {
        "CONNECTED" => ConnectionState::Connected,
        "TRANSIENT_DISCONNECT" => ConnectionState::TransientDisconnect(reason),
        "BAD_CREDENTIALS" => ConnectionState::BadCredentials(reason),
        "LOGGED_OUT" => ConnectionState::LoggedOut,
        _ => ConnectionState::Connecting,
    }
}

/// What the user is told when their connection's state becomes `state`, having been
/// `previous`; nothing for the steps of a normal start.
pub(crate) fn state_notice(login: &str, previous: &str, state: &ConnectionState) -> Option<String> {
    match state {
        ConnectionState::Connected
            if previous == "TRANSIENT_DISCONNECT" || previous == "BAD_CREDENTIALS" =>
        {
            Some(format!("{login}: connected again."))
        }
        ConnectionState::Connected if previous == "CONNECTING" => {
            Some(format!("{login}: connected."))
        }
        ConnectionState::TransientDisconnect(reason) if previous != "TRANSIENT_DISCONNECT" => Some(
            format!("{login}: connection lost ({reason}); reconnecting."),
        ),
        ConnectionState::BadCredentials(reason) => Some(format!(
            "{login}: disconnected ({reason}). Log in again to reconnect."
        )),
        _ => None,
    }
}

impl<N: Network> BridgeHandle<N> {
    fn login_from_row(&self, row: LoginRow) -> NetworkResult<Login<N>> {
        Ok(Login {
            user: UserId::parse(&row.user_id)?,
            remote_user: row.remote_user.parse().map_err(|_| {
                BridgeError::BadRequest(format!(
                    "stored remote user `{}` does not parse",
                    row.remote_user
                ))
            })?,
            id: row.login_id,
            remote_name: row.remote_name,
            data: serde_json::from_str(&row.data)?,
            state: state_from_row(&row.state, row.state_reason),
        })
    }

    /// The logins of a Matrix user, oldest first.
    pub async fn logins(&self, user: &UserId) -> NetworkResult<Vec<Login<N>>> {
        let rows = self.store()?.logins_of(user.as_str()).await?;
        rows.into_iter().map(|r| self.login_from_row(r)).collect()
    }

    /// Logs a Matrix user in: the network checks the request ([`Network::login`]), the login is
    /// stored and connected. A login whose connection fails is not kept. Where processes share
    /// the store and this one does not hold the bridge (docs/scaling.md), the login is
    /// connected by the holder, and this waits for it (up to
    /// [`BridgeConfig::connection_wait`](super::BridgeConfig::connection_wait)).
    pub async fn login(&self, request: LoginRequest) -> NetworkResult<Login<N>> {
        let user = request.user.clone();
        let quiet = request.automatic;
        let new = self.network().login(request).await?;
        let login = Login {
            user: user.clone(),
            id: new.id,
            remote_user: new.remote_user,
            remote_name: new.remote_name,
            data: new.data,
            state: ConnectionState::Connecting,
        };
        if let Ok(app) = self.app()
            && let Some(queue) = Self::handoff_queue(&app)
            && !self.holds_connections()
        {
            let row = row_of(&login)?;
            return self.login_in_holder(&queue, login, quiet, row).await;
        }
        self.start_login(login, quiet).await
    }

    /// Stores and connects a login the network accepted (in the process that holds the
    /// bridge); a login whose connection fails is forgotten.
    pub(crate) async fn start_login(
        &self,
        login: Login<N>,
        quiet: bool,
    ) -> NetworkResult<Login<N>> {
        let user = login.user.clone();
        // A second login with the same id replaces the first.
        self.drop_connection(&user, &login.id).await;
        self.expect_connection(&user, &login.id);
        if quiet {
            self.quiet_set().insert((user.clone(), login.id.clone()));
        }
        self.store()?.upsert_login(&row_of(&login)?).await?;
        self.report_state(
            &user,
            &login.id,
            ConnectionState::Connecting,
            ConnectionState::Connecting,
        )
        .await;
        if let Err(error) = self.connect_login(&login).await {
            self.store()?.delete_login(user.as_str(), &login.id).await?;
            self.forget_state(&user, &login.id);
            self.connections_changed();
            return Err(error);
        }
        let mut logins = self.logins(&user).await?;
        logins.retain(|l| l.id == login.id);
        Ok(logins.pop().unwrap_or(login))
    }

    /// Looks a stored login up, for the holder connecting one another process stored.
    pub(crate) async fn stored_login(
        &self,
        user: &UserId,
        login_id: &str,
    ) -> NetworkResult<Option<Login<N>>> {
        let mut logins = self.logins(user).await?;
        logins.retain(|l| l.id == login_id);
        Ok(logins.pop())
    }

    /// Stores what changed of a login (its remote user and name, its data: a nick the server
    /// changed, a refreshed token); its state and connection stay as they are.
    pub async fn save_login(&self, login: &Login<N>) -> NetworkResult<()> {
        let mut row = row_of(login)?;
        if let Some(stored) = self
            .store()?
            .logins_of(login.user.as_str())
            .await?
            .into_iter()
            .find(|r| r.login_id == login.id)
        {
            row.state = stored.state;
            row.state_reason = stored.state_reason;
        }
        self.store()?.upsert_login(&row).await
    }

    /// Logs a Matrix user's login out: its connection ends and it is forgotten. Returns whether
    /// there was such a login.
    pub async fn logout(&self, user: &UserId, login_id: &str) -> NetworkResult<bool> {
        self.drop_connection(user, login_id).await;
        let deleted = self.store()?.delete_login(user.as_str(), login_id).await;
        // Without the login, their events are relayed again (where relay is on).
        self.expect_connection(user, login_id);
        if matches!(deleted, Ok(true)) {
            self.logged_out(user, login_id).await;
        }
        deleted
    }

    /// Connects one login and keeps its connection; marks it connected unless the network
    /// reported another state meanwhile.
    async fn connect_login(&self, login: &Login<N>) -> NetworkResult<()> {
        self.refuse_login(&login.user).await?;
        let handle = self.login_handle(&login.user, &login.id);
        let connection = self.network().connect(login, handle).await?;
        {
            let mut connections = self.shared.connections.lock_unpoisoned();
            connections.retain(|c| !(c.user == login.user && c.login_id == login.id));
            connections.push(LiveConnection {
                user: login.user.clone(),
                login_id: login.id.clone(),
                connection: Arc::new(connection),
            });
        }
        self.expect_connection(&login.user, &login.id);
        let current = self.logins(&login.user).await?;
        if current
            .iter()
            .any(|l| l.id == login.id && l.state != ConnectionState::Connected)
        {
            self.set_login_state(&login.user, &login.id, ConnectionState::Connected)
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn drop_connection(&self, user: &UserId, login_id: &str) {
        let removed = {
            let mut connections = self.shared.connections.lock_unpoisoned();
            let index = connections
                .iter()
                .position(|c| c.user == *user && c.login_id == login_id);
            index.map(|i| connections.remove(i))
        };
        self.connections_changed();
        if let Some(live) = removed
            && let Err(error) = self.network().disconnect(&live.connection).await
        {
            tracing::warn!(%user, login_id, %error, "disconnecting failed");
        }
    }

    /// Records a login's connection state, and publishes it as its bridge state: served,
    /// pushed, counted, and told to its user in their management room when it changed (a
    /// connection lost only once it stays lost for the debounce; see [`super::BridgeState`]).
    pub async fn set_login_state(
        &self,
        user: &UserId,
        login_id: &str,
        state: ConnectionState,
    ) -> NetworkResult<()> {
        let previous = self
            .store()?
            .set_login_state(user.as_str(), login_id, state.name(), state.reason())
            .await?;
        self.connections_changed();
        let Some((previous, previous_reason)) = previous else {
            return Ok(());
        };
        let recorded = state_from_row(&previous, previous_reason);
        let back = state == ConnectionState::Connected && is_lost(&recorded);
        // Read before the report settles it: a loss not published yet was a blip.
        let was_out = back && self.outage_published(user, login_id);
        self.report_state(user, login_id, state, recorded).await;
        if back {
            self.login_back(user, login_id, was_out).await?;
        }
        Ok(())
    }

    /// A login's connection is back after being lost: the chats it hears are caught up, their
    /// gates closed before this returns (so the network's next messages come after what was
    /// missed). The gap notice, where the network has no history, only after an outage that
    /// outlasted the debounce (`was_out`).
    async fn login_back(&self, user: &UserId, login_id: &str, was_out: bool) -> NetworkResult<()> {
        let Some(login) = self
            .logins(user)
            .await?
            .into_iter()
            .find(|l| l.id == login_id)
        else {
            return Ok(());
        };
        let pending = self.close_login_gates(&login).await?;
        self.spawn_catch_up(pending, Some(login), was_out);
        Ok(())
    }

    fn quiet_set(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<(OwnedUserId, String)>> {
        self.shared.quiet.lock_unpoisoned()
    }

    /// The management room of a user, made now if they have none: a direct chat with the bot.
    pub async fn management_room(&self, user: &UserId) -> NetworkResult<OwnedRoomId> {
        let store = self.store()?;
        if let Some(room) = store.management_room(user.as_str()).await? {
            return Ok(RoomId::parse(room)?);
        }
        let app = self.app()?;
        let mut request = create_room::v3::Request::new();
        request.invite = vec![user.to_owned()];
        request.is_direct = true;
        request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        request.name = Some(format!("{} bridge", self.network().protocol().displayname));
        let room_id = app
            .client()
            .send(request, AppserviceUserIdentity::default())
            .await?
            .room_id;
        store
            .set_management_room(user.as_str(), room_id.as_str())
            .await?;
        Ok(room_id)
    }

    /// Tells a user something with a notice from the bot in their management room.
    pub async fn notify(&self, user: &UserId, text: &str) -> NetworkResult<()> {
        let room = self.management_room(user).await?;
        self.app()?
            .bot()
            .send(&room, &RoomMessageEventContent::notice_plain(text))
            .await?;
        Ok(())
    }

    /// The bridge's service: connects every stored login (retrying those that fail, with
    /// back-off) and runs the network's own connections, then on stop disconnects them. Where
    /// processes share the store it runs in the one that holds its lease, which also takes the
    /// events the others hand over (module `handoff`).
    pub(crate) async fn run(&self, app: Appservice) -> NetworkResult<()> {
        self.attach(&app).await?;
        let _holding = Holding::start(self);
        if Self::handoff_queue(&app).is_some() {
            // Taking over: what the network said while nobody held its connections.
            self.start_catch_up().await?;
        }
        let rows = self.store()?.all_logins().await?;
        let mut tasks = tokio::task::JoinSet::new();
        for row in rows {
            let login = match self.login_from_row(row) {
                Ok(login) => {
                    self.seed_state(&login.user, &login.id, login.state.clone());
                    login
                }
                Err(error) => {
                    tracing::error!(%error, "a stored login does not load; skipped");
                    continue;
                }
            };
            let (bridge, app) = (self.clone(), app.clone());
            tasks.spawn(async move { bridge.connect_with_retry(app, login).await });
        }
        let (network, handed) = (self.clone(), self.clone());
        let (serving, taking) = (app.clone(), app.clone());
        let _ = self.shared.serve_stop.send(false);
        // Sets of their own: dropped with this future (a lost lease), they are cut too.
        let mut own = tokio::task::JoinSet::new();
        own.spawn(async move {
            if let Err(error) = network.network().serve(network.clone(), serving).await {
                tracing::error!(%error, "the network's own connections failed");
            }
        });
        let mut taking_handed = tokio::task::JoinSet::new();
        taking_handed.spawn(async move { handed.take_handed(&taking).await });
        app.stopping().await;
        // The events in hand (handed, or received here) are finished through the connections,
        // which close after them (the next holder would send them again); then the network's
        // own say goodbye.
        let _ = tokio::time::timeout(STOP_STEP, taking_handed.join_next()).await;
        taking_handed.abort_all();
        self.none_in_hand().await;
        let _ = self.shared.serve_stop.send(true);
        let _ = tokio::time::timeout(STOP_STEP, own.join_next()).await;
        own.abort_all();
        tasks.abort_all();
        let live: Vec<_> = {
            let mut connections = self.shared.connections.lock_unpoisoned();
            connections.drain(..).collect()
        };
        self.connections_changed();
        for connection in live {
            if let Err(error) = self.network().disconnect(&connection.connection).await {
                tracing::warn!(user = %connection.user, %error, "disconnecting failed");
            }
        }
        Ok(())
    }

    async fn connect_with_retry(&self, app: Appservice, login: Login<N>) {
        let mut wait = FIRST_RETRY;
        loop {
            match self.connect_login(&login).await {
                Ok(()) => {
                    // For a network that reads history only through a login: the start's
                    // catch-up of its chats could not. Told of a gap by that one, not again.
                    match self.close_login_gates(&login).await {
                        Ok(pending) => self.spawn_catch_up(pending, Some(login), false),
                        Err(error) => tracing::warn!(%error, "could not catch up a login's chats"),
                    }
                    return;
                }
                Err(BridgeError::BadRequest(reason) | BridgeError::Forbidden(reason)) => {
                    let state = ConnectionState::BadCredentials(reason);
                    if let Err(error) = self.set_login_state(&login.user, &login.id, state).await {
                        tracing::warn!(%error, "could not record a login's state");
                    }
                    return;
                }
                Err(error) => {
                    let state = ConnectionState::TransientDisconnect(error.to_string());
                    if let Err(error) = self.set_login_state(&login.user, &login.id, state).await {
                        tracing::warn!(%error, "could not record a login's state");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = app.stopping() => return,
            }
            wait = (wait * 2).min(MAX_RETRY);
        }
    }
}

/// Marks this process as the holder of the bridge's logins while the kit's service runs: set
/// at its start, cleared when it ends however it ends (stopped, or dropped on a lost lease),
/// and the connections of the logins it held are let go then.
struct Holding<'a, N: Network>(&'a BridgeHandle<N>);

impl<'a, N: Network> Holding<'a, N> {
    fn start(bridge: &'a BridgeHandle<N>) -> Self {
        bridge.shared.holding.store(true, Ordering::SeqCst);
        Holding(bridge)
    }
}

impl<N: Network> Drop for Holding<'_, N> {
    fn drop(&mut self) {
        self.0.shared.holding.store(false, Ordering::SeqCst);
        // Left only when the service was dropped unfinished: another process may hold them
        // now, so these must not speak.
        self.0.shared.connections.lock_unpoisoned().clear();
        self.0.connections_changed();
    }
}

/// Whether a recorded state is a connection lost (for a while, or until the user logs in
/// again).
fn is_lost(state: &ConnectionState) -> bool {
    matches!(
        state,
        ConnectionState::TransientDisconnect(_) | ConnectionState::BadCredentials(_)
    )
}

fn row_of<N: Network>(login: &Login<N>) -> NetworkResult<LoginRow> {
    Ok(LoginRow {
        user_id: login.user.to_string(),
        login_id: login.id.clone(),
        remote_user: login.remote_user.to_string(),
        remote_name: login.remote_name.clone(),
        data: serde_json::to_string(&login.data)?,
        state: login.state.name().to_owned(),
        state_reason: login.state.reason().map(str::to_owned),
    })
}
