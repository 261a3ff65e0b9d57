//! The bot's state: settings, tables, and an in-memory copy of its rooms, lists, rules and
//! protection settings, read once from the store and written through.

use std::sync::{Arc, Mutex, MutexGuard};
use trestle::sync::MutexExt;

use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use trestle::{
    Appservice, Error, Result,
    ruma::{
        OwnedRoomId, RoomId, UserId, events::room::message::RoomMessageEventContent,
        events::room::power_levels::UserPowerLevel,
    },
};
use trestle_policy::PolicySet;
pub use trestle_policy::resolve_room;

use crate::{
    Settings,
    db::{ALL_ROOMS, Db},
    protections::{self, RoomProtections, Tracker},
};

/// Setting keys in `moderation_settings`.
pub const MANAGEMENT_ROOM: &str = "management_room";
/// The bot's own policy list.
pub const OWN_LIST: &str = "own_list";

/// What the bot knows, in memory.
#[derive(Debug, Default)]
pub struct Model {
    /// The management room, once known.
    pub management_room: Option<OwnedRoomId>,
    /// The bot's own policy list, once created.
    pub own_list: Option<OwnedRoomId>,
    /// Protected rooms.
    pub protected: Vec<String>,
    /// Followed policy lists (the bot's own included).
    pub lists: Vec<String>,
    /// The rules of every followed list.
    pub rules: PolicySet,
    /// Protection settings: (room or `*`, protection, settings).
    pub protections: Vec<(String, String, Map<String, Value>)>,
}

impl Model {
    /// Whether `room` is protected.
    pub fn is_protected(&self, room: &str) -> bool {
        self.protected.iter().any(|r| r == room)
    }

    /// Whether `room` is a followed list.
    pub fn is_list(&self, room: &str) -> bool {
        self.lists.iter().any(|r| r == room)
    }

    /// The stored settings of one protection in `room` (or `*`).
    pub fn protection_layer(&self, room: &str, name: &str) -> Map<String, Value> {
        self.protections
            .iter()
            .find(|(r, n, _)| r == room && n == name)
            .map(|(_, _, s)| s.clone())
            .unwrap_or_default()
    }

    /// The settings for all rooms and then the room's own, of one protection.
    pub fn layers(&self, room: &str, name: &str) -> [Map<String, Value>; 2] {
        [
            self.protection_layer(ALL_ROOMS, name),
            self.protection_layer(room, name),
        ]
    }

    /// The effective protections of `room`. A stored setting that no longer reads (it was
    /// validated when set) falls back to the defaults, which are all off.
    pub fn room_protections(&self, room: &str) -> RoomProtections {
        fn read<T: serde::de::DeserializeOwned + Default>(
            model: &Model,
            room: &str,
            name: &str,
        ) -> T {
            let [all, own] = model.layers(room, name);
            protections::effective(&[&all, &own]).unwrap_or_default()
        }
        RoomProtections {
            word_filter: read(self, room, protections::WordFilter::NAME),
            flood: read(self, room, protections::Flood::NAME),
            mention_spam: read(self, room, protections::MentionSpam::NAME),
            join_flood: read(self, room, protections::JoinFlood::NAME),
            link_spam: read(self, room, protections::LinkSpam::NAME),
            invite_flood: read(self, room, protections::InviteFlood::NAME),
        }
    }
}

/// The moderation bot's shared state, given to every handler.
#[derive(Clone)]
pub struct Moderation {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    db: OnceCell<Db>,
    model: Mutex<Model>,
    tracker: Mutex<Tracker>,
    /// When resolving the configured management room last failed: not retried for a while,
    /// since every event asks.
    resolve_failed: Mutex<Option<std::time::Instant>>,
    /// Held while an ACL is read, computed and sent, so that two rule changes handled at once
    /// (lists are handled in parallel) cannot send them in the wrong order.
    acl: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Moderation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moderation")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Moderation {
    /// A bot with these settings; its tables are opened on first use.
    pub fn new(settings: Settings) -> Self {
        Moderation {
            inner: Arc::new(Inner {
                settings,
                db: OnceCell::new(),
                model: Mutex::new(Model::default()),
                tracker: Mutex::new(Tracker::default()),
                resolve_failed: Mutex::new(None),
                acl: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The in-memory model. Never held across an await.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.inner.model.lock_unpoisoned()
    }

    /// Serializes ACL updates.
    pub async fn acl_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.acl.lock().await
    }

    /// What the protections remember. Never held across an await.
    pub fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.inner.tracker.lock_unpoisoned()
    }

    /// The tables, migrated, with the model loaded from them.
    pub async fn db(&self, app: &Appservice) -> Result<&Db> {
        self.inner
            .db
            .get_or_try_init(|| async {
                let db = Db::open(app.store().clone()).await?;
                let management_room = db.setting(MANAGEMENT_ROOM).await?;
                let own_list = db.setting(OWN_LIST).await?;
                let protected = db.protected_rooms().await?;
                let lists = db.lists().await?;
                let rules = db.rules().await?;
                let protections = db.protections().await?;
                let mut model = self.model();
                // A configured room wins over a remembered one (the setting may have changed);
                // it is resolved on first use.
                model.management_room = management_room
                    .filter(|_| self.settings().management_room.is_none())
                    .and_then(|r| RoomId::parse(r).ok());
                model.own_list = own_list.and_then(|r| RoomId::parse(r).ok());
                model.protected = protected;
                model.lists = lists;
                model.rules = PolicySet::new(rules);
                model.protections = protections;
                drop(model);
                Ok::<_, Error>(db)
            })
            .await
    }

    /// The management room: the one in the settings (an alias is resolved once it exists;
    /// after a failure, not again for 30 s), or else the remembered one.
    pub async fn management_room(&self, app: &Appservice) -> Result<Option<OwnedRoomId>> {
        let db = self.db(app).await?;
        if let Some(room) = self.model().management_room.clone() {
            return Ok(Some(room));
        }
        let Some(configured) = self.settings().management_room.as_deref() else {
            return Ok(None);
        };
        let failed = *self.inner.resolve_failed.lock_unpoisoned();
        if failed.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(30)) {
            return Ok(None);
        }
        let room = match resolve_room(app, configured).await {
            Ok(room) => room,
            Err(error) => {
                *self.inner.resolve_failed.lock_unpoisoned() = Some(std::time::Instant::now());
                return Err(error);
            }
        };
        db.set_setting(MANAGEMENT_ROOM, room.as_str()).await?;
        self.model().management_room = Some(room.clone());
        Ok(Some(room))
    }

    /// Makes `room` the management room.
    pub async fn set_management_room(&self, app: &Appservice, room: &RoomId) -> Result<()> {
        self.db(app)
            .await?
            .set_setting(MANAGEMENT_ROOM, room.as_str())
            .await?;
        self.model().management_room = Some(room.to_owned());
        Ok(())
    }

    /// Whether `user` is one of the configured admins.
    pub fn is_admin(&self, user: &UserId) -> bool {
        self.settings().admins.iter().any(|a| a == user.as_str())
    }

    /// Whether `user` may give commands: a configured admin, or someone with the
    /// `command_power` level in the management room.
    pub async fn may_command(&self, app: &Appservice, room: &RoomId, user: &UserId) -> bool {
        if self.is_admin(user) {
            return true;
        }
        let needed = UserPowerLevel::Int(trestle::ruma::Int::new_saturating(
            self.settings().command_power,
        ));
        match trestle::router::power_level(app, room, user).await {
            Ok(level) => level >= needed,
            Err(error) => {
                tracing::warn!(%room, %user, %error, "could not read power levels");
                false
            }
        }
    }

    /// Whether the protections leave `user` alone in `room`: the bot's own users, admins, and
    /// moderators (`exempt_power`).
    pub async fn is_exempt(&self, app: &Appservice, room: &RoomId, user: &UserId) -> bool {
        if app.is_own_user(user) || self.is_admin(user) {
            return true;
        }
        let exempt = UserPowerLevel::Int(trestle::ruma::Int::new_saturating(
            self.settings().exempt_power,
        ));
        trestle::router::power_level(app, room, user)
            .await
            .is_ok_and(|level| level >= exempt)
    }

    /// Writes `text` to the management room (and the log); failures are logged, never
    /// returned, so a report cannot undo the action it reports.
    pub async fn report(&self, app: &Appservice, text: &str) {
        tracing::info!(report = text, "moderation");
        let room = match self.management_room(app).await {
            Ok(Some(room)) => room,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "no management room for a report");
                return;
            }
        };
        let content = RoomMessageEventContent::notice_plain(text);
        if let Err(error) = app.bot().send(&room, &content).queue().await {
            tracing::warn!(%error, "could not queue a report");
        }
    }
}
