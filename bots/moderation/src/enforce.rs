//! Carrying out the rules: bans in protected rooms, lifting them when their rule goes, and the
//! server ACL built from server rules. Only protected rooms are ever touched.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::{
            AppserviceUserIdentity,
            client::membership::{get_member_events, unban_user},
        },
        events::{StateEventType, room::power_levels::UserPowerLevel},
    },
};
use trestle_policy::{Change, Kind, Recommendation, Rule};

use crate::{bot::Moderation, commands::recent_events, db::Ban};

/// How many of a taken-down user's newest events in a room are redacted.
const TAKEDOWN_REDACTIONS: u32 = 100;

#[derive(Deserialize)]
struct MemberEvent {
    state_key: String,
    content: MemberContent,
}

#[derive(Deserialize)]
struct MemberContent {
    membership: String,
}

/// Every member event in a room's current state: present members and past ones (left,
/// banned), read once for both the bans and the ACL that a rule asks for.
pub struct Members(Vec<MemberEvent>);

impl Members {
    /// Reads `room`'s member events.
    pub async fn of(app: &Appservice, room: &RoomId) -> Result<Members> {
        let response = app
            .client()
            .send(
                get_member_events::v3::Request::new(room.to_owned()),
                AppserviceUserIdentity::default(),
            )
            .await?;
        Ok(Members(
            response
                .chunk
                .iter()
                .filter_map(|raw| serde_json::from_str::<MemberEvent>(raw.json().get()).ok())
                .collect(),
        ))
    }

    /// The users who are joined, invited or knocking.
    pub fn present(&self) -> Vec<OwnedUserId> {
        self.0
            .iter()
            .filter(|m| matches!(m.content.membership.as_str(), "join" | "invite" | "knock"))
            .filter_map(|m| UserId::parse(&m.state_key).ok())
            .collect()
    }
}

/// The users in `room` who are joined, invited or knocking.
pub async fn members(app: &Appservice, room: &RoomId) -> Result<Vec<OwnedUserId>> {
    Ok(Members::of(app, room).await?.present())
}

/// The servers a hashed server rule may deny in a room: those of its `members`, past and
/// present, and those its ACL denies already (see
/// [`trestle_policy::PolicySet::server_denies_among`]).
fn servers_seen(members: &Members, acl: Option<&Value>) -> BTreeSet<String> {
    let mut seen: BTreeSet<String> = members
        .0
        .iter()
        .filter_map(|m| UserId::parse(&m.state_key).ok())
        .map(|user| user.server_name().as_str().to_owned())
        .collect();
    let denied = acl
        .and_then(|c| c.get("deny"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    seen.extend(denied.map(str::to_owned));
    seen
}

impl Moderation {
    /// Bans `user` from `room` if a user rule matches and the user is not one of ours;
    /// records the ban and reports it. Returns whether it banned.
    pub async fn ban_if_listed(&self, app: &Appservice, room: &RoomId, user: &UserId) -> bool {
        if app.is_own_user(user) {
            return false;
        }
        let Some(rule) = self.ban_rule(app, user) else {
            return false;
        };
        self.ban_for_rule(app, room, user, &rule).await
    }

    /// The rule that bans `user` from protected rooms: a user rule, or a server rule on their
    /// server — never on the bot's own server, which no server rule touches (as in the ACL:
    /// a glob such as `*.example.org` would otherwise ban every local user).
    fn ban_rule(&self, app: &Appservice, user: &UserId) -> Option<Rule> {
        let model = self.model();
        model.rules.user_rule(user.as_str()).cloned().or_else(|| {
            let server = user.server_name().as_str();
            if server.eq_ignore_ascii_case(app.server_name().as_str()) {
                return None;
            }
            model.rules.server_rule(server).cloned()
        })
    }

    /// Whether `rule` bans `user` (see [`Moderation::ban_rule`]).
    fn rule_bans(app: &Appservice, rule: &Rule, user: &UserId) -> bool {
        if app.is_own_user(user) {
            return false;
        }
        match rule.kind {
            Kind::User => rule.matches(user.as_str()),
            Kind::Server => {
                let server = user.server_name().as_str();
                !server.eq_ignore_ascii_case(app.server_name().as_str())
                    && rule.matches_server(server)
            }
            Kind::Room => false,
        }
    }

    async fn ban_for_rule(
        &self,
        app: &Appservice,
        room: &RoomId,
        user: &UserId,
        rule: &Rule,
    ) -> bool {
        let takedown = rule.recommendation == Recommendation::Takedown;
        // A takedown's reason may describe what is taken down: it stays in the management room.
        let reason = if takedown {
            "taken down by a policy list".to_owned()
        } else if rule.reason.is_empty() {
            "banned by a policy list".to_owned()
        } else {
            rule.reason.clone()
        };
        if let Err(error) = app.bot().ban(room, user, Some(&reason)).await {
            self.report(
                app,
                &format!(
                    "⚠ could not ban {user} from {room} ({}): {error}",
                    rule.label()
                ),
            )
            .await;
            return false;
        }
        let ban = Ban {
            room_id: room.to_string(),
            user_id: user.to_string(),
            list_room: rule.list.clone(),
            entity: rule.label(),
        };
        if let Ok(db) = self.db(app).await
            && let Err(error) = db.record_ban(&ban).await
        {
            tracing::warn!(%error, "could not record a ban");
        }
        let mut text = format!(
            "🔨 banned {user} from {room}: {} ({})",
            rule.describe(),
            if rule.reason.is_empty() {
                &reason
            } else {
                &rule.reason
            }
        );
        if takedown {
            text.push_str(&self.take_down_events(app, room, user).await);
        }
        self.report(app, &text).await;
        true
    }

    /// What a takedown adds to a ban (MSC4204): the user's recent events in the room are
    /// redacted too. Returns what to add to the report.
    async fn take_down_events(&self, app: &Appservice, room: &RoomId, user: &UserId) -> String {
        let events = match recent_events(app, room, user, TAKEDOWN_REDACTIONS).await {
            Ok(events) => events,
            Err(error) => return format!("; ⚠ could not read its events: {error}"),
        };
        let mut redacted = 0;
        for event_id in &events {
            match app
                .bot()
                .redact(room, event_id, Some("taken down by a policy list"))
                .await
            {
                Ok(_) => redacted += 1,
                Err(error) => {
                    return format!("; takedown: redacted {redacted} events, then failed: {error}");
                }
            }
        }
        format!("; takedown: redacted {redacted} of their events")
    }

    /// Bans every one of `members` (of `room`) that a rule bans.
    pub async fn ban_listed_members(
        &self,
        app: &Appservice,
        room: &RoomId,
        members: &Members,
    ) -> usize {
        let mut banned = 0;
        for user in members.present() {
            if self.ban_if_listed(app, room, &user).await {
                banned += 1;
            }
        }
        banned
    }

    /// Applies every rule to `room`: bans and the server ACL.
    pub async fn enforce_room(&self, app: &Appservice, room: &RoomId) -> Result<()> {
        let members = Members::of(app, room).await?;
        self.ban_listed_members(app, room, &members).await;
        self.update_acl_among(app, room, &members).await
    }

    /// Applies every rule to every protected room; errors are reported per room.
    pub async fn enforce_all(&self, app: &Appservice) {
        for room in self.protected_rooms() {
            if let Err(error) = self.enforce_room(app, &room).await {
                self.report(
                    app,
                    &format!("⚠ could not apply the rules to {room}: {error}"),
                )
                .await;
            }
        }
    }

    /// The protected rooms.
    pub fn protected_rooms(&self) -> Vec<OwnedRoomId> {
        self.model()
            .protected
            .iter()
            .filter_map(|r| RoomId::parse(r).ok())
            .collect()
    }

    /// Records a rule change (store and memory), then applies or lifts it everywhere.
    pub async fn apply_change(&self, app: &Appservice, change: Change) -> Result<()> {
        let db = self.db(app).await?;
        match &change {
            Change::Set(rule) => db.put_rule(rule).await?,
            Change::Removed {
                list,
                kind,
                state_key,
            } => db.delete_rule(list, *kind, state_key).await?,
        }
        let old = self.model().rules.apply(&change);
        if old.as_ref() == set_rule(&change) {
            return Ok(());
        }
        if let Some(old) = &old {
            self.rule_gone(app, old).await?;
        }
        if let Change::Set(rule) = &change {
            self.rule_added(app, rule).await?;
        }
        Ok(())
    }

    async fn rule_added(&self, app: &Appservice, rule: &Rule) -> Result<()> {
        match rule.kind {
            Kind::User | Kind::Server => {
                for room in self.protected_rooms() {
                    let members = match Members::of(app, &room).await {
                        Ok(members) => members,
                        Err(error) => {
                            self.report(
                                app,
                                &format!("⚠ could not list members of {room}: {error}"),
                            )
                            .await;
                            continue;
                        }
                    };
                    for user in members.present() {
                        if Self::rule_bans(app, rule, &user) {
                            self.ban_for_rule(app, &room, &user, rule).await;
                        }
                    }
                    if rule.kind == Kind::Server {
                        self.update_acl_among(app, &room, &members).await?;
                    }
                }
            }
            Kind::Room => {
                self.report(
                    app,
                    &format!(
                        "📋 room {}: I will not protect such a room, and bridges asking for a policy check refuse it",
                        rule.describe()
                    ),
                )
                .await;
                for room in self.protected_rooms() {
                    if let Some(banning) = self.room_rule(app, &room, &[]).await {
                        self.leave_banned_room(app, &room, &banning).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The room rule banning `room` by its ID, its canonical alias or one of `aliases` (as
    /// typed in a command), if any.
    pub async fn room_rule(
        &self,
        app: &Appservice,
        room: &RoomId,
        aliases: &[&str],
    ) -> Option<Rule> {
        let canonical = app
            .state_content(room, StateEventType::RoomCanonicalAlias, "")
            .await
            .ok()
            .flatten()
            .and_then(|c: Value| c.get("alias").and_then(Value::as_str).map(str::to_owned));
        let mut names = aliases.to_vec();
        names.extend(canonical.as_deref());
        self.model()
            .rules
            .room_banned(room.as_str(), names)
            .cloned()
    }

    /// A protected room is banned: the bot stops protecting it and leaves.
    async fn leave_banned_room(&self, app: &Appservice, room: &RoomId, rule: &Rule) -> Result<()> {
        self.db(app).await?.unprotect(room.as_str()).await?;
        self.model().protected.retain(|r| r != room.as_str());
        let outcome = outcome(app.bot().leave(room).await, "left it", "could not leave it");
        self.report(
            app,
            &format!(
                "🚪 {room} is banned by {}: no longer protected, {outcome}",
                rule.describe()
            ),
        )
        .await;
        Ok(())
    }

    /// A rule was removed (or replaced): lifts what it did, unless another rule still says so.
    pub async fn rule_gone(&self, app: &Appservice, rule: &Rule) -> Result<()> {
        match rule.kind {
            Kind::User | Kind::Server => {
                let db = self.db(app).await?;
                for ban in db.bans_for(&rule.list, &rule.label()).await? {
                    let why = format!("rule {} was removed from {}", rule.label(), rule.list);
                    self.lift_ban(app, ban, &why).await?;
                }
                if rule.kind == Kind::User {
                    return Ok(());
                }
                for room in self.protected_rooms() {
                    self.update_acl(app, &room).await?;
                }
            }
            Kind::Room => {
                self.report(
                    app,
                    &format!(
                        "🕊 room rule {} was removed from {}: rooms it matched may be protected again",
                        rule.label(),
                        rule.list
                    ),
                )
                .await;
            }
        }
        Ok(())
    }

    /// Lifts a ban the bot made for a rule that is gone — unless another rule still bans the
    /// user, which the ban is then owed to. A failed unban keeps the record, so the next start
    /// ([`Moderation::lift_stale_bans`]) tries again.
    async fn lift_ban(&self, app: &Appservice, ban: Ban, why: &str) -> Result<()> {
        let db = self.db(app).await?;
        let still = UserId::parse(&ban.user_id)
            .ok()
            .and_then(|user| self.ban_rule(app, &user));
        if let Some(other) = still {
            if other.list != ban.list_room || other.label() != ban.entity {
                db.record_ban(&Ban {
                    list_room: other.list.clone(),
                    entity: other.label(),
                    ..ban
                })
                .await?;
            }
            return Ok(());
        }
        let (Ok(room), Ok(user)) = (RoomId::parse(&ban.room_id), UserId::parse(&ban.user_id))
        else {
            return db.forget_ban(&ban.room_id, &ban.user_id).await;
        };
        if !self.model().is_protected(room.as_str()) {
            // Nothing the bot does touches a room it no longer protects.
            return db.forget_ban(room.as_str(), user.as_str()).await;
        }
        match unban(app, &room, &user, &ban.entity).await {
            Ok(()) => {
                db.forget_ban(room.as_str(), user.as_str()).await?;
                self.report(app, &format!("🕊 unbanned {user} in {room}: {why}"))
                    .await;
            }
            Err(error) => {
                self.report(app, &format!("⚠ could not unban {user} in {room}: {error}"))
                    .await;
            }
        }
        Ok(())
    }

    /// Lifts the bans whose rules are gone: rules removed while the bot was down, unbans that
    /// failed before.
    pub async fn lift_stale_bans(&self, app: &Appservice) -> Result<()> {
        for ban in self.db(app).await?.bans().await? {
            let why = format!("rule {} in {} is gone", ban.entity, ban.list_room);
            self.lift_ban(app, ban, &why).await?;
        }
        Ok(())
    }

    /// Sets `room`'s `m.room.server_acl` to deny the servers of the server rules, if that
    /// changes anything: the globs of plain rules, and the servers seen in the room that a
    /// hashed rule matches. Other servers stay allowed; the bot's own server is never denied.
    pub async fn update_acl(&self, app: &Appservice, room: &RoomId) -> Result<()> {
        let members = Members::of(app, room).await?;
        self.update_acl_among(app, room, &members).await
    }

    /// [`Moderation::update_acl`] with `room`'s members already read.
    pub async fn update_acl_among(
        &self,
        app: &Appservice,
        room: &RoomId,
        members: &Members,
    ) -> Result<()> {
        let _guard = self.acl_guard().await;
        let current = server_acl(app, room).await?;
        let seen = servers_seen(members, current.as_ref());
        let deny = self
            .model()
            .rules
            .server_denies_among(app.server_name().as_str(), seen.iter().map(String::as_str));
        let content = match acl_content(current.as_ref(), &deny) {
            Some(content) => content,
            None => return Ok(()),
        };
        app.bot()
            .send_state_json(room, "m.room.server_acl", "", content, None)
            .await?;
        self.report(
            app,
            &format!(
                "🧱 server ACL of {room} now denies: {}",
                if deny.is_empty() {
                    "nothing".to_owned()
                } else {
                    deny.join(", ")
                }
            ),
        )
        .await;
        Ok(())
    }

    /// Reads every rule of list `room` from its current state and applies the difference.
    pub async fn sync_list(&self, app: &Appservice, room: &RoomId) -> Result<usize> {
        let rules = trestle_policy::read_list(app, room).await?;
        let known: Vec<Rule> = self
            .model()
            .rules
            .rules()
            .iter()
            .filter(|r| r.list == room.as_str())
            .cloned()
            .collect();
        let count = rules.len();
        for old in &known {
            if !rules
                .iter()
                .any(|r| r.kind == old.kind && r.state_key == old.state_key)
            {
                self.apply_change(
                    app,
                    Change::Removed {
                        list: old.list.clone(),
                        kind: old.kind,
                        state_key: old.state_key.clone(),
                    },
                )
                .await?;
            }
        }
        for rule in rules {
            if !known.contains(&rule) {
                self.apply_change(app, Change::Set(rule)).await?;
            }
        }
        Ok(count)
    }

    /// Stops following `list`: forgets its rules and lifts what they did.
    pub async fn drop_list(&self, app: &Appservice, list: &str) -> Result<()> {
        let db = self.db(app).await?;
        db.unwatch(list).await?;
        let gone = {
            let mut model = self.model();
            model.lists.retain(|l| l != list);
            model.rules.remove_list(list)
        };
        for rule in &gone {
            self.rule_gone(app, rule).await?;
        }
        Ok(())
    }
}

/// What became of an action, for a report: `done`, or `failed` with the error.
pub fn outcome(result: Result<()>, done: &str, failed: &str) -> String {
    match result {
        Ok(()) => done.to_owned(),
        Err(error) => format!("{failed}: {error}"),
    }
}

fn set_rule(change: &Change) -> Option<&Rule> {
    match change {
        Change::Set(rule) => Some(rule),
        Change::Removed { .. } => None,
    }
}

/// What the bot may not do in `room` of what protecting it takes: ban, kick, redact, set the
/// server ACL and the join rules.
pub async fn missing_powers(app: &Appservice, room: &RoomId) -> Result<Vec<&'static str>> {
    let own = trestle::router::power_level(app, room, app.bot_user_id()).await?;
    let levels: Value = app
        .state_content(room, StateEventType::RoomPowerLevels, "")
        .await?
        .unwrap_or_else(|| json!({}));
    Ok(needed_powers(&levels)
        .into_iter()
        .filter(|(_, needed)| {
            own < UserPowerLevel::Int(trestle::ruma::Int::new_saturating(*needed))
        })
        .map(|(what, _)| what)
        .collect())
}

/// The power levels the bot's actions need, from the content of `m.room.power_levels` (the
/// spec's defaults where a field is missing).
pub fn needed_powers(levels: &Value) -> Vec<(&'static str, i64)> {
    let level = |value: &Value, default: i64| value.as_i64().unwrap_or(default);
    let state_default = level(&levels["state_default"], 50);
    let state = |event_type: &str| level(&levels["events"][event_type], state_default);
    vec![
        ("ban", level(&levels["ban"], 50)),
        ("kick", level(&levels["kick"], 50)),
        ("redact", level(&levels["redact"], 50)),
        ("set the server ACL", state("m.room.server_acl")),
        ("change the join rules", state("m.room.join_rules")),
    ]
}

/// Unbans `user` from `room`.
pub async fn unban(app: &Appservice, room: &RoomId, user: &UserId, why: &str) -> Result<()> {
    let mut request = unban_user::v3::Request::new(room.to_owned(), user.to_owned());
    request.reason = Some(format!("policy rule {why} removed"));
    app.client()
        .send(request, AppserviceUserIdentity::default())
        .await?;
    Ok(())
}

/// The room's current `m.room.server_acl` content, if it has one.
async fn server_acl(app: &Appservice, room: &RoomId) -> Result<Option<Value>> {
    app.state_content(room, StateEventType::RoomServerAcl, "")
        .await
}

/// The ACL content to send so that `deny` is what the room denies, or `None` if it already
/// does (no ACL and nothing to deny counts as already so). `allow` and `allow_ip_literals` are
/// kept as the room had them.
pub fn acl_content(current: Option<&Value>, deny: &[String]) -> Option<Value> {
    let current_deny: Vec<String> = current
        .and_then(|c| c.get("deny"))
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut sorted = current_deny.clone();
    sorted.sort();
    sorted.dedup();
    let has_acl = current.is_some_and(|c| c.as_object().is_some_and(|o| !o.is_empty()));
    if sorted == deny && (has_acl || deny.is_empty()) {
        return None;
    }
    let allow = current
        .and_then(|c| c.get("allow"))
        .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
        .unwrap_or_else(|| json!(["*"]));
    let ip = current
        .and_then(|c| c.get("allow_ip_literals"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Some(json!({"allow": allow, "deny": deny, "allow_ip_literals": ip}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_powers_read_the_levels_with_the_spec_defaults() {
        let levels = json!({"ban": 60, "events": {"m.room.server_acl": 100}, "state_default": 40});
        assert_eq!(
            needed_powers(&levels),
            vec![
                ("ban", 60),
                ("kick", 50),
                ("redact", 50),
                ("set the server ACL", 100),
                ("change the join rules", 40)
            ]
        );
        assert_eq!(needed_powers(&json!({}))[3], ("set the server ACL", 50));
    }

    #[test]
    fn acl_is_sent_only_when_the_denies_change() {
        let deny = vec!["evil.example".to_owned()];
        assert_eq!(acl_content(None, &[]), None, "no ACL and nothing to deny");
        assert_eq!(
            acl_content(None, &deny),
            Some(json!({"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": true}))
        );
        let current = json!({"allow": ["*.good.example", "localhost"], "deny": ["evil.example"], "allow_ip_literals": false});
        assert_eq!(acl_content(Some(&current), &deny), None, "already so");
        assert_eq!(
            acl_content(Some(&current), &[]),
            Some(
                json!({"allow": ["*.good.example", "localhost"], "deny": [], "allow_ip_literals": false})
            ),
            "lifting keeps the room's allow list"
        );
    }
}
