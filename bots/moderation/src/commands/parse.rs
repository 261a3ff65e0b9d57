//! Reading a command's arguments into what to do, before anything is done: the forms
//! docs/moderation.md documents, each tested below.

use serde_json::Value;
use trestle::router::Command;

use super::specs;
use crate::protections::parse_value;

/// What a command asks for.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Action {
    /// `help [command or protection]`.
    Help(Option<String>),
    Status,
    /// `ban [--hashed] [--takedown] [list] <entity> [reason]`. `list` is the first argument
    /// after the options when it is a room and more follow; only when the command runs is it
    /// known whether that room is a followed list (otherwise it is the entity, see
    /// [`Action::list_was_entity`]).
    Ban {
        list: Option<String>,
        entity: String,
        reason: String,
        form: BanForm,
    },
    /// `unban [list] <entity>`.
    Unban {
        list: Option<String>,
        entity: String,
    },
    Kick {
        user: String,
        reason: String,
    },
    Redact {
        user: String,
        limit: u32,
    },
    RoomsList,
    RoomsAdd(String),
    RoomsRemove(String),
    ListsList,
    ListsWatch(String),
    ListsUnwatch(String),
    /// `protections list [room]`.
    ProtectionsList {
        room: Option<String>,
    },
    /// `protections enable|disable|set …`: `enable` sets `enabled` to `true`.
    ProtectionSet {
        name: String,
        key: String,
        value: Value,
        room: Option<String>,
    },
}

/// How `ban` writes its rule: the options before its arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct BanForm {
    /// `--hashed`: the rule names its entity only by SHA-256 (MSC4205).
    pub(super) hashed: bool,
    /// `--takedown`: the rule recommends `org.matrix.msc4204.takedown` rather than `m.ban`.
    pub(super) takedown: bool,
}

/// `ban`'s leading options, and the arguments after them.
fn ban_form<'a>(args: &'a [&'a str]) -> Result<(BanForm, &'a [&'a str]), String> {
    let mut form = BanForm::default();
    let mut rest = args;
    while let Some((first, after)) = rest.split_first() {
        match *first {
            "--hashed" => form.hashed = true,
            "--takedown" => form.takedown = true,
            option if option.starts_with("--") => {
                return Err(format!(
                    "ban has no option {option}: it takes --hashed and --takedown"
                ));
            }
            _ => break,
        }
        rest = after;
    }
    Ok((form, rest))
}

/// What `protections` answers to a form it does not know.
pub(super) const PROTECTIONS_USAGE: &str = "usage: protections list [room] | protections enable|disable <name> [room] | protections set <name> <key> <value> [room] (quote a value with spaces: \"spam, scam\")";

/// Reads `command`; the error is the answer: the command's usage, or why an argument is wrong.
pub(super) fn parse(command: &Command, prefix: &str) -> Result<Action, String> {
    let argv = command.argv();
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let name = command.name.as_str();
    let text = |s: &[&str]| s.join(" ");
    let one = |s: &str| s.to_owned();
    let (form, args) = match name {
        "ban" => ban_form(&args)?,
        _ => (BanForm::default(), args.as_slice()),
    };
    Ok(match (name, args) {
        ("help", []) => Action::Help(None),
        ("help", [topic, ..]) => {
            Action::Help(Some(topic.strip_prefix(prefix).unwrap_or(topic).to_owned()))
        }
        ("status", _) => Action::Status,
        ("ban", [first, entity, reason @ ..]) if is_room(first) => Action::Ban {
            list: Some(one(first)),
            entity: one(entity),
            reason: text(reason),
            form,
        },
        ("ban", [entity, reason @ ..]) => Action::Ban {
            list: None,
            entity: one(entity),
            reason: text(reason),
            form,
        },
        ("unban", [entity]) => Action::Unban {
            list: None,
            entity: one(entity),
        },
        ("unban", [list, entity]) if is_room(list) => Action::Unban {
            list: Some(one(list)),
            entity: one(entity),
        },
        ("kick", [user, reason @ ..]) => Action::Kick {
            user: one(user),
            reason: text(reason),
        },
        ("redact", [user]) => Action::Redact {
            user: one(user),
            limit: 25,
        },
        ("redact", [user, limit]) => match limit.parse::<u32>() {
            Ok(limit) if (1..=1000).contains(&limit) => Action::Redact {
                user: one(user),
                limit,
            },
            _ => {
                return Err(format!(
                    "the limit must be a number from 1 to 1000, not `{limit}`"
                ));
            }
        },
        ("rooms", ["list"]) => Action::RoomsList,
        ("rooms", ["add", room]) => Action::RoomsAdd(one(room)),
        ("rooms", ["remove", room]) => Action::RoomsRemove(one(room)),
        ("lists", ["list"]) => Action::ListsList,
        ("lists", ["watch", room]) => Action::ListsWatch(one(room)),
        ("lists", ["unwatch", room]) => Action::ListsUnwatch(one(room)),
        ("protections", args) => protections(args)?,
        _ => return Err(usage(name, prefix)),
    })
}

/// `protections …`, whose optional room comes last.
fn protections(args: &[&str]) -> Result<Action, String> {
    let (args, room) = match args.split_last() {
        Some((last, rest)) if is_room(last) => (rest, Some(last.to_string())),
        _ => (args, None),
    };
    let set = |name: &str, key: &str, value: Value| Action::ProtectionSet {
        name: name.to_owned(),
        key: key.to_owned(),
        value,
        room: room.clone(),
    };
    Ok(match args {
        [] | ["list"] => Action::ProtectionsList { room: room.clone() },
        ["enable", name] => set(name, "enabled", Value::Bool(true)),
        ["disable", name] => set(name, "enabled", Value::Bool(false)),
        ["set", name, key, value] => set(name, key, parse_value(value)),
        _ => return Err(PROTECTIONS_USAGE.into()),
    })
}

/// A room ID or alias.
fn is_room(arg: &str) -> bool {
    arg.starts_with('!') || arg.starts_with('#')
}

/// The answer to a form the command does not have: its usage, or for an unknown command, so.
pub(super) fn usage(name: &str, prefix: &str) -> String {
    match specs().into_iter().find(|s| s.name == name) {
        Some(spec) => format!("usage: {}", spec.usage_line(prefix)),
        None => format!("Unknown command {name}; say {prefix}help for the list."),
    }
}

impl Action {
    /// The `ban` or `unban` read as if its first argument were not a list: for a room named
    /// first that the bot does not follow. `None` for an `unban`, which then has one argument
    /// too many.
    pub(super) fn list_was_entity(self) -> Option<Action> {
        match self {
            Action::Ban {
                list: Some(first),
                entity,
                reason,
                form,
            } => Some(Action::Ban {
                list: None,
                reason: if reason.is_empty() {
                    entity
                } else {
                    format!("{entity} {reason}")
                },
                entity: first,
                form,
            }),
            Action::Unban { list: Some(_), .. } => None,
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The action for a message, as the management room would read it.
    fn read(body: &str) -> Result<Action, String> {
        let command = Command::parse_body(body, "!", None).expect("a command");
        parse(&command, "!")
    }

    fn set(name: &str, key: &str, value: Value, room: Option<&str>) -> Result<Action, String> {
        Ok(Action::ProtectionSet {
            name: name.into(),
            key: key.into(),
            value,
            room: room.map(Into::into),
        })
    }

    #[test]
    fn status_and_help() {
        assert_eq!(read("!status"), Ok(Action::Status));
        assert_eq!(read("!help"), Ok(Action::Help(None)));
        assert_eq!(read("!help ban"), Ok(Action::Help(Some("ban".into()))));
        assert_eq!(read("!help !ban"), Ok(Action::Help(Some("ban".into()))));
    }

    #[test]
    fn ban_entity_and_reason() {
        assert_eq!(
            read("!ban @spam*:example.org spamming links"),
            Ok(Action::Ban {
                list: None,
                entity: "@spam*:example.org".into(),
                reason: "spamming links".into(),
                form: BanForm::default(),
            })
        );
        assert_eq!(
            read("!ban *.evil.example"),
            Ok(Action::Ban {
                list: None,
                entity: "*.evil.example".into(),
                reason: String::new(),
                form: BanForm::default(),
            })
        );
        assert_eq!(
            read(r#"!ban @x:y "quoted reason""#),
            Ok(Action::Ban {
                list: None,
                entity: "@x:y".into(),
                reason: "quoted reason".into(),
                form: BanForm::default(),
            })
        );
    }

    #[test]
    fn ban_options_come_first() {
        assert_eq!(
            read("!ban --hashed --takedown !list:example.org @spammer:example.org csam"),
            Ok(Action::Ban {
                list: Some("!list:example.org".into()),
                entity: "@spammer:example.org".into(),
                reason: "csam".into(),
                form: BanForm {
                    hashed: true,
                    takedown: true
                },
            })
        );
        assert_eq!(
            read("!ban --takedown @x:y"),
            Ok(Action::Ban {
                list: None,
                entity: "@x:y".into(),
                reason: String::new(),
                form: BanForm {
                    hashed: false,
                    takedown: true
                },
            })
        );
        // After the entity, an option is part of the reason.
        assert!(matches!(
            read("!ban @x:y --hashed"),
            Ok(Action::Ban { form, reason, .. }) if form == BanForm::default() && reason == "--hashed"
        ));
        assert_eq!(
            read("!ban --hash @x:y"),
            Err("ban has no option --hash: it takes --hashed and --takedown".into())
        );
        assert_eq!(
            read("!ban --hashed"),
            Err("usage: !ban [list] <entity> [reason]".into())
        );
    }

    #[test]
    fn ban_in_a_named_list() {
        let ban = read("!ban #community-bans:example.org @raid*:example.org raid").unwrap();
        assert_eq!(
            ban,
            Action::Ban {
                list: Some("#community-bans:example.org".into()),
                entity: "@raid*:example.org".into(),
                reason: "raid".into(),
                form: BanForm::default(),
            }
        );
        // A room banned with a reason, when that room is no followed list.
        assert_eq!(
            ban.list_was_entity(),
            Some(Action::Ban {
                list: None,
                entity: "#community-bans:example.org".into(),
                reason: "@raid*:example.org raid".into(),
                form: BanForm::default(),
            })
        );
    }

    #[test]
    fn unban_entity_or_in_a_named_list() {
        assert_eq!(
            read("!unban @spam*:example.org"),
            Ok(Action::Unban {
                list: None,
                entity: "@spam*:example.org".into(),
            })
        );
        let unban = read("!unban !list:example.org @raid*:example.org").unwrap();
        assert_eq!(
            unban,
            Action::Unban {
                list: Some("!list:example.org".into()),
                entity: "@raid*:example.org".into(),
            }
        );
        assert_eq!(unban.list_was_entity(), None);
        assert_eq!(
            read("!unban @a:b @c:d"),
            Err("usage: !unban [list] <entity>".into())
        );
    }

    #[test]
    fn kick_user_glob_and_reason() {
        assert_eq!(
            read("!kick @bot*:example.org go away"),
            Ok(Action::Kick {
                user: "@bot*:example.org".into(),
                reason: "go away".into(),
            })
        );
        assert_eq!(read("!kick"), Err("usage: !kick <user> [reason]".into()));
    }

    #[test]
    fn redact_user_and_limit() {
        let redact = |limit| {
            Ok(Action::Redact {
                user: "@x:y".into(),
                limit,
            })
        };
        assert_eq!(read("!redact @x:y"), redact(25));
        assert_eq!(read("!redact @x:y 100"), redact(100));
        assert!(read("!redact @x:y 1001").unwrap_err().contains("1 to 1000"));
        assert!(
            read("!redact @x:y many")
                .unwrap_err()
                .contains("not `many`")
        );
    }

    #[test]
    fn rooms_add_remove_list() {
        assert_eq!(
            read("!rooms add #public:example.org"),
            Ok(Action::RoomsAdd("#public:example.org".into()))
        );
        assert_eq!(
            read("!rooms remove !abc:example.org"),
            Ok(Action::RoomsRemove("!abc:example.org".into()))
        );
        assert_eq!(read("!rooms list"), Ok(Action::RoomsList));
        assert_eq!(
            read("!rooms"),
            Err("usage: !rooms <add|remove|list> [room]".into())
        );
    }

    #[test]
    fn lists_watch_unwatch_list() {
        assert_eq!(
            read("!lists watch #bans:example.org"),
            Ok(Action::ListsWatch("#bans:example.org".into()))
        );
        assert_eq!(
            read("!lists unwatch !bans:example.org"),
            Ok(Action::ListsUnwatch("!bans:example.org".into()))
        );
        assert_eq!(read("!lists list"), Ok(Action::ListsList));
    }

    #[test]
    fn protections_list_everywhere_or_in_a_room() {
        assert_eq!(
            read("!protections list"),
            Ok(Action::ProtectionsList { room: None })
        );
        assert_eq!(
            read("!protections"),
            Ok(Action::ProtectionsList { room: None })
        );
        assert_eq!(
            read("!protections list #public:example.org"),
            Ok(Action::ProtectionsList {
                room: Some("#public:example.org".into())
            })
        );
    }

    #[test]
    fn protections_enable_and_disable() {
        assert_eq!(
            read("!protections enable flood"),
            set("flood", "enabled", json!(true), None)
        );
        assert_eq!(
            read("!protections disable link-spam !abc:example.org"),
            set(
                "link-spam",
                "enabled",
                json!(false),
                Some("!abc:example.org")
            )
        );
    }

    #[test]
    fn protections_set_a_number_or_a_boolean() {
        assert_eq!(
            read("!protections set flood max_messages 3"),
            set("flood", "max_messages", json!(3), None)
        );
        assert_eq!(
            read("!protections set flood ban true #public:example.org"),
            set("flood", "ban", json!(true), Some("#public:example.org"))
        );
    }

    #[test]
    fn protections_set_a_json_list_as_typed() {
        assert_eq!(
            read(r#"!protections set word-filter words ["a","b"]"#),
            set("word-filter", "words", json!(["a", "b"]), None)
        );
        assert_eq!(
            read(r#"!protections set word-filter words ["bad word", "scam"] !abc:example.org"#),
            set(
                "word-filter",
                "words",
                json!(["bad word", "scam"]),
                Some("!abc:example.org")
            )
        );
        assert_eq!(
            read(r#"!protections set word-filter patterns ["\\bspam\\b"]"#),
            set("word-filter", "patterns", json!([r"\bspam\b"]), None)
        );
    }

    #[test]
    fn protections_set_quoted_text() {
        // Text where a list is wanted is split at commas when it is set.
        assert_eq!(
            read(r#"!protections set word-filter words "spam, scam""#),
            set("word-filter", "words", json!("spam, scam"), None)
        );
        assert_eq!(
            read(r"!protections set word-filter patterns \bspam\b"),
            set("word-filter", "patterns", json!(r"\bspam\b"), None)
        );
        assert_eq!(
            read("!protections set word-filter words spam, scam"),
            Err(PROTECTIONS_USAGE.into()),
            "a value with spaces must be quoted"
        );
    }

    #[test]
    fn unknown_commands_say_so() {
        assert_eq!(
            read("!frobnicate"),
            Err("Unknown command frobnicate; say !help for the list.".into())
        );
    }
}
