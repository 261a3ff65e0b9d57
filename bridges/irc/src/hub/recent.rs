//! Messages remembered for reply quotes and edit corrections: who said what, by message id.

use std::{
    collections::{HashMap, VecDeque},
    sync::atomic::Ordering,
};

use super::{Hub, lock};

/// How many sent or received messages are remembered for reply quotes and edit corrections.
const REMEMBERED: usize = 2000;

/// The last [`REMEMBERED`] messages: id → (nick, text), oldest first in `order`.
#[derive(Default)]
pub(super) struct Recent {
    order: VecDeque<String>,
    texts: HashMap<String, (String, String)>,
}

impl Hub {
    /// A new message id, and remembers who said what for later quotes and corrections.
    pub(crate) fn remember(&self, nick: &str, text: &str) -> String {
        let id = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut recent = lock(&self.recent);
        recent
            .texts
            .insert(id.clone(), (nick.to_owned(), text.to_owned()));
        recent.order.push_back(id.clone());
        if recent.order.len() > REMEMBERED
            && let Some(old) = recent.order.pop_front()
        {
            recent.texts.remove(&old);
        }
        id
    }

    /// Who said a remembered message, and what.
    pub(crate) fn recalled(&self, id: &str) -> Option<(String, String)> {
        lock(&self.recent).texts.get(id).cloned()
    }
}
