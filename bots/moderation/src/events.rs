//! What the bot does with each event: commands in the management room, rule changes in
//! followed lists, bans and protections in protected rooms, and invites.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use trestle::{
    Appservice, Result,
    router::{Command, EventContext, State},
    ruma::{OwnedEventId, RoomId, UserId, events::StateEventType},
    transaction::Incoming,
};

use crate::{
    bot::Moderation,
    commands::{self, Request},
    enforce::outcome,
    protections::{Message, Verdict},
};

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    content: Value,
    #[serde(default)]
    unsigned: Map<String, Value>,
    #[serde(default)]
    origin_server_ts: i64,
}

/// The router's one event handler. `command` is the event read as a command for this bot
/// (none when it names someone else).
pub async fn on_event(
    ctx: EventContext,
    command: Option<Command>,
    State(bot): State<Moderation>,
    app: Appservice,
) -> Result<()> {
    let Incoming::Timeline(timeline) = ctx.incoming() else {
        return Ok(());
    };
    let event: Event = serde_json::from_str(timeline.json.get())?;
    let room = timeline.room_id.as_ref();
    let sender = timeline.sender.as_ref();
    let event_type = timeline.event_type.as_str();
    let state_key = timeline.state_key.as_deref();
    bot.db(&app).await?;

    if event_type == "m.room.member" && state_key == Some(app.bot_user_id().as_str()) {
        if event.content["membership"] == "invite" {
            bot.invited(&app, room, sender).await?;
        }
        return Ok(());
    }

    let management = bot.management_room(&app).await.ok().flatten();
    // A command it does not have may be another bot's: see `Addressee::answers`.
    if management.as_deref() == Some(room)
        && let Some(command) = command
        && let known = commands::knows(&command, &bot.settings().command_prefix)
        && command.addressee.answers(&ctx, known).await
    {
        bot.command(
            &app,
            Request {
                room: room.to_owned(),
                event_id: timeline.event_id.clone(),
                sender: sender.to_owned(),
                command,
                trust: ctx.sender_trust(),
            },
        )
        .await?;
    }

    let (is_list, is_protected) = {
        let model = bot.model();
        (
            model.is_list(room.as_str()),
            model.is_protected(room.as_str()),
        )
    };
    if is_list {
        if let Some(state_key) = state_key
            && let Some(change) =
                trestle_policy::parse_event(room.as_str(), event_type, state_key, &event.content)
        {
            bot.apply_change(&app, change).await?;
        } else if event_type == "m.room.redaction" {
            // A redacted rule keeps its state key with empty content: read the list again.
            bot.sync_list(&app, room).await?;
        }
    }
    if is_protected {
        if event_type == "m.room.member"
            && let Some(user) = state_key.and_then(|k| UserId::parse(k).ok())
        {
            bot.membership(&app, room, &user, sender, &event).await;
        } else if event_type == "m.room.message" && state_key.is_none() {
            bot.message(&app, room, sender, &timeline.event_id, &event)
                .await;
        }
    }
    Ok(())
}

impl Moderation {
    /// The bot was invited: it joins its management room, and the first invite decides which
    /// room that is when the settings do not.
    async fn invited(&self, app: &Appservice, room: &RoomId, inviter: &UserId) -> Result<()> {
        let management = self.management_room(app).await?;
        if management.as_deref() != Some(room)
            && let Some(why) = self.refused_invite(room, inviter)
        {
            // Leaving is how an invite is rejected; the report says why, the inviter is not told.
            let outcome = outcome(
                app.bot().leave(room).await,
                "rejected it",
                "could not reject it",
            );
            self.report(
                app,
                &format!("🚫 invite to {room} from {inviter}: {why} → {outcome}"),
            )
            .await;
            return Ok(());
        }
        match management {
            Some(management) if management == room => {
                app.bot().join(room).await?;
            }
            Some(_) => {
                // Other rooms are joined by `rooms add` and `lists watch`, never on an invite.
            }
            None => {
                let claims = if self.settings().admins.is_empty() {
                    inviter.server_name() == app.server_name()
                } else {
                    self.is_admin(inviter)
                };
                if !claims {
                    tracing::info!(%room, %inviter, "ignoring an invite: not from an admin");
                    return Ok(());
                }
                self.set_management_room(app, room).await?;
                app.bot().join(room).await?;
                let text = format!(
                    "This is now my management room (set up by {inviter}). Say {}help for commands.",
                    self.settings().command_prefix
                );
                self.report(app, &text).await;
            }
        }
        Ok(())
    }

    /// Why an invite of the bot to `room` from `inviter` is rejected: a followed list bans the
    /// inviter (or their server), or the room.
    fn refused_invite(&self, room: &RoomId, inviter: &UserId) -> Option<String> {
        let model = self.model();
        if let Some(rule) = model.rules.user_banned(inviter.as_str()) {
            return Some(format!("the inviter is banned by {}", rule.describe()));
        }
        let rule = model.rules.room_rule(room.as_str())?;
        Some(format!("the room is banned by {}", rule.describe()))
    }

    /// Someone a followed list bans (or whose server it bans) invited `user` to a protected
    /// room: the invite is withdrawn (a kick of an invited user) and reported.
    async fn withdraw_banned_invite(
        &self,
        app: &Appservice,
        room: &RoomId,
        user: &UserId,
        inviter: &UserId,
    ) -> bool {
        let rule = self.model().rules.user_banned(inviter.as_str()).cloned();
        let Some(rule) = rule else {
            return false;
        };
        if app.is_own_user(inviter) {
            return false;
        }
        let reason = "invited by a user a policy list bans";
        let outcome = outcome(
            app.bot().kick(room, user, Some(reason)).await,
            "withdrew the invite",
            "could not withdraw the invite",
        );
        self.report(
            app,
            &format!(
                "🚫 {inviter} (banned by {}) invited {user} to {room} → {outcome}",
                rule.describe()
            ),
        )
        .await;
        true
    }

    /// The mass invite protection counts an invite `sender` sent in a protected room.
    async fn count_invite(
        &self,
        app: &Appservice,
        room: &RoomId,
        user: &UserId,
        sender: &UserId,
        event: &Event,
    ) {
        let config = self.model().room_protections(room.as_str()).invite_flood;
        let verdict = self.tracker().invited(
            room.as_str(),
            sender.as_str(),
            user.as_str(),
            event.origin_server_ts,
            &config,
        );
        if let Some(verdict) = verdict
            && !self.is_exempt(app, room, sender).await
        {
            self.act(app, room, sender, None, &verdict).await;
        }
    }

    /// A membership changed in a protected room.
    async fn membership(
        &self,
        app: &Appservice,
        room: &RoomId,
        user: &UserId,
        sender: &UserId,
        event: &Event,
    ) {
        let membership = event.content["membership"].as_str().unwrap_or_default();
        match membership {
            "join" | "invite" | "knock" => {
                self.deny_hashed_server(app, room, user).await;
                if self.ban_if_listed(app, room, user).await {
                    return;
                }
                if membership == "invite" {
                    if !self.withdraw_banned_invite(app, room, user, sender).await {
                        self.count_invite(app, room, user, sender, event).await;
                    }
                    return;
                }
                let was_joined = event
                    .unsigned
                    .get("prev_content")
                    .and_then(|p| p.get("membership"))
                    == Some(&json!("join"));
                if membership != "join" || was_joined || app.is_own_user(user) {
                    return;
                }
                let config = self.model().room_protections(room.as_str()).join_flood;
                let verdict = self.tracker().joined(
                    room.as_str(),
                    user.as_str(),
                    event.origin_server_ts,
                    &config,
                );
                if let Some(verdict) = verdict {
                    self.act(app, room, user, None, &verdict).await;
                }
            }
            _ => self.tracker().left(room.as_str(), user.as_str()),
        }
    }

    /// A hashed server rule names no server, so the ACL can deny one only once it is seen: a
    /// member from a server that such a rule matches has the room's ACL brought up to date.
    async fn deny_hashed_server(&self, app: &Appservice, room: &RoomId, user: &UserId) {
        let hashed = self
            .model()
            .rules
            .server_rule(user.server_name().as_str())
            .is_some_and(|rule| rule.entity.is_empty());
        if hashed && let Err(error) = self.update_acl(app, room).await {
            tracing::warn!(%room, %user, %error, "could not deny the server of a hashed rule");
        }
    }

    /// A message in a protected room: the protections look at it.
    async fn message(
        &self,
        app: &Appservice,
        room: &RoomId,
        sender: &UserId,
        event_id: &OwnedEventId,
        event: &Event,
    ) {
        if app.is_own_user(sender) {
            return;
        }
        let content = &event.content;
        let mentioned: Vec<String> = content["m.mentions"]["user_ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let message = Message {
            body: content["body"].as_str().unwrap_or_default(),
            formatted_body: content["formatted_body"].as_str(),
            mentioned: &mentioned,
        };
        let config = self.model().room_protections(room.as_str());
        let verdicts = self.tracker().message(
            room.as_str(),
            sender.as_str(),
            event.origin_server_ts,
            &message,
            &config,
        );
        if verdicts.is_empty() || self.is_exempt(app, room, sender).await {
            return;
        }
        for verdict in &verdicts {
            self.act(app, room, sender, Some(event_id), verdict).await;
        }
    }

    /// Carries out a protection's verdict and reports it with the user, room, event and rule.
    async fn act(
        &self,
        app: &Appservice,
        room: &RoomId,
        user: &UserId,
        event_id: Option<&OwnedEventId>,
        verdict: &Verdict,
    ) {
        let reason = format!("{}: {}", verdict.protection, verdict.detail);
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let bot = app.bot();
        if verdict.redact
            && let Some(event_id) = event_id
        {
            match bot.redact(room, event_id, Some(&reason)).await {
                Ok(_) => done.push("redacted the event"),
                Err(error) => failed.push(format!("redact: {error}")),
            }
        }
        if verdict.ban {
            match bot.ban(room, user, Some(&reason)).await {
                Ok(()) => done.push("banned the user"),
                Err(error) => failed.push(format!("ban: {error}")),
            }
        } else if verdict.kick {
            match bot.kick(room, user, Some(&reason)).await {
                Ok(()) => {
                    self.tracker().left(room.as_str(), user.as_str());
                    done.push("kicked the user")
                }
                Err(error) => failed.push(format!("kick: {error}")),
            }
        }
        let mut withdrawn = 0;
        for (room, invited) in &verdict.withdraw {
            let (Ok(room), Ok(invited)) = (RoomId::parse(room), UserId::parse(invited)) else {
                continue;
            };
            // Someone who already accepted stays: only a pending invite is withdrawn.
            let membership = app
                .state_content::<Value>(&room, StateEventType::RoomMember, invited.as_str())
                .await;
            let pending =
                matches!(&membership, Ok(Some(content)) if content["membership"] == "invite");
            if !pending {
                continue;
            }
            match bot.kick(&room, &invited, Some(&reason)).await {
                Ok(()) => withdrawn += 1,
                Err(error) => failed.push(format!("withdraw the invite of {invited}: {error}")),
            }
        }
        let withdrawn = format!("withdrew {withdrawn} invites");
        if !verdict.withdraw.is_empty() {
            done.push(&withdrawn);
        }
        if verdict.lock_room {
            let content = json!({"join_rule": "invite"});
            match bot
                .send_state_json(room, "m.room.join_rules", "", content, None)
                .await
            {
                Ok(_) => done.push("made the room invite-only"),
                Err(error) => failed.push(format!("join rules: {error}")),
            }
        }
        let event = event_id.map(|e| format!(", event {e}")).unwrap_or_default();
        let mut text = format!(
            "🛡 {} fired in {room} for {user}{event}: {} → {}",
            verdict.protection,
            verdict.detail,
            if done.is_empty() {
                "nothing done".to_owned()
            } else {
                done.join(", ")
            }
        );
        if !failed.is_empty() {
            text.push_str(&format!(" (failed: {})", failed.join("; ")));
        }
        self.report(app, &text).await;
    }
}
