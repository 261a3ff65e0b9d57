//! Commands in the management room. Each one answers, and only admins and members with
//! enough power there may use them.

mod actions;
mod parse;
mod protections;

use trestle::{
    Appservice, Result,
    encryption::SenderTrust,
    router::{Command, CommandSpec},
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
        events::room::message::RoomMessageEventContent,
    },
};

use trestle_policy::Kind;

use crate::{
    bot::{Moderation, resolve_room},
    protections::PROTECTIONS,
};
pub(crate) use actions::recent_events;
use parse::{Action, parse};

/// One command from the management room.
pub struct Request {
    /// The management room.
    pub room: OwnedRoomId,
    /// The command's event.
    pub event_id: OwnedEventId,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// Its name and arguments.
    pub command: Command,
    /// The trust of the device that sent it, when it came encrypted; `None` in a plain room.
    pub trust: Option<SenderTrust>,
}

/// Whether the bot has the command, or for `help <topic>`, the command or protection asked
/// about: a command it does not have may be another bot's.
pub fn knows(command: &Command, prefix: &str) -> bool {
    let has = |name: &str| {
        specs().iter().any(|s| s.name == name) || PROTECTIONS.iter().any(|(n, _)| *n == name)
    };
    match (command.name.as_str(), command.argv().first()) {
        ("help", Some(topic)) => has(topic.strip_prefix(prefix).unwrap_or(topic)),
        (name, _) => specs().iter().any(|s| s.name == name),
    }
}

/// The commands, for `help`.
pub fn specs() -> Vec<CommandSpec> {
    let spec =
        |name: &str, usage: &str, about: &str| CommandSpec::new(name).usage(usage).about(about);
    vec![
        spec(
            "status",
            "",
            "Shows the rooms, lists, rules and protections.",
        ),
        spec(
            "ban",
            "[list] <entity> [reason]",
            "Bans a user, room or server glob in every protected room, through the bot's own list or a followed one. Options, first: --hashed names one entity by its SHA-256 only (MSC4205), --takedown also redacts their recent events (MSC4204).",
        ),
        spec(
            "unban",
            "[list] <entity>",
            "Removes the rule (plain or hashed) from the bot's own list (or the followed one named), lifting its bans.",
        ),
        spec(
            "kick",
            "<user> [reason]",
            "Kicks a user (or a glob of users) from every protected room.",
        ),
        spec(
            "redact",
            "<user> [limit]",
            "Redacts the user's recent messages (25 unless given) in every protected room.",
        ),
        spec(
            "rooms",
            "<add|remove|list> [room]",
            "Protects a room, stops protecting one, or lists them.",
        ),
        spec(
            "lists",
            "<watch|unwatch|list> [room]",
            "Follows a policy list room, stops, or lists them.",
        ),
        spec(
            "protections",
            "<list|enable|disable|set> [name] [key value] [room]",
            "Shows or changes protections, for every protected room or for one.",
        ),
        spec("help", "", "Shows this help."),
    ]
}

impl Moderation {
    /// Handles a command from the management room: checks the sender, runs it, answers.
    pub async fn command(&self, app: &Appservice, request: Request) -> Result<()> {
        let name = request.command.name.as_str();
        if !self.may_command(app, &request.room, &request.sender).await {
            let answer = format!(
                "⛔ {} refused: {} is not an admin of this bot and has less than power level {} in this room.",
                name,
                request.sender,
                self.settings().command_power
            );
            return self.answer(app, &request, &answer).await;
        }
        // In an encrypted management room, a device its owner did not cross-sign could be
        // anyone's who got hold of the account's token: clients hide what such a device sends
        // (MSC4153), and the bot does not take orders from it.
        if let Some(trust @ (SenderTrust::NotCrossSigned | SenderTrust::Unknown)) = request.trust {
            let why = match trust {
                SenderTrust::Unknown => "whose keys I could not read",
                _ => "that its owner did not cross-sign",
            };
            let answer = format!(
                "⛔ {name} refused: {} sent it from a device {why}. Verify that session from another of yours, then try again.",
                request.sender
            );
            return self.answer(app, &request, &answer).await;
        }
        let answer = match self.run(app, &request).await {
            Ok(answer) => answer,
            Err(error) => format!("⚠ {name} failed: {error}"),
        };
        self.answer(app, &request, &answer).await
    }

    async fn answer(&self, app: &Appservice, request: &Request, text: &str) -> Result<()> {
        let content = RoomMessageEventContent::notice_plain(text);
        app.bot().send(&request.room, &content).await?;
        Ok(())
    }

    async fn run(&self, app: &Appservice, request: &Request) -> Result<String> {
        let action = match parse(&request.command, &self.settings().command_prefix) {
            Ok(action) => action,
            Err(answer) => return Ok(answer),
        };
        // `ban` and `unban` may name a followed list first; otherwise they use the bot's own.
        let (list, action) = match &action {
            Action::Ban {
                list: Some(first), ..
            }
            | Action::Unban {
                list: Some(first), ..
            } => match resolve_room(app, first).await {
                Ok(room) if self.model().is_list(room.as_str()) => (Some(room), action),
                _ => match action.list_was_entity() {
                    Some(action) => (None, action),
                    None => return Ok(parse::usage("unban", &self.settings().command_prefix)),
                },
            },
            _ => (None, action),
        };
        Ok(match action {
            Action::Help(None) => self.help(app),
            Action::Help(Some(topic)) => self.help_on(&topic),
            Action::Status => self.status(),
            Action::Ban {
                entity,
                reason,
                form,
                ..
            } => self.ban(app, request, list, &entity, &reason, form).await?,
            Action::Unban { entity, .. } => self.unban(app, list, &entity).await?,
            Action::Kick { user, reason } => self.kick(app, &user, &reason).await?,
            Action::Redact { user, limit } => self.redact(app, &user, limit).await?,
            Action::RoomsList => self.rooms_list(),
            Action::RoomsAdd(room) => self.rooms_add(app, &room).await?,
            Action::RoomsRemove(room) => self.rooms_remove(app, &room).await?,
            Action::ListsList => self.lists_list(),
            Action::ListsWatch(room) => self.lists_watch(app, &room).await?,
            Action::ListsUnwatch(room) => self.lists_unwatch(app, &room).await?,
            Action::ProtectionsList { room } => self.protections_list(app, room.as_deref()).await?,
            Action::ProtectionSet {
                name,
                key,
                value,
                room,
            } => {
                self.protection_set(app, room.as_deref(), &name, &key, value)
                    .await?
            }
        })
    }

    /// `help <topic>`: one command or protection.
    fn help_on(&self, topic: &str) -> String {
        let prefix = self.settings().command_prefix.as_str();
        if let Some(spec) = specs().into_iter().find(|s| s.name == topic) {
            return format!(
                "{} — {}",
                spec.usage_line(prefix),
                spec.about.unwrap_or_default()
            );
        }
        match PROTECTIONS.iter().find(|(name, _)| *name == topic) {
            Some((name, about)) => {
                format!("Protection {name} — {about} Its settings: {prefix}protections list.")
            }
            None => format!("There is no command {prefix}{topic}. Say {prefix}help for the list."),
        }
    }

    fn help(&self, app: &Appservice) -> String {
        let prefix = self.settings().command_prefix.as_str();
        let mut out = String::from("Commands (admins and members with enough power here):\n");
        for spec in specs() {
            out.push_str(&format!(
                "{} — {}\n",
                spec.usage_line(prefix),
                spec.about.unwrap_or_default()
            ));
        }
        out.push_str("Protections:\n");
        for (name, about) in PROTECTIONS {
            out.push_str(&format!("{name} — {about}\n"));
        }
        out.push_str(&format!(
            "With other bots in this room, {prefix}{} <command> is for me alone. \
             Quote an argument that has spaces: \"spam, scam\".\n",
            app.bot_user_id().localpart()
        ));
        out
    }

    fn status(&self) -> String {
        let model = self.model();
        let mut out = String::new();
        out.push_str(&format!(
            "Management room: {}\n",
            model
                .management_room
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "none".into())
        ));
        out.push_str(&format!("Protected rooms ({}):\n", model.protected.len()));
        for room in &model.protected {
            let config = model.room_protections(room);
            let on: Vec<&str> = [
                (
                    config.word_filter.enabled,
                    crate::protections::WordFilter::NAME,
                ),
                (config.flood.enabled, crate::protections::Flood::NAME),
                (
                    config.mention_spam.enabled,
                    crate::protections::MentionSpam::NAME,
                ),
                (
                    config.join_flood.enabled,
                    crate::protections::JoinFlood::NAME,
                ),
                (config.link_spam.enabled, crate::protections::LinkSpam::NAME),
            ]
            .into_iter()
            .filter_map(|(enabled, name)| enabled.then_some(name))
            .collect();
            out.push_str(&format!(
                "  {room} — protections: {}\n",
                if on.is_empty() {
                    "none".to_owned()
                } else {
                    on.join(", ")
                }
            ));
        }
        out.push_str(&format!("Policy lists ({}):\n", model.lists.len()));
        for list in &model.lists {
            let own = model.own_list.as_ref().is_some_and(|o| o.as_str() == list);
            let count = |kind: Kind| {
                model
                    .rules
                    .rules()
                    .iter()
                    .filter(|r| &r.list == list && r.kind == kind)
                    .count()
            };
            out.push_str(&format!(
                "  {list}{} — {} user, {} room, {} server rules\n",
                if own { " (own)" } else { "" },
                count(Kind::User),
                count(Kind::Room),
                count(Kind::Server)
            ));
        }
        out
    }

    fn rooms_list(&self) -> String {
        let model = self.model();
        if model.protected.is_empty() {
            return "No protected rooms.".into();
        }
        format!("Protected rooms:\n{}", model.protected.join("\n"))
    }

    async fn rooms_add(&self, app: &Appservice, room: &str) -> Result<String> {
        let typed = room;
        let room = resolve_room(app, room).await?;
        if self.management_room(app).await?.is_some_and(|m| m == room) {
            return Ok("The management room cannot be protected.".into());
        }
        let aliases: Vec<&str> = [typed].into_iter().filter(|t| t.starts_with('#')).collect();
        if let Some(rule) = self.room_rule(app, &room, &aliases).await {
            return Ok(format!(
                "{room} is banned by {}: I will not protect it.",
                rule.describe()
            ));
        }
        app.bot().join(&room).await?;
        let db = self.db(app).await?;
        if !db.protect(room.as_str()).await? {
            return Ok(format!("{room} is already protected."));
        }
        self.model().protected.push(room.to_string());
        let missing = crate::enforce::missing_powers(app, &room).await?;
        let members = crate::enforce::Members::of(app, &room).await?;
        let banned = self.ban_listed_members(app, &room, &members).await;
        self.update_acl_among(app, &room, &members).await?;
        let warning = if missing.is_empty() {
            String::new()
        } else {
            format!(
                " ⚠ I lack the power to {} there: give me a higher power level.",
                missing.join(", ")
            )
        };
        Ok(format!(
            "Protecting {room}; the rules banned {banned} of its members.{warning}"
        ))
    }

    async fn rooms_remove(&self, app: &Appservice, room: &str) -> Result<String> {
        let room = resolve_room(app, room).await?;
        let removed = self.db(app).await?.unprotect(room.as_str()).await?;
        self.model().protected.retain(|r| r != room.as_str());
        Ok(if removed {
            format!("{room} is no longer protected; I stay in it, and leave it as it is.")
        } else {
            format!("{room} was not protected.")
        })
    }

    fn lists_list(&self) -> String {
        let model = self.model();
        if model.lists.is_empty() {
            return "No policy lists followed.".into();
        }
        let lines: Vec<String> = model
            .lists
            .iter()
            .map(|list| {
                let count = model
                    .rules
                    .rules()
                    .iter()
                    .filter(|r| &r.list == list)
                    .count();
                let own = model.own_list.as_ref().is_some_and(|o| o.as_str() == list);
                format!("{list}{}: {count} rules", if own { " (own)" } else { "" })
            })
            .collect();
        format!("Policy lists:\n{}", lines.join("\n"))
    }

    async fn lists_watch(&self, app: &Appservice, room: &str) -> Result<String> {
        let room = resolve_room(app, room).await?;
        app.bot().join(&room).await?;
        self.watch_list(app, &room).await?;
        let count = self.sync_list(app, &room).await?;
        Ok(format!("Following {room}: {count} ban rules."))
    }

    /// Remembers that `room` is a followed list.
    pub async fn watch_list(&self, app: &Appservice, room: &RoomId) -> Result<()> {
        self.db(app).await?.watch(room.as_str()).await?;
        let mut model = self.model();
        if !model.is_list(room.as_str()) {
            model.lists.push(room.to_string());
        }
        Ok(())
    }

    async fn lists_unwatch(&self, app: &Appservice, room: &str) -> Result<String> {
        let room = resolve_room(app, room).await?;
        if !self.model().is_list(room.as_str()) {
            return Ok(format!("{room} is not followed."));
        }
        self.drop_list(app, room.as_str()).await?;
        Ok(format!(
            "No longer following {room}; bans made for its rules were lifted."
        ))
    }
}
