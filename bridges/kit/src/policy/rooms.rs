//! Rooms the followed policy lists ban (`m.policy.rule.room`, by room id or alias): no portal
//! is made or linked for one, and a portal a rule comes to ban is left — the bot says why and
//! leaves, and nothing crosses either way — until the rule goes, when the bot joins again and
//! the portal is bridged as before. The portal stays in the store meanwhile, so its message
//! map survives the ban. Which portals are left is kept in memory: at start the lists are read
//! and every portal checked again.

use std::collections::HashMap;

use ruma::events::room::message::RoomMessageEventContent;
use ruma::{OwnedRoomId, RoomId, events::StateEventType};
use serde_json::Value;
use trestle::{Appservice, sync::MutexExt};
use trestle_policy::Rule;

use super::refusal;
use crate::{BridgeError, BridgeHandle, Network, NetworkResult, PortalRef};

/// Portals left for a rule, with the names they were checked by (their aliases cannot be read
/// once the bot is out). In memory: after a restart the first reading of the lists finds them
/// again.
pub(crate) type Left = std::sync::Mutex<HashMap<OwnedRoomId, Vec<String>>>;

impl<N: Network> BridgeHandle<N> {
    /// Whether `room_id` is a portal left for a rule of the lists: then nothing in it is
    /// bridged.
    pub(crate) fn room_left(&self, room_id: &RoomId) -> bool {
        self.shared
            .policy
            .as_ref()
            .is_some_and(|gate| gate.left.lock_unpoisoned().contains_key(room_id))
    }

    /// Forgets that `room_id` was left for a rule: it is no portal any more (unlinked).
    pub(crate) fn forget_left(&self, room_id: &RoomId) {
        if let Some(gate) = &self.shared.policy {
            gate.left.lock_unpoisoned().remove(room_id);
        }
    }

    /// Refuses what would bridge `room_id` while it is left for a rule.
    pub(crate) fn refuse_left(&self, room_id: &RoomId) -> NetworkResult<()> {
        if self.room_left(room_id) {
            return Err(BridgeError::Forbidden(format!(
                "{room_id} is not bridged while a policy list bans it"
            )));
        }
        Ok(())
    }

    /// The rule of the lists banning the room `room_id` known by `aliases`, if any. A list
    /// that cannot be read bans nothing (logged, and read again later).
    async fn room_banned(
        &self,
        app: &Appservice,
        room_id: &str,
        aliases: &[String],
    ) -> Option<Rule> {
        let gate = self.shared.policy.as_ref()?;
        match gate.lists.check_room_names(app, room_id, aliases).await {
            Ok(rule) => rule,
            Err(error) => {
                tracing::warn!(%room_id, %error, "policy lists unreadable: room not checked");
                None
            }
        }
    }

    /// Refuses to make a portal for `chat` when the lists ban the alias it would have.
    pub(crate) async fn refuse_new_portal(&self, chat: &N::ChatId) -> NetworkResult<()> {
        let app = self.app()?;
        let alias = self.chat_alias_of(&app, chat);
        match self
            .room_banned(&app, "", std::slice::from_ref(&alias))
            .await
        {
            Some(rule) => Err(BridgeError::Forbidden(format!(
                "no portal for {alias}: {}",
                refusal(&rule)
            ))),
            None => Ok(()),
        }
    }

    /// Refuses to link `room_id` when the lists ban it, by its id or its aliases; the bot,
    /// which joined to link it, leaves again.
    pub(crate) async fn refuse_link(&self, room_id: &RoomId) -> NetworkResult<()> {
        if self.shared.policy.is_none() {
            return Ok(());
        }
        let app = self.app()?;
        let aliases = room_aliases(&app, room_id).await;
        let Some(rule) = self.room_banned(&app, room_id.as_str(), &aliases).await else {
            return Ok(());
        };
        if let Err(error) = app.bot().leave(room_id).await {
            tracing::info!(%room_id, %error, "could not leave a banned room");
        }
        Err(BridgeError::Forbidden(format!(
            "{room_id} is not bridged: {}",
            refusal(&rule)
        )))
    }

    fn chat_alias_of(&self, app: &Appservice, chat: &N::ChatId) -> String {
        format!("#{}:{}", self.network().chat_alias(chat), app.server_name())
    }

    /// The kit's service for room rules: each time the rules change, every portal is checked
    /// again; one a rule now bans is left, one whose rule went is bridged again.
    pub(crate) async fn follow_room_rules(&self, app: Appservice) -> NetworkResult<()> {
        self.attach(&app).await?;
        let Some(gate) = &self.shared.policy else {
            return Ok(());
        };
        let mut changes = gate.lists.changes();
        // Portals left before a restart are found at once, not at the first check. A list
        // that does not exist yet is read at the first check as before.
        if let Err(error) = gate.lists.try_load(&app).await {
            tracing::info!(%error, "policy lists not read at start");
        }
        loop {
            tokio::select! {
                _ = app.stopping() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
            // A list read at once brings all its rules: one pass for them all.
            changes.borrow_and_update();
            if let Err(error) = self.check_portal_rooms(&app).await {
                tracing::warn!(%error, "could not check portals against the policy lists");
            }
        }
    }

    async fn check_portal_rooms(&self, app: &Appservice) -> NetworkResult<()> {
        for portal in self.portals().await? {
            let known = self
                .shared
                .policy
                .as_ref()
                .and_then(|gate| gate.left.lock_unpoisoned().get(&portal.room_id).cloned());
            let aliases = match &known {
                Some(names) => names.clone(),
                None => {
                    let mut names = room_aliases(app, &portal.room_id).await;
                    names.push(self.chat_alias_of(app, &portal.chat));
                    names
                }
            };
            let rule = self
                .room_banned(app, portal.room_id.as_str(), &aliases)
                .await;
            match (rule, known.is_some()) {
                (Some(rule), false) => self.leave_portal(app, &portal, aliases, &rule).await,
                (None, true) => self.rejoin_portal(app, &portal).await,
                _ => {}
            }
        }
        Ok(())
    }

    async fn leave_portal(
        &self,
        app: &Appservice,
        portal: &PortalRef<N>,
        aliases: Vec<String>,
        rule: &Rule,
    ) {
        let Some(gate) = &self.shared.policy else {
            return;
        };
        gate.left
            .lock_unpoisoned()
            .insert(portal.room_id.clone(), aliases);
        tracing::info!(room_id = %portal.room_id, rule = %rule.describe(), "leaving a banned portal");
        let protocol = self.network().protocol().displayname;
        let notice = RoomMessageEventContent::notice_plain(format!(
            "This room is no longer bridged to {protocol}: {}",
            refusal(rule)
        ));
        // Best effort, both: after a restart the bot is out already.
        if let Err(error) = app.bot().send(&portal.room_id, &notice).await {
            tracing::info!(room_id = %portal.room_id, %error, "could not say why the bridge leaves");
        }
        if let Err(error) = app.bot().leave(&portal.room_id).await {
            tracing::info!(room_id = %portal.room_id, %error, "could not leave a banned portal");
        }
    }

    async fn rejoin_portal(&self, app: &Appservice, portal: &PortalRef<N>) {
        let Some(gate) = &self.shared.policy else {
            return;
        };
        tracing::info!(room_id = %portal.room_id, "the rule banning a portal went: bridging it again");
        // Bridged again even if the bot cannot join (a room that needs an invite now): the
        // ghosts are still there.
        if let Err(error) = app.bot().ensure_joined(&portal.room_id).await {
            tracing::warn!(room_id = %portal.room_id, %error, "could not join a portal again");
        } else {
            let protocol = self.network().protocol().displayname;
            let notice = RoomMessageEventContent::notice_plain(format!(
                "This room is bridged to {protocol} again: no policy list bans it any more."
            ));
            if let Err(error) = app.bot().send(&portal.room_id, &notice).await {
                tracing::info!(room_id = %portal.room_id, %error, "could not say the bridge is back");
            }
        }
        gate.left.lock_unpoisoned().remove(&portal.room_id);
    }
}

/// A room's canonical alias and alternative aliases, as the bot reads them; none when it
/// cannot.
async fn room_aliases(app: &Appservice, room_id: &RoomId) -> Vec<String> {
    let content: Option<Value> = app
        .state_content(room_id, StateEventType::RoomCanonicalAlias, "")
        .await
        .unwrap_or_default();
    let Some(content) = content else {
        return Vec::new();
    };
    let mut aliases: Vec<String> = content["alt_aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if let Some(alias) = content["alias"].as_str() {
        aliases.insert(0, alias.to_owned());
    }
    aliases
}
