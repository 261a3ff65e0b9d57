//! Handlers a bridge adds of its own for Matrix event types the kit does not bridge (the XMPP
//! bridge's topics, power levels and presence): registered on the [`Bridge`](super::Bridge)
//! rather than on its router, so that they run where the kit's own handling does. Where
//! processes share the store, that is the process that holds the bridge's connections: the
//! event is handed to it with the others of its room (module `handoff`) and these handlers run
//! there, in the room's order; a handler on the router would run where the event arrives, whose
//! sends to the network go nowhere.

use std::{future::Future, pin::Pin, sync::Arc};

use trestle::{router::RawEvent, sync::MutexExt, transaction::Incoming};

use super::{BridgeError, BridgeHandle, Network, NetworkResult};

/// What a handler of the bridge's own returns.
type Handled = Pin<Box<dyn Future<Output = NetworkResult<()>> + Send>>;

/// A handler of the bridge's own, for one event type.
pub(crate) struct OwnHandler<N: Network> {
    event_type: String,
    run: Arc<dyn Fn(BridgeHandle<N>, RawEvent) -> Handled + Send + Sync>,
}

impl<N: Network> OwnHandler<N> {
    pub(crate) fn new<F, Fut>(event_type: String, handler: F) -> Self
    where
        F: Fn(BridgeHandle<N>, RawEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = NetworkResult<()>> + Send + 'static,
    {
        OwnHandler {
            event_type,
            run: Arc::new(move |bridge, event| Box::pin(handler(bridge, event))),
        }
    }
}

impl<N: Network> BridgeHandle<N> {
    /// Runs the bridge's own handlers of `incoming`'s type, each whatever the others did, as
    /// the router runs its routes. Returns the first failure; the later ones are logged.
    pub(crate) async fn run_own_handlers(&self, incoming: &Incoming) -> Result<(), BridgeError> {
        let (Some(event_type), Some(json)) = (incoming.event_type(), incoming.json()) else {
            return Ok(());
        };
        // Cloned out, so that no lock is held across a handler.
        let runs: Vec<_> = self
            .shared
            .own_handlers
            .lock_unpoisoned()
            .iter()
            .filter(|own| own.event_type == event_type)
            .map(|own| own.run.clone())
            .collect();
        let mut first = Ok(());
        for run in runs {
            let event = RawEvent {
                event_type: event_type.to_owned(),
                json: json.clone(),
            };
            match run(self.clone(), event).await {
                Ok(()) | Err(BridgeError::Unsupported(_)) => {}
                Err(error) if first.is_ok() => first = Err(error),
                Err(error) => {
                    tracing::error!(%error, event_type, "a handler of the bridge's own failed");
                }
            }
        }
        first
    }
}
