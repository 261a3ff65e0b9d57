//! Following policy lists from any plugin.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use trestle::sync::RwLockExt;

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomId, UserId,
    api::{
        AppserviceUserIdentity,
        client::{alias::get_alias, state::get_state_events},
    },
};
use serde::Deserialize;
use tokio::sync::{Mutex, watch};

use trestle::{Appservice, Result, Router, router::EventContext, transaction::Incoming};

use crate::{Change, PolicySet, Rule, parse_event};

/// How long a list that could not be read is left alone before the next check tries again.
const RETRY: Duration = Duration::from_secs(60);

/// The policy lists a plugin follows, and the answer to "is this user, room or server banned by
/// them?". The appservice's bot joins each list room (it must be public, or the bot invited),
/// reads its rules on the first check, and keeps them current from the list's events once
/// [`PolicyLists::route`] added its handler to the plugin's router. (Rules the plugin's own
/// users write reach it only if the router sees its own events, [`Router::own_events`].)
///
/// ```no_run
/// use trestle::{Appservice, Router};
/// use trestle_policy::PolicyLists;
///
/// let lists = PolicyLists::new(["#community-bans:example.org"]);
/// let router: Router = lists.route(Router::new());
/// # async fn check(lists: PolicyLists, app: Appservice, user: &trestle::ruma::UserId) -> trestle::Result<()> {
/// if let Some(rule) = lists.check_user(&app, user).await? {
///     println!("refusing {user}: {} ({})", rule.entity, rule.reason);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PolicyLists {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    configured: Vec<String>,
    state: Mutex<Loaded>,
    /// The rules, readable without waiting for a load in progress.
    rules: std::sync::RwLock<PolicySet>,
    /// Resolved list rooms, for routing events without waiting.
    rooms: std::sync::RwLock<Vec<OwnedRoomId>>,
    /// Counts the changes of the rules, for those who act when one comes ([`PolicyLists::changes`]).
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Per configured list: its room once resolved, and whether its rules are read.
    lists: Vec<ListState>,
}

#[derive(Debug, Default, Clone)]
struct ListState {
    room: Option<OwnedRoomId>,
    loaded: bool,
    failed_at: Option<Instant>,
}

impl PolicyLists {
    /// Follows these lists: room IDs or aliases.
    pub fn new<I, S>(lists: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let configured: Vec<String> = lists.into_iter().map(Into::into).collect();
        let states = vec![ListState::default(); configured.len()];
        PolicyLists {
            inner: Arc::new(Inner {
                configured,
                state: Mutex::new(Loaded { lists: states }),
                rules: Default::default(),
                rooms: Default::default(),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// The lists as configured.
    pub fn lists(&self) -> &[String] {
        &self.inner.configured
    }

    /// Adds the handler that keeps the rules current from the list rooms' events.
    pub fn route<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let lists = self.clone();
        router.on(move |ctx: EventContext| {
            let lists = lists.clone();
            async move { lists.observe(&ctx).await }
        })
    }

    async fn observe(&self, ctx: &EventContext) {
        let Incoming::Timeline(event) = ctx.incoming() else {
            return;
        };
        let followed = self.inner.rooms.read_unpoisoned().contains(&event.room_id);
        if !followed {
            return;
        }
        #[derive(Deserialize)]
        struct Content {
            #[serde(default)]
            content: serde_json::Value,
        }
        if let Some(state_key) = &event.state_key {
            let Ok(body) = serde_json::from_str::<Content>(event.json.get()) else {
                return;
            };
            if let Some(change) = parse_event(
                event.room_id.as_str(),
                &event.event_type,
                state_key,
                &body.content,
            ) {
                self.apply(&change);
            }
        } else if event.event_type == "m.room.redaction" {
            // A redacted rule keeps its state key with empty content: read the list again.
            let mut state = self.inner.state.lock().await;
            for list in &mut state.lists {
                if list.room.as_ref() == Some(&event.room_id) {
                    list.loaded = false;
                }
            }
            // Those watching read the lists again, which reads this one anew.
            self.bump();
        }
    }

    fn apply(&self, change: &Change) {
        self.inner.rules.write_unpoisoned().apply(change);
        self.bump();
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Told each time the rules may have changed: a rule came, went or was redacted, or a list
    /// was read. For a plugin that acts on what is already there when a rule comes (a bridge
    /// leaving a room it bridges), rather than only checking what comes after. The lists are
    /// read at the first check or [`PolicyLists::load`], not by watching.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Reads every list not read yet (each failed one at most once a minute): resolves its
    /// alias, joins it as the bot, and reads its rules from its state. Checks call it; call
    /// it at start to have the bot join early.
    pub async fn load(&self, app: &Appservice) -> Result<()> {
        self.load_and_record(app, true).await
    }

    /// As [`PolicyLists::load`], but a list that cannot be read now is not left alone for a
    /// minute: the next check tries it again. For a first read at start, when a list may not
    /// exist yet (it is made after the plugin started).
    pub async fn try_load(&self, app: &Appservice) -> Result<()> {
        self.load_and_record(app, false).await
    }

    async fn load_and_record(&self, app: &Appservice, record_failure: bool) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let mut first_error = None;
        for (i, configured) in self.inner.configured.iter().enumerate() {
            let list = &mut state.lists[i];
            if list.loaded || list.failed_at.is_some_and(|t| t.elapsed() < RETRY) {
                continue;
            }
            match self.load_one(app, configured, list.room.clone()).await {
                Ok(room) => {
                    list.room = Some(room);
                    list.loaded = true;
                    list.failed_at = None;
                }
                Err(error) => {
                    tracing::warn!(list = %configured, %error, "could not read a policy list");
                    if record_failure {
                        list.failed_at = Some(Instant::now());
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        let loaded = state.lists.iter().filter(|l| l.loaded).count();
        match first_error {
            // Nothing to answer from at all: say why.
            Some(error) if loaded == 0 => Err(error),
            _ => Ok(()),
        }
    }

    async fn load_one(
        &self,
        app: &Appservice,
        configured: &str,
        known: Option<OwnedRoomId>,
    ) -> Result<OwnedRoomId> {
        let room = match known {
            Some(room) => room,
            None => resolve_room(app, configured).await?,
        };
        {
            let mut rooms = self.inner.rooms.write_unpoisoned();
            if !rooms.contains(&room) {
                rooms.push(room.clone());
            }
        }
        app.bot().ensure_joined(&room).await?;
        let read = read_list(app, &room).await?;
        let mut rules = self.inner.rules.write_unpoisoned();
        rules.remove_list(room.as_str());
        for rule in read {
            rules.apply(&Change::Set(rule));
        }
        drop(rules);
        self.bump();
        Ok(room)
    }

    /// The rules of every list read so far.
    pub fn rules(&self) -> PolicySet {
        self.inner.rules.read_unpoisoned().clone()
    }

    /// The rule banning `user` — a user rule, or a server rule on its server — if any.
    pub async fn check_user(&self, app: &Appservice, user: &UserId) -> Result<Option<Rule>> {
        self.load(app).await?;
        Ok(self.rules().user_banned(user.as_str()).cloned())
    }

    /// The rule banning `room` (a room ID or alias), if any.
    pub async fn check_room(&self, app: &Appservice, room: &str) -> Result<Option<Rule>> {
        self.load(app).await?;
        Ok(self.rules().room_rule(room).cloned())
    }

    /// The rule banning the room `room_id` or any of its `aliases`, if any: what a plugin asks
    /// before bridging or protecting a room.
    pub async fn check_room_names(
        &self,
        app: &Appservice,
        room_id: &str,
        aliases: &[String],
    ) -> Result<Option<Rule>> {
        self.load(app).await?;
        let rules = self.rules();
        Ok(rules
            .room_banned(room_id, aliases.iter().map(String::as_str))
            .cloned())
    }

    /// The rule banning `server`, if any.
    pub async fn check_server(&self, app: &Appservice, server: &str) -> Result<Option<Rule>> {
        self.load(app).await?;
        Ok(self.rules().server_rule(server).cloned())
    }
}

/// A room ID, or the room an alias points to now.
pub async fn resolve_room(app: &Appservice, room: &str) -> Result<OwnedRoomId> {
    if room.starts_with('#') {
        let alias = OwnedRoomAliasId::try_from(room)?;
        let response = app
            .client()
            .send(
                get_alias::v3::Request::new(alias),
                AppserviceUserIdentity::default(),
            )
            .await?;
        return Ok(response.room_id);
    }
    Ok(RoomId::parse(room)?)
}

/// The ban rules in the current state of list `room`, read as the bot (which must be able to
/// see the room: joined, or the room world-readable).
pub async fn read_list(app: &Appservice, room: &RoomId) -> Result<Vec<Rule>> {
    let response = app
        .client()
        .send(
            get_state_events::v3::Request::new(room.to_owned()),
            AppserviceUserIdentity::default(),
        )
        .await?;
    #[derive(Deserialize)]
    struct StateEvent {
        #[serde(rename = "type")]
        event_type: String,
        state_key: String,
        #[serde(default)]
        content: serde_json::Value,
    }
    let mut rules = Vec::new();
    for raw in &response.room_state {
        let Ok(event) = serde_json::from_str::<StateEvent>(raw.json().get()) else {
            continue;
        };
        if let Some(Change::Set(rule)) = parse_event(
            room.as_str(),
            &event.event_type,
            &event.state_key,
            &event.content,
        ) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Rule};

    #[test]
    fn a_rule_coming_or_going_is_told_to_those_watching() {
        let lists = PolicyLists::new(["#bans:example.org"]);
        let mut changes = lists.changes();
        assert!(!changes.has_changed().unwrap_or(true));
        let rule = Rule::ban("!l:example.org", Kind::Room, "r", "#bad:*", "");
        lists.apply(&Change::Set(rule));
        assert!(changes.has_changed().unwrap_or(false));
        changes.borrow_and_update();
        assert!(
            lists
                .rules()
                .room_banned("!x:example.org", ["#bad:example.org"])
                .is_some()
        );
        lists.apply(&Change::Removed {
            list: "!l:example.org".into(),
            kind: Kind::Room,
            state_key: "r".into(),
        });
        assert!(changes.has_changed().unwrap_or(false));
        assert!(lists.rules().rules().is_empty());
    }
}
