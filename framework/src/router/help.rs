//! What the router does around command handlers: the built-in `help` command, and the checks a
//! [`CommandSpec`] asks for before its handler runs (the sender's power level, the number of
//! arguments). Refusals and help are answered by the bot as `m.notice` replies.
//!
//! Power levels are read from the room's current state each time a command that needs them is
//! used — never cached, so a promotion or demotion counts at once.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#mroompower_levels>,
//! <https://spec.matrix.org/v1.16/rooms/v12/#authorization-rules> (creators' infinite power)

use ruma::{
    Int, OwnedUserId, RoomId, UserId,
    api::{
        AppserviceUserIdentity,
        client::state::get_state_event_for_key::{self, v3::StateEventFormat},
    },
    events::{
        StateEventType,
        room::{
            create::RoomCreateEventContent,
            message::RoomMessageEventContent,
            power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, UserPowerLevel},
        },
    },
    room_version_rules::RoomVersionRules,
};
use serde::Deserialize;

use super::{Command, CommandSpec, EventContext};
use crate::{Appservice, Result};

/// The built-in help command's name.
pub(crate) const HELP: &str = "help";

/// The built-in help command, as it lists itself.
pub(crate) fn help_spec() -> CommandSpec {
    CommandSpec::new(HELP)
        .usage("[command]")
        .about("Lists the commands, or shows one.")
}

/// The help text, plain and HTML.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HelpText {
    pub(crate) plain: String,
    pub(crate) html: String,
}

/// Renders the help for `specs` (in their order). With the sender's `level` known, commands it
/// may not use are left out.
pub(crate) fn render(
    specs: &[&CommandSpec],
    prefix: &str,
    level: Option<UserPowerLevel>,
) -> HelpText {
    let usable: Vec<&&CommandSpec> = specs
        .iter()
        .filter(|spec| level.is_none_or(|level| allows(level, spec)))
        .collect();
    if usable.is_empty() {
        return HelpText {
            plain: "No commands.".to_owned(),
            html: "<p>No commands.</p>".to_owned(),
        };
    }
    let mut plain = String::from("Commands:");
    let mut html = String::from("<p>Commands:</p>\n<ul>\n");
    for spec in usable {
        let usage = spec.usage_line(prefix);
        let mut about = spec.about.clone().unwrap_or_default();
        if let Some(min) = spec.min_power {
            if !about.is_empty() {
                about.push(' ');
            }
            about.push_str(&format!("(power level {min})"));
        }
        plain.push('\n');
        plain.push_str(&usage);
        html.push_str(&format!("<li><code>{}</code>", escape(&usage)));
        if !about.is_empty() {
            plain.push_str(" — ");
            plain.push_str(&about);
            html.push_str(" — ");
            html.push_str(&escape(&about));
        }
        html.push_str("</li>\n");
    }
    html.push_str("</ul>");
    HelpText { plain, html }
}

/// Escapes text for HTML element content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `level` is enough for `spec`.
pub(crate) fn allows(level: UserPowerLevel, spec: &CommandSpec) -> bool {
    spec.min_power
        .is_none_or(|min| level >= UserPowerLevel::Int(Int::new_saturating(min)))
}

fn describe(level: UserPowerLevel) -> String {
    match level {
        UserPowerLevel::Int(level) => level.to_string(),
        // A room creator (room version 12 and later).
        _ => "infinite".to_owned(),
    }
}

/// The current power level of `user_id` in `room_id`, read as the bot from the room's
/// `m.room.create` event and `m.room.power_levels` state; room creators have
/// [`UserPowerLevel::Infinite`] from room version 12 on. For plugins that check power
/// themselves (a moderation bot's admins, say) rather than through [`CommandSpec::min_power`].
pub async fn power_level(
    app: &Appservice,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<UserPowerLevel> {
    let client = app.client();
    let mut create = get_state_event_for_key::v3::Request::new(
        room_id.to_owned(),
        StateEventType::RoomCreate,
        String::new(),
    );
    // The whole event: from room version 11 on, the creator is its `sender`.
    create.format = StateEventFormat::Event;
    let create = client
        .send(create, AppserviceUserIdentity::default())
        .await?
        .event_or_content;
    // No power levels yet: the spec's defaults apply.
    let power_levels: Option<Box<serde_json::value::RawValue>> = app
        .state_content(room_id, StateEventType::RoomPowerLevels, "")
        .await?;
    let levels = room_power_levels(create.get(), power_levels.as_deref().map(|p| p.get()))?;
    Ok(levels.for_user(user_id))
}

/// The effective power levels from the JSON of the `m.room.create` event and of the
/// `m.room.power_levels` content (`None` when the room has none), by the room version's rules.
pub(crate) fn room_power_levels(
    create_event: &str,
    power_levels: Option<&str>,
) -> Result<RoomPowerLevels> {
    #[derive(Deserialize)]
    struct CreateEvent {
        sender: OwnedUserId,
        content: RoomCreateEventContent,
    }
    let create: CreateEvent = serde_json::from_str(create_event)?;
    // An unknown (newer or experimental) room version: assume the newest rules we know.
    let rules = create
        .content
        .room_version
        .rules()
        .unwrap_or(RoomVersionRules::V12)
        .authorization;
    #[allow(deprecated)] // `creator` is how room versions 1 to 10 name the creator.
    let creator = match create.content.creator {
        Some(creator) if !rules.use_room_create_sender => creator,
        _ => create.sender,
    };
    let mut creators = vec![creator];
    if rules.additional_room_creators {
        creators.extend(create.content.additional_creators);
    }
    let content: Option<RoomPowerLevelsEventContent> =
        power_levels.map(serde_json::from_str).transpose()?;
    Ok(RoomPowerLevels::new(content.into(), &rules, creators))
}

/// The checks before a command's handler runs, for one event. The sender's level is read at
/// most once per event, and the bot answers at most once, however many routes share the
/// command.
#[derive(Default)]
pub(crate) struct Gate {
    level: Option<Option<UserPowerLevel>>,
    answered: bool,
}

impl Gate {
    /// Whether `spec`'s handler may run for `command`; if not, the bot says why (once).
    pub(crate) async fn admits(
        &mut self,
        ctx: &EventContext,
        spec: &CommandSpec,
        command: &Command,
        prefix: &str,
    ) -> bool {
        // The slow paths (a power level read, an answer sent) are boxed: inline, their futures
        // made every event's handling future kilobytes larger, and it is moved whole into its
        // box (`Upstream::handle`) whether a command needs them or not.
        if let Some(min) = spec.min_power {
            let level = Box::pin(self.level(ctx)).await;
            let refusal = match level {
                Some(level) if allows(level, spec) => None,
                Some(level) => Some(format!(
                    "{prefix}{} needs power level {min} in this room; yours is {}.",
                    spec.name,
                    describe(level)
                )),
                None => Some(format!(
                    "I could not check your power level in this room, so I did not run {prefix}{}.",
                    spec.name
                )),
            };
            if let Some(refusal) = refusal {
                Box::pin(self.answer(ctx, RoomMessageEventContent::notice_plain(refusal))).await;
                return false;
            }
        }
        // Split only where the usage requires arguments: most commands require none.
        let required = spec.required_args();
        if required > 0 && command.argv().len() < required {
            let usage = format!("Usage: {}", spec.usage_line(prefix));
            Box::pin(self.answer(ctx, RoomMessageEventContent::notice_plain(usage))).await;
            return false;
        }
        true
    }

    /// The sender's power level, read once per event; `None` if it could not be read.
    async fn level(&mut self, ctx: &EventContext) -> Option<UserPowerLevel> {
        if let Some(level) = self.level {
            return level;
        }
        let level = match (ctx.room_id(), ctx.sender()) {
            (Some(room_id), Some(sender)) => {
                match power_level(ctx.appservice(), room_id, sender).await {
                    Ok(level) => Some(level),
                    Err(error) => {
                        tracing::warn!(%room_id, %sender, %error, "could not read power levels");
                        None
                    }
                }
            }
            _ => None,
        };
        self.level = Some(level);
        level
    }

    /// Answers the built-in `help` command: every command (or the one asked about) that the
    /// sender may use.
    pub(crate) async fn help(
        &mut self,
        ctx: &EventContext,
        specs: &[&CommandSpec],
        command: &Command,
        prefix: &str,
    ) {
        let asked = command.argv().into_iter().next();
        let asked = asked
            .as_deref()
            .map(|name| name.strip_prefix(prefix).unwrap_or(name));
        let content = match asked {
            // One command, asked about by name: shown with the level it needs, usable or not.
            Some(name) => match specs.iter().find(|s| s.name == name) {
                Some(spec) => {
                    let text = render(&[spec], prefix, None);
                    RoomMessageEventContent::notice_html(text.plain, text.html)
                }
                // Maybe another bot's, if others are here: said only where it can be no one else's.
                None if !command.addressee.answers(ctx, false).await => return,
                None => RoomMessageEventContent::notice_plain(format!(
                    "There is no command {prefix}{name}. Try {prefix}{HELP}."
                )),
            },
            None => {
                let level = if specs.iter().any(|s| s.min_power.is_some()) {
                    self.level(ctx).await
                } else {
                    None
                };
                let text = render(specs, prefix, level);
                RoomMessageEventContent::notice_html(text.plain, text.html)
            }
        };
        self.answer(ctx, content).await;
    }

    /// Replies to the event as the bot, once per event. A failure is logged: the event has
    /// been handled either way.
    async fn answer(&mut self, ctx: &EventContext, content: RoomMessageEventContent) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        let (Some(room_id), Some(event_id), Some(sender)) =
            (ctx.room_id(), ctx.event_id(), ctx.sender())
        else {
            return;
        };
        let bot = ctx.appservice().bot();
        if let Err(error) = bot.reply(room_id, event_id, sender, None, content).await {
            tracing::warn!(%room_id, %event_id, %error, "could not answer a command");
        }
    }
}
