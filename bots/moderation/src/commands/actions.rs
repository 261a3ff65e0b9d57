//! `ban`, `unban`, `kick` and `redact`.

use serde::Deserialize;
use serde_json::json;
use trestle::{
    Appservice, Result,
    ruma::{
        OwnedEventId, OwnedRoomId, RoomId, UInt, UserId,
        api::{
            AppserviceUserIdentity,
            client::{filter::RoomEventFilter, message::get_message_events, room::create_room},
        },
    },
};
use trestle_policy::{Change, Kind, Recommendation, Rule, glob, sha256_base64};

use super::{Request, parse::BanForm};
use crate::{
    bot::{Moderation, OWN_LIST},
    enforce::members,
};

impl Moderation {
    /// The bot's own policy list, created (and the sender invited to it) on first use.
    async fn own_list(&self, app: &Appservice, request: &Request) -> Result<OwnedRoomId> {
        let db = self.db(app).await?;
        if let Some(list) = self.model().own_list.clone() {
            return Ok(list);
        }
        let mut create = create_room::v3::Request::new();
        create.name = Some("Moderation policies".to_owned());
        create.topic = Some(format!(
            "Ban rules written by {} on its moderators' commands.",
            app.bot_user_id()
        ));
        create.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        create.invite = vec![request.sender.clone()];
        let created = app
            .client()
            .send(create, AppserviceUserIdentity::default())
            .await?;
        let list = created.room_id;
        db.set_setting(OWN_LIST, list.as_str()).await?;
        self.model().own_list = Some(list.clone());
        self.watch_list(app, &list).await?;
        Ok(list)
    }

    pub(super) async fn ban(
        &self,
        app: &Appservice,
        request: &Request,
        list: Option<OwnedRoomId>,
        entity: &str,
        reason: &str,
        form: BanForm,
    ) -> Result<String> {
        let kind = Kind::of_entity(entity);
        if kind == Kind::Server
            && glob::matches(&entity.to_ascii_lowercase(), app.server_name().as_str())
        {
            return Ok(format!(
                "{entity} matches this homeserver ({}); I will not ban it.",
                app.server_name()
            ));
        }
        if kind == Kind::User && glob::matches(entity, app.bot_user_id().as_str()) {
            return Ok(format!("{entity} matches me; I will not ban myself."));
        }
        if form.hashed && (entity.contains('*') || entity.contains('?')) {
            return Ok(format!(
                "{entity} is a glob: a hashed rule names one {} exactly, by its SHA-256. Ban the glob without --hashed.",
                kind.as_str()
            ));
        }
        let list = match list {
            Some(list) => list,
            None => self.own_list(app, request).await?,
        };
        let recommendation = if form.takedown {
            Recommendation::Takedown
        } else {
            Recommendation::Ban
        };
        let mut rule = Rule {
            recommendation,
            ..Rule::ban(
                list.as_str(),
                kind,
                &format!("rule:{entity}"),
                entity,
                reason,
            )
        };
        let mut content = json!({"recommendation": recommendation.as_str(), "reason": reason});
        let mut named = String::new();
        if form.hashed {
            // The state key must not name the entity either.
            let hash = entity_hash(kind, entity);
            named = format!(" (as sha256:{hash}: the list does not name it)");
            rule.state_key = format!("rule:sha256:{hash}");
            rule.entity = String::new();
            content["hashes"] = json!({ "sha256": hash });
            rule.sha256 = Some(hash);
        } else {
            content["entity"] = json!(entity);
        }
        app.bot()
            .send_state_json(&list, kind.event_type(), &rule.state_key, content, None)
            .await?;
        let state_key = rule.state_key.clone();
        self.apply_change(app, Change::Set(rule)).await?;
        // A hashed rule is written so the list stops naming the entity: the plain rule of the
        // same entity in this list goes (and the reverse), its bans now owed to the new rule.
        let replaced: Vec<Rule> = self
            .rules_of(kind, entity)
            .into_iter()
            .filter(|r| r.list == list.as_str() && r.state_key != state_key)
            .collect();
        let replaced = if replaced.is_empty() {
            String::new()
        } else {
            self.remove_rules(app, &list, replaced).await?;
            format!(
                " It replaces the {} rule of {entity} there.",
                if form.hashed { "plain" } else { "hashed" }
            )
        };
        let what = match recommendation {
            Recommendation::Ban => "ban",
            Recommendation::Takedown => "takedown",
        };
        Ok(format!(
            "Added a {}{} {what} rule for {entity}{named} to {list}; it applies in every protected room.{replaced}",
            if form.hashed { "hashed " } else { "" },
            kind.as_str()
        ))
    }

    /// The rules of every followed list about `entity`: those naming it (as a glob, typed the
    /// same), and hashed ones of its hash.
    fn rules_of(&self, kind: Kind, entity: &str) -> Vec<Rule> {
        let hash = entity_hash(kind, entity);
        self.model()
            .rules
            .rules()
            .iter()
            .filter(|r| {
                r.entity == entity
                    || (r.entity.is_empty() && r.kind == kind && r.sha256.as_ref() == Some(&hash))
            })
            .cloned()
            .collect()
    }

    /// Empties the state events of `rules` in `list`, and lifts what they did.
    async fn remove_rules(&self, app: &Appservice, list: &RoomId, rules: Vec<Rule>) -> Result<()> {
        for rule in rules {
            app.bot()
                .send_state_json(
                    list,
                    rule.kind.event_type(),
                    &rule.state_key,
                    json!({}),
                    None,
                )
                .await?;
            self.apply_change(
                app,
                Change::Removed {
                    list: rule.list,
                    kind: rule.kind,
                    state_key: rule.state_key,
                },
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn unban(
        &self,
        app: &Appservice,
        list: Option<OwnedRoomId>,
        entity: &str,
    ) -> Result<String> {
        let own = list.or_else(|| self.model().own_list.clone());
        let rules = self.rules_of(Kind::of_entity(entity), entity);
        let (mine, others): (Vec<Rule>, Vec<Rule>) = rules
            .into_iter()
            .partition(|r| own.as_ref().is_some_and(|o| o.as_str() == r.list));
        let Some(list) = own.filter(|_| !mine.is_empty()) else {
            return Ok(if others.is_empty() {
                format!("No rule for {entity} in any list I follow.")
            } else {
                let lists: Vec<&str> = others.iter().map(|r| r.list.as_str()).collect();
                format!(
                    "{entity} is banned by {}: name the list to remove the rule there ({}unban <list> {entity}).",
                    lists.join(", "),
                    self.settings().command_prefix
                )
            });
        };
        self.remove_rules(app, &list, mine).await?;
        let still = if others.is_empty() {
            String::new()
        } else {
            format!(" Other lists I follow still ban {entity}.")
        };
        Ok(format!("Removed the rule for {entity} from {list}.{still}"))
    }

    pub(super) async fn kick(
        &self,
        app: &Appservice,
        pattern: &str,
        reason: &str,
    ) -> Result<String> {
        let reason = (!reason.is_empty()).then_some(reason);
        let mut kicked = Vec::new();
        for room in self.protected_rooms() {
            for user in members(app, &room).await? {
                if app.is_own_user(&user) || !glob::matches(pattern, user.as_str()) {
                    continue;
                }
                app.bot().kick(&room, &user, reason).await?;
                kicked.push(format!("{user} from {room}"));
            }
        }
        if kicked.is_empty() {
            return Ok(format!("Nobody matching {pattern} is in a protected room."));
        }
        self.report(app, &format!("👢 kicked {} (command)", kicked.join(", ")))
            .await;
        Ok(format!("Kicked {}.", kicked.join(", ")))
    }

    pub(super) async fn redact(&self, app: &Appservice, user: &str, limit: u32) -> Result<String> {
        let user = UserId::parse(user)?;
        let mut total = 0;
        let mut lines = Vec::new();
        for room in self.protected_rooms() {
            let events = recent_events(app, &room, &user, limit).await?;
            for event_id in &events {
                app.bot()
                    .redact(&room, event_id, Some("moderation: redact command"))
                    .await?;
            }
            if !events.is_empty() {
                lines.push(format!("{} in {room}", events.len()));
                total += events.len();
            }
        }
        if total == 0 {
            return Ok(format!("No recent messages of {user} in protected rooms."));
        }
        self.report(
            app,
            &format!("🧹 redacted {total} events of {user}: {}", lines.join(", ")),
        )
        .await;
        Ok(format!(
            "Redacted {total} events of {user} ({}).",
            lines.join(", ")
        ))
    }
}

/// The hash a hashed rule of `entity` carries: of the server name in lower case, as servers
/// are matched; of the user ID or room ID or alias as typed.
fn entity_hash(kind: Kind, entity: &str) -> String {
    match kind {
        Kind::Server => sha256_base64(&entity.to_ascii_lowercase()),
        Kind::User | Kind::Room => sha256_base64(entity),
    }
}

/// The newest `limit` events `user` sent in `room` that are not state and not redacted yet.
pub(crate) async fn recent_events(
    app: &Appservice,
    room: &RoomId,
    user: &UserId,
    limit: u32,
) -> Result<Vec<OwnedEventId>> {
    #[derive(Deserialize)]
    struct Event {
        event_id: OwnedEventId,
        sender: String,
        #[serde(rename = "type")]
        event_type: String,
        state_key: Option<String>,
        #[serde(default)]
        content: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        unsigned: serde_json::Map<String, serde_json::Value>,
    }
    let mut found = Vec::new();
    let mut from: Option<String> = None;
    // A few pages at most: a moderator wants recent spam gone, not a history rewrite.
    for _ in 0..10 {
        let mut request =
            get_message_events::v3::Request::backward(room.to_owned()).from(from.clone());
        request.limit = UInt::from(100u32);
        let mut filter = RoomEventFilter::default();
        filter.senders = Some(vec![user.to_owned()]);
        request.filter = filter;
        let response = app
            .client()
            .send(request, AppserviceUserIdentity::default())
            .await?;
        for raw in &response.chunk {
            let Ok(event) = serde_json::from_str::<Event>(raw.json().get()) else {
                continue;
            };
            let redacted =
                event.unsigned.contains_key("redacted_because") || event.content.is_empty();
            if event.sender == user.as_str()
                && event.state_key.is_none()
                && event.event_type != "m.room.redaction"
                && !redacted
            {
                found.push(event.event_id);
                if found.len() >= limit as usize {
                    return Ok(found);
                }
            }
        }
        match response.end {
            Some(end) if !response.chunk.is_empty() && Some(&end) != from.as_ref() => {
                from = Some(end)
            }
            _ => break,
        }
    }
    Ok(found)
}
