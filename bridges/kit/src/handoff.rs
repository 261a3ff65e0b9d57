//! Where processes share a PostgreSQL store (docs/scaling.md): a bridge's logins, and the
//! network's own connections, live in one process, the holder of the kit's service lease;
//! the Matrix events that reach the network are sent from there.
//!
//! A process that does not hold the lease (a `matrix`-role one, or an `all` one standing by)
//! handles a portal's or a management room's event by handing it over: a row in the store's
//! handoff queue, committed before the handler returns, so the inbox marks the event done
//! only once it is safe. The holder takes the rows in order, handles each as if it had
//! received it, and deletes it. The holder handles what it receives itself, unless events of
//! the same room still wait in the queue, which it must not pass: it knows which it has read
//! and not finished, and asks the store only while it may not have read them all (module
//! `view`), so not for each event. When the holder stops, the
//! next one takes what is left; an event it had sent and mapped but not yet deleted when it
//! died is found in the message map and not sent again (one it died while sending, before the
//! network confirmed it, may be: docs/scaling.md).
//!
//! A login made where the bridge is not held (through the provisioning API of a `matrix`-role
//! process) is handed over the same way: stored, connecting, then a request in the queue that
//! the holder connects it; the process that took the request waits (a bounded time) for the
//! login's state in the store, to answer whether it worked. It looks again when the holder
//! rings that it answered (a `NOTIFY` in a queue of answers, which holds no item), and every
//! second in case a notice was lost.
//!
//! On SQLite one process does everything, nothing is handed over, and none of this runs.

use std::{
    future::Future,
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use trestle::{
    Appservice,
    router::EventContext,
    store::{Handoff, Wakes},
    sync::MutexExt,
    transaction::Incoming,
};

use super::{
    BridgeError, BridgeHandle, ConnectionState, Login, Network, NetworkResult,
    matrix::handle_incoming, store::LoginRow,
};

mod view;

use view::Decision;
pub(crate) use view::View;

/// The handoff queue of the kit's events, in each appservice's store.
const QUEUE: &str = "bridge";

/// How many handed events the holder reads at a time.
const BATCH: i64 = 100;

/// The kind of a handed request to connect a login (the others are Matrix events').
const CONNECT_LOGIN: &str = "trestle.bridge.connect_login";

/// The queue in which the holder rings when it connected a handed login (or could not): it
/// holds no item, only wakes the process waiting for the answer ([`Handoff::ring`]).
const LOGIN_ANSWERS: &str = "bridge-login-answers";

/// A handed request to connect a login, stored already.
#[derive(Serialize, Deserialize)]
struct ConnectLogin {
    user: String,
    login_id: String,
    automatic: bool,
}

impl<N: Network> BridgeHandle<N> {
    /// The kit's handoff queue, where processes share the store.
    pub(crate) fn handoff_queue(app: &Appservice) -> Option<Handoff> {
        app.store().handoff(&app.registration().id, QUEUE)
    }

    /// Where the holder rings when it answered a handed login.
    fn login_answers(app: &Appservice) -> Option<Handoff> {
        app.store().handoff(&app.registration().id, LOGIN_ANSWERS)
    }

    /// Hands the event of `ctx` to the holder of the bridge's logins, unless this process is
    /// that holder and nothing of its room waits. Returns whether it was handed over.
    pub(crate) async fn hand_off(
        &self,
        app: &Appservice,
        ctx: &EventContext,
    ) -> NetworkResult<bool> {
        let incoming = ctx.incoming();
        let Some(queue) = Self::handoff_queue(app) else {
            return Ok(false);
        };
        let Some(json) = incoming.json() else {
            return Ok(false);
        };
        let order_key = incoming
            .queue_key()
            .map(ToString::to_string)
            .unwrap_or_default();
        // A holder that stops hands over too: its connections are closing. One that does not
        // handles the event itself unless items of its room wait, which it must not pass: it
        // knows which it has read, and asks the store only when it may not have read them all
        // (module `view`).
        if self.shared.holding.load(Ordering::SeqCst) && !app.is_stopping() {
            let decision = self
                .shared
                .handed
                .lock_unpoisoned()
                .decide(&order_key, ctx.lease_take());
            let here = match decision {
                Decision::Here => true,
                Decision::Hand => false,
                Decision::Ask => !queue.waiting(&order_key).await?,
            };
            if here {
                return Ok(false);
            }
        }
        queue
            .push(
                &order_key,
                ctx.idempotency_key(),
                incoming.kind(),
                json.get(),
            )
            .await?;
        // Not passed by the room's next event, should this process be the holder.
        self.shared.handed.lock_unpoisoned().pushed();
        tracing::debug!(
            order_key,
            event_type = incoming.event_type().unwrap_or_default(),
            "handed to the process that holds the logins"
        );
        Ok(true)
    }

    /// Held while an event is handled here, through the connections: the kit's service lets
    /// them close only once every event in hand is done (or after a short wait).
    pub(crate) async fn in_hand(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.shared.in_hand.clone().read_owned().await
    }

    /// Waits (a little) until no event is in hand: none starts after the appservice began to
    /// stop, since a stopping holder hands them over.
    pub(crate) async fn none_in_hand(&self) {
        let _ = tokio::time::timeout(super::login::STOP_STEP, self.shared.in_hand.write()).await;
    }

    /// The holder's side: handles the handed events in order until the appservice stops (or
    /// the future is dropped, the lease lost). An event that fails is logged and not tried
    /// again, as the inbox does with a handler's error.
    pub(crate) async fn take_handed(&self, app: &Appservice) {
        let Some(queue) = Self::handoff_queue(app) else {
            return;
        };
        let _viewing = Viewing::start(self, queue.wakes());
        loop {
            // Subscribed before looking, so that a push in between wakes us.
            let mut wakes = queue.wakes();
            self.shared.handed.lock_unpoisoned().reading();
            let (items, complete) = match queue.oldest(BATCH).await {
                Ok(items) => {
                    let complete = items.len() < BATCH as usize;
                    (items, complete)
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read the handed events");
                    (Vec::new(), false)
                }
            };
            self.shared.handed.lock_unpoisoned().read(&items, complete);
            if let Ok(depth) = queue.depth().await {
                app.set_gauge(
                    "trestle_bridge_handoff_depth",
                    "Matrix events handed to this process, which holds the bridge's connections, and not yet sent",
                    &[],
                    depth as f64,
                );
            }
            let busy = !items.is_empty();
            for item in items {
                // Stopping: the item in hand was finished, the rest is the next holder's.
                if app.is_stopping() {
                    return;
                }
                self.handle_handed(app, &item.kind, &item.payload).await;
                if let Err(error) = queue.done(item.seq).await {
                    // Left in the queue: done again, which the message map makes harmless
                    // for messages.
                    tracing::warn!(%error, seq = item.seq, "could not forget a handed event");
                }
                self.shared
                    .handed
                    .lock_unpoisoned()
                    .finished(&item.order_key);
            }
            if busy {
                continue;
            }
            tokio::select! {
                () = wakes.next() => {}
                () = app.stopping() => return,
            }
        }
    }

    /// Where this process does not hold the bridge: stores `login` (connecting), hands the
    /// holder the request to connect it, and waits until its state says whether it did (up to
    /// [`BridgeConfig::connection_wait`](super::BridgeConfig::connection_wait)). A login the
    /// holder could not connect is gone from the store: an error, as where it is connected
    /// here. One not connected in time stays, and is connected when the holder gets to it (or
    /// by the next holder).
    pub(crate) async fn login_in_holder(
        &self,
        queue: &Handoff,
        login: Login<N>,
        quiet: bool,
        row: LoginRow,
    ) -> NetworkResult<Login<N>> {
        // Subscribed before the request goes, so that an answer rung in between is not missed.
        // There is a queue of answers wherever there is `queue`: the store is shared.
        let mut answers = Self::login_answers(&self.app()?)
            .ok_or_else(|| {
                BridgeError::Trestle(trestle::Error::Other(
                    "a login handed over where the store is not shared".into(),
                ))
            })?
            .wakes();
        self.store()?.upsert_login(&row).await?;
        let request = ConnectLogin {
            user: login.user.to_string(),
            login_id: login.id.clone(),
            automatic: quiet,
        };
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        queue
            .push(
                &format!("login {}", login.user),
                &format!("login {} {} {sent}", login.user, login.id),
                CONNECT_LOGIN,
                &serde_json::to_string(&request)?,
            )
            .await?;
        tracing::debug!(user = %login.user, login_id = login.id, "login handed to the process that holds the logins");
        let wait = Duration::from_secs(self.config().connection_wait.max(1));
        let answer = until_answered(&mut answers, Instant::now() + wait, || async {
            Ok(match self.stored_login(&login.user, &login.id).await? {
                None => Some(Err(BridgeError::Remote(format!(
                    "{}: the login could not connect",
                    login.id
                )))),
                // Connected, then whatever the network said since: answered as where the
                // login is connected here.
                Some(stored) if stored.state != ConnectionState::Connecting => Some(Ok(stored)),
                Some(_) => None,
            })
        })
        .await?;
        answer.unwrap_or_else(|| {
            Err(BridgeError::Retriable(format!(
                "{}: the process that holds the bridge did not connect the login within {} s; \
                 it is still to",
                login.id,
                wait.as_secs()
            )))
        })
    }

    /// The holder's side of [`BridgeHandle::login_in_holder`].
    async fn connect_handed_login(&self, payload: &str) {
        let request: ConnectLogin = match serde_json::from_str(payload) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, "a handed login does not read back; dropped");
                return;
            }
        };
        let user = match ruma::UserId::parse(&request.user) {
            Ok(user) => user,
            Err(error) => {
                tracing::error!(%error, user = request.user, "a handed login's user does not parse; dropped");
                return;
            }
        };
        // Gone: logged out meanwhile.
        let login = match self.stored_login(&user, &request.login_id).await {
            Ok(Some(login)) => login,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "could not read a handed login");
                return;
            }
        };
        // Connected already: this holder found it stored when it took over.
        if self.connection(&user, &request.login_id).is_some() {
            return;
        }
        let _in_hand = self.in_hand().await;
        if let Err(error) = self.start_login(login, request.automatic).await {
            tracing::info!(%error, %user, login_id = request.login_id, "a handed login did not connect");
        }
        // Its state is stored (or it is gone): the process that waits for it looks now.
        if let Some(answers) = self.app().ok().as_ref().and_then(Self::login_answers) {
            answers.ring().await;
        }
    }

    async fn handle_handed(&self, app: &Appservice, kind: &str, payload: &str) {
        if kind == CONNECT_LOGIN {
            return self.connect_handed_login(payload).await;
        }
        let incoming = match Incoming::from_stored(kind, payload) {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::error!(%error, kind, "a handed event does not read back; dropped");
                return;
            }
        };
        if let Incoming::Timeline(event) = &incoming {
            // Sent by a holder that died before it could forget it.
            match self.store() {
                Ok(store) => match store.remote_for_event(event.event_id.as_str()).await {
                    Ok(Some(_)) => {
                        tracing::info!(event_id = %event.event_id, "a handed event was sent already");
                        return;
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "could not look up a handed event"),
                },
                Err(error) => tracing::warn!(%error, "could not look up a handed event"),
            }
        }
        let _in_hand = self.in_hand().await;
        if let Err(error) = handle_incoming(self, app, &incoming).await {
            tracing::warn!(%error, kind, "a handed event could not be bridged");
        }
    }
}

/// The holder's view of the queue ([`View`]) while it takes the queue: let go when it stops,
/// or when its future is dropped (a lost lease).
struct Viewing<'a, N: Network>(&'a BridgeHandle<N>);

impl<'a, N: Network> Viewing<'a, N> {
    fn start(bridge: &'a BridgeHandle<N>, wakes: Wakes) -> Self {
        bridge.shared.handed.lock_unpoisoned().start(wakes);
        Viewing(bridge)
    }
}

impl<N: Network> Drop for Viewing<'_, N> {
    fn drop(&mut self) {
        self.0.shared.handed.lock_unpoisoned().stop();
    }
}

/// Looks with `look` until it has an answer, again at each ring of `wakes`, and in any case
/// every second ([`Wakes::next`]: a notice lost is only a later look), until `deadline`;
/// `None` when it is past with no answer.
async fn until_answered<T, F, Fut>(
    wakes: &mut Wakes,
    deadline: Instant,
    mut look: F,
) -> NetworkResult<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = NetworkResult<Option<T>>>,
{
    loop {
        if let Some(answer) = look().await? {
            return Ok(Some(answer));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let _ = tokio::time::timeout(left, wakes.next()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is the test failing.

    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use trestle::store::Store;

    use super::*;

    /// Waits for `answered` as a process waits for a handed login's state, while "the holder"
    /// (another store on the database, as another process) answers 300 ms in, ringing or not:
    /// how long after the answer the wait ended.
    async fn wait_ends_after_answer(url: &str, ring: bool) -> Duration {
        let here = Store::connect(url).await.unwrap();
        let holder = Store::connect(url).await.unwrap();
        let mut wakes = here.handoff("as", LOGIN_ANSWERS).unwrap().wakes();
        // The listener's first word (it may have missed notices), so that it wakes nothing
        // below.
        wakes.next().await;
        let answered = Arc::new(AtomicBool::new(false));
        let answer = answered.clone();
        let answering = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            answer.store(true, Ordering::SeqCst);
            let at = Instant::now();
            if ring {
                holder.handoff("as", LOGIN_ANSWERS).unwrap().ring().await;
            }
            at
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = until_answered(&mut wakes, deadline, || async {
            Ok(answered.load(Ordering::SeqCst).then_some(()))
        })
        .await
        .unwrap();
        let ended = Instant::now();
        assert_eq!(answer, Some(()));
        ended - answering.await.unwrap()
    }

    #[tokio::test]
    async fn a_wait_for_the_holders_answer_ends_at_its_ring_not_at_a_look() {
        let url = trestle_postgres_harness::fresh_database().await;
        let rung = wait_ends_after_answer(&url, true).await;
        assert!(rung < Duration::from_millis(250), "{rung:?} after the ring");
        // Unrung, only the safety look (a second after the last) finds it.
        let unrung = wait_ends_after_answer(&url, false).await;
        assert!(unrung >= Duration::from_millis(500), "{unrung:?} unrung");
    }
}
