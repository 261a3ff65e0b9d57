//! A handle on an appservice that does not keep it alive.

use std::sync::{Arc, Weak};

use super::{AppInner, Appservice};

/// An [`Appservice`] that does not keep it alive, for state the appservice's own router holds
/// (a bridge keeps one): the router is part of the appservice, so a strong handle there would
/// be a cycle, and the appservice would never be dropped.
#[derive(Clone, Debug)]
pub struct WeakAppservice(Weak<AppInner>);

impl Appservice {
    /// A handle on this appservice that does not keep it alive.
    pub fn downgrade(&self) -> WeakAppservice {
        WeakAppservice(Arc::downgrade(&self.inner))
    }
}

impl WeakAppservice {
    /// The appservice, while it still exists.
    pub fn upgrade(&self) -> Option<Appservice> {
        self.0.upgrade().map(|inner| Appservice { inner })
    }
}
