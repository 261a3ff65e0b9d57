//! Which bot a command is for, when several bots that take commands share a room: reading
//! the bot a message names, and the rule for answering unknown commands (see [`Addressee`]).

use ruma::{
    OwnedUserId, RoomId, UserId,
    api::{AppserviceUserIdentity, client::membership::joined_members},
};

use super::{Command, EventContext};

/// Whom a command message names as its recipient.
///
/// A message can name the bot it is for: `!<bot> <command> args` (the bot's localpart, as
/// `!moderation status`; `!<bot>` alone asks for its help), or a leading mention —
/// `@bot:example.org: !status`, `bot: !status`, or a client's mention pill (the message's
/// `m.mentions` name the bot and its body starts with the bot's display name and a colon).
/// A message that names someone else is no command for this bot, even one it has. A bot's
/// own command names win over bot names: the echo bot reads `!echo hi` as its `echo`.
///
/// An unnamed command that a bot does not have may belong to another bot in the room, so a
/// bot answers "unknown command" only where no other member of the room is a known
/// command-taking bot: the other plugins of the same host that take commands with the same
/// prefix (the host tells each plugin), and the users given to
/// [`Router::other_bots`](super::Router::other_bots) (bots of other appservices, which
/// nothing tells apart from people). See [`Command::is_for_this_bot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Addressee {
    /// Nobody: `!name args` is for whichever bot takes `name`.
    Anyone,
    /// This bot, by name (`!bot name args`) or by a leading mention (`@bot:server: !name`).
    ThisBot,
    /// Someone else, named the same ways: another bot, or a person.
    Other(OwnedUserId),
}

/// What a bot knows when it reads a message for a command.
pub(crate) struct Reader<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) me: &'a UserId,
    /// The other bots that take commands with this prefix.
    pub(crate) others: &'a [OwnedUserId],
    /// Whether this bot has a command of that name.
    pub(crate) knows: &'a dyn Fn(&str) -> bool,
}

impl Reader<'_> {
    /// Reads `body` (without a reply fallback), sent with `mentions` (`m.mentions.user_ids`).
    pub(crate) fn read(&self, body: &str, mentions: &[OwnedUserId]) -> Option<Command> {
        if let Some(rest) = body.strip_prefix(self.prefix) {
            let (word, args) = first_word(rest)?;
            // The bot's own commands win over names: the echo bot's `!echo hi` echoes.
            if !(self.knows)(word)
                && let Some(bot) = self.bot_named(word)
            {
                return Some(self.addressed_by_name(bot, args));
            }
            return Some(command(word, args, Addressee::Anyone));
        }
        let (to, rest) = self.leading_mention(body, mentions)?;
        let (name, args) = first_word(rest.strip_prefix(self.prefix)?)?;
        Some(command(name, args, self.addressee(&to)))
    }

    /// `!<bot> [<prefix>]<name> args`; `!<bot>` alone asks for help.
    fn addressed_by_name(&self, bot: &UserId, rest: &str) -> Command {
        let rest = rest.strip_prefix(self.prefix).unwrap_or(rest);
        let (name, args) = first_word(rest).unwrap_or((super::help::HELP, ""));
        command(name, args, self.addressee(bot))
    }

    /// The user a message starts by addressing, and the rest of it (which must be a command):
    /// `@user:server[:,] `, `<bot localpart>[:,] `, or a pill's `<display name>: ` when the
    /// message mentions users.
    fn leading_mention<'b>(
        &self,
        body: &'b str,
        mentions: &[OwnedUserId],
    ) -> Option<(OwnedUserId, &'b str)> {
        if let Some((token, rest)) = body.split_once(char::is_whitespace)
            && let rest = rest.trim_start()
            && rest.starts_with(self.prefix)
        {
            let name = token.trim_end_matches([':', ',']);
            if name.starts_with('@') {
                return UserId::parse(name).ok().map(|user| (user, rest));
            }
            if name.len() < token.len()
                && let Some(bot) = self.bot_named(name)
            {
                return Some((bot.to_owned(), rest));
            }
        }
        // A pill: clients put the display name, then a colon, in the body.
        let (name, rest) = body.lines().next()?.split_once(':')?;
        let rest = rest.trim_start();
        if name.trim().is_empty() || !rest.starts_with(self.prefix) {
            return None;
        }
        let to = mentions
            .iter()
            .find(|user| *user == self.me)
            .or(mentions.first())?;
        Some((to.clone(), rest))
    }

    /// This bot or another known one, by localpart (any case).
    fn bot_named(&self, name: &str) -> Option<&UserId> {
        std::iter::once(self.me)
            .chain(self.others.iter().map(|u| &**u))
            .find(|bot| bot.localpart().eq_ignore_ascii_case(name))
    }

    fn addressee(&self, user: &UserId) -> Addressee {
        if user == self.me {
            Addressee::ThisBot
        } else {
            Addressee::Other(user.to_owned())
        }
    }
}

/// The first word of `text` and the rest after the whitespace that follows it.
fn first_word(text: &str) -> Option<(&str, &str)> {
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let (word, rest) = text.split_at(end);
    (!word.is_empty()).then(|| (word, rest.trim_start()))
}

fn command(name: &str, args: &str, addressee: Addressee) -> Command {
    Command {
        name: name.to_owned(),
        args: args.to_owned(),
        addressee,
    }
}

impl Addressee {
    /// Whether this bot should answer a command so addressed, given whether it has the
    /// command (`known`; for `help <name>`, whether it has `name`): never when the message
    /// names someone else; a command the bot has, always otherwise; one it does not have only
    /// when the message names this bot, or when no other member of the room is a known
    /// command-taking bot. Looks at the room's members only in that last case, and only when
    /// other command-taking bots are known.
    pub async fn answers(&self, ctx: &EventContext, known: bool) -> bool {
        match self {
            Addressee::Other(_) => false,
            Addressee::ThisBot => true,
            Addressee::Anyone if known => true,
            Addressee::Anyone => match ctx.room_id() {
                Some(room_id) => !other_bot_joined(ctx, room_id).await,
                None => false,
            },
        }
    }
}

/// Whether a known command-taking bot other than this one is joined to the room. When the
/// members cannot be read the answer is yes: the bot rather stays quiet than talks over
/// another.
async fn other_bot_joined(ctx: &EventContext, room_id: &RoomId) -> bool {
    let others = &ctx.app.inner.router.options.other_bots;
    if others.is_empty() {
        return false;
    }
    let request = joined_members::v3::Request::new(room_id.to_owned());
    match ctx
        .app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await
    {
        Ok(response) => others.iter().any(|bot| response.joined.contains_key(bot)),
        Err(error) => {
            tracing::warn!(%room_id, %error, "could not read the room's members");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_user_id, user_id};

    use super::*;

    fn read(body: &str, mentions: &[OwnedUserId]) -> Option<(String, String, Addressee)> {
        let others = [owned_user_id!("@notify:x"), owned_user_id!("@echo:x")];
        let reader = Reader {
            prefix: "!",
            me: user_id!("@moderation:x"),
            others: &others,
            knows: &|name| ["status", "help", "ban"].contains(&name),
        };
        reader
            .read(body, mentions)
            .map(|c| (c.name, c.args, c.addressee))
    }

    fn anyone(name: &str, args: &str) -> Option<(String, String, Addressee)> {
        Some((name.into(), args.into(), Addressee::Anyone))
    }

    fn to_me(name: &str, args: &str) -> Option<(String, String, Addressee)> {
        Some((name.into(), args.into(), Addressee::ThisBot))
    }

    fn to(user: &str, name: &str, args: &str) -> Option<(String, String, Addressee)> {
        let user = OwnedUserId::try_from(user).unwrap();
        Some((name.into(), args.into(), Addressee::Other(user)))
    }

    #[test]
    fn unnamed_commands_are_for_anyone() {
        assert_eq!(read("!status", &[]), anyone("status", ""));
        assert_eq!(
            read("!webhook create x", &[]),
            anyone("webhook", "create x")
        );
        assert_eq!(read("status", &[]), None);
        assert_eq!(read("!", &[]), None);
    }

    #[test]
    fn a_bot_named_after_the_prefix_gets_the_command() {
        assert_eq!(read("!moderation status", &[]), to_me("status", ""));
        assert_eq!(
            read("!Moderation !ban @x:y spam", &[]),
            to_me("ban", "@x:y spam")
        );
        assert_eq!(read("!moderation", &[]), to_me("help", ""));
        assert_eq!(
            read("!notify webhook list", &[]),
            to("@notify:x", "webhook", "list")
        );
        // An unknown bot is an unknown command.
        assert_eq!(read("!hookshot help", &[]), anyone("hookshot", "help"));
    }

    #[test]
    fn a_command_of_the_bots_own_wins_over_a_name() {
        let others = [owned_user_id!("@ban:x")];
        let reader = Reader {
            prefix: "!",
            me: user_id!("@status:x"),
            others: &others,
            knows: &|name| name == "status" || name == "ban",
        };
        let c = reader.read("!status now", &[]).unwrap();
        assert_eq!(
            (c.name.as_str(), c.addressee),
            ("status", Addressee::Anyone)
        );
        let c = reader.read("!ban @x:y", &[]).unwrap();
        assert_eq!((c.name.as_str(), c.addressee), ("ban", Addressee::Anyone));
    }

    #[test]
    fn a_leading_mention_names_the_recipient() {
        assert_eq!(read("@moderation:x: !status", &[]), to_me("status", ""));
        assert_eq!(read("@moderation:x !ban @a:b", &[]), to_me("ban", "@a:b"));
        assert_eq!(read("moderation: !frob", &[]), to_me("frob", ""));
        assert_eq!(
            read("notify, !feed list", &[]),
            to("@notify:x", "feed", "list")
        );
        assert_eq!(read("@alice:x: !status", &[]), to("@alice:x", "status", ""));
        // Without a command after it, a mention is just a message.
        assert_eq!(read("@moderation:x: hello", &[]), None);
        assert_eq!(read("moderation !status", &[]), None);
    }

    #[test]
    fn a_pill_names_the_mentioned_user() {
        let me = [owned_user_id!("@moderation:x")];
        let alice = [owned_user_id!("@alice:x")];
        assert_eq!(read("Mod Bot: !status", &me), to_me("status", ""));
        assert_eq!(
            read("Alice Liddell: !status", &alice),
            to("@alice:x", "status", "")
        );
        // With no mention, a colon is just text.
        assert_eq!(read("Mod Bot: !status", &[]), None);
        assert_eq!(read("note: see below\n!status", &me), None);
    }

    type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// A bot `@bot:x` with `!echo`, the built-in help, and a handler that logs every unknown
    /// command it would answer, knowing `@notify:x` takes commands too.
    async fn bot(hs: &crate::testing::MockHomeserver, log: &Log) -> crate::Appservice {
        use super::super::{Router, State};
        async fn echo(cmd: Command, State(log): State<Log>) {
            log.lock().unwrap().push(format!("echo {}", cmd.args));
        }
        async fn unknown(cmd: Command, ctx: EventContext, State(log): State<Log>) {
            if cmd.name != "echo" && cmd.name != "help" && cmd.is_for_this_bot(&ctx).await {
                log.lock().unwrap().push(format!("unknown {}", cmd.name));
            }
        }
        let router = Router::new()
            .help(true)
            .command("echo", echo)
            .on(unknown)
            .other_bots([owned_user_id!("@notify:x")])
            .with_state(log.clone());
        let registration =
            trestle_registration::Registration::generate("test", None, "bot", "t_", "x");
        crate::Appservice::builder(registration, hs.url.clone(), "x")
            .router(router)
            .build()
            .await
            .unwrap()
    }

    async fn mock() -> crate::testing::MockHomeserver {
        crate::testing::MockHomeserver::start(
            serde_json::json!({"type": "m.room.create", "sender": "@u:x", "state_key": "",
                   "event_id": "$create", "room_id": "!r:x", "origin_server_ts": 1,
                   "content": {"room_version": "12"}}),
            serde_json::json!({}),
        )
        .await
    }

    #[tokio::test]
    async fn commands_named_for_someone_else_are_left_to_them() {
        use crate::testing::{deliver, text};
        let hs = mock().await;
        let log = Log::default();
        let app = bot(&hs, &log).await;
        let mut pill = text("$6", "!r:x", "@u:x", "The Bot: !echo f");
        pill["content"]["m.mentions"] = serde_json::json!({"user_ids": ["@bot:x"]});
        deliver(
            &app,
            vec![
                text("$1", "!r:x", "@u:x", "!echo a"),
                text("$2", "!r:x", "@u:x", "!bot echo b"),
                text("$3", "!r:x", "@u:x", "!notify echo c"),
                text("$4", "!r:x", "@u:x", "@alice:x: !echo d"),
                text("$5", "!r:x", "@u:x", "@bot:x: !echo e"),
                pill,
                text("$7", "!r:x", "@u:x", "!notify help"),
                text("$8", "!r:x", "@u:x", "!bot"),
            ],
        )
        .await;
        assert_eq!(
            *log.lock().unwrap(),
            ["echo a", "echo b", "echo e", "echo f"]
        );
        let bodies = hs.bodies();
        assert_eq!(
            bodies.len(),
            1,
            "only `!bot` asked this bot for help: {bodies:?}"
        );
        assert!(bodies[0].starts_with("Commands:"), "{bodies:?}");
        assert_eq!(
            hs.member_reads.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "known and named commands need no look at the members"
        );
    }

    /// The command is read from the event's JSON as sent: a body with escapes, and an
    /// `m.mentions` that is null, malformed or absent, which must not hide the command.
    #[tokio::test]
    async fn commands_are_read_from_escaped_bodies_and_any_mentions() {
        use crate::testing::{deliver, text};
        let hs = mock().await;
        let log = Log::default();
        let app = bot(&hs, &log).await;
        let mut null = text("$2", "!r:x", "@u:x", "!echo b");
        null["content"]["m.mentions"] = serde_json::Value::Null;
        let mut malformed = text("$3", "!r:x", "@u:x", "!echo c");
        malformed["content"]["m.mentions"] = serde_json::json!({"user_ids": "@bot:x"});
        let mut number = text("$4", "!r:x", "@u:x", "!echo d");
        number["content"]["m.mentions"] = serde_json::json!(4);
        let mut pill = text("$5", "!r:x", "@u:x", "The Bot: !echo \"e\" \u{e9}");
        pill["content"]["m.mentions"] = serde_json::json!({"user_ids": ["@u:x", "@bot:x"]});
        deliver(
            &app,
            vec![
                text("$1", "!r:x", "@u:x", "!echo \"a\"\tz"),
                null,
                malformed,
                number,
                pill,
            ],
        )
        .await;
        assert_eq!(
            *log.lock().unwrap(),
            [
                "echo \"a\"\tz",
                "echo b",
                "echo c",
                "echo d",
                "echo \"e\" \u{e9}"
            ]
        );
    }

    #[tokio::test]
    async fn unknown_commands_are_answered_only_where_no_other_bot_may_know_them() {
        use crate::testing::{deliver, text};
        let hs = mock().await;
        let log = Log::default();
        let app = bot(&hs, &log).await;
        *hs.members.lock().unwrap() = vec!["@bot:x".into(), "@u:x".into(), "@notify:x".into()];
        deliver(
            &app,
            vec![
                text("$1", "!r:x", "@u:x", "!webhook create"),
                text("$2", "!r:x", "@u:x", "!help webhook"),
                text("$3", "!r:x", "@u:x", "!bot frob"),
                text("$4", "!r:x", "@u:x", "!bot help webhook"),
            ],
        )
        .await;
        assert_eq!(*log.lock().unwrap(), ["unknown frob"]);
        assert_eq!(
            hs.bodies(),
            ["There is no command !webhook. Try !help."],
            "said only when named"
        );
        // Alone with people, the bot answers what no one else can.
        *hs.members.lock().unwrap() = vec!["@bot:x".into(), "@u:x".into()];
        deliver(
            &app,
            vec![
                text("$5", "!r:x", "@u:x", "!webhook create"),
                text("$6", "!r:x", "@u:x", "!help webhook"),
            ],
        )
        .await;
        assert_eq!(*log.lock().unwrap(), ["unknown frob", "unknown webhook"]);
        assert_eq!(hs.bodies(), ["There is no command !webhook. Try !help."]);
    }
}
