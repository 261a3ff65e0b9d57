//! The management room: a direct chat of one user with the bot, where commands need no
//! prefix (`!` is accepted too).

use std::collections::BTreeMap;

use ruma::{OwnedUserId, RoomId, events::room::message::RoomMessageEventContent};
use serde_json::Value;
use trestle::transaction::TimelineEvent;

use super::{
    BridgeError, BridgeHandle, LoginRequest, Network, NetworkResult, portal::resolve_room,
};

/// The commands, with their usage, for `help`.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("help", "", "Shows this list."),
    ("login", "<fields…>", "Logs you in to the network."),
    (
        "logout",
        "[login]",
        "Logs you out (of one login, if you have several).",
    ),
    (
        "link",
        "<room id or alias> <chat>",
        "Links a room to a remote chat.",
    ),
    (
        "unlink",
        "<room id or alias>",
        "Unlinks a room from its chat.",
    ),
    ("list", "", "Lists the portals."),
    ("status", "", "Shows your logins and their connections."),
    (
        "relay",
        "<room id or alias> on|off",
        "Turns relay mode on or off in a portal.",
    ),
    (
        "double-puppet",
        "[on|off]",
        "Shows your messages from the network as your own account (on) or your ghost (off).",
    ),
];

/// Greets a user in their new management room.
pub(crate) async fn welcome<N: Network>(
    bridge: &BridgeHandle<N>,
    room_id: &RoomId,
) -> NetworkResult<()> {
    let protocol = bridge.network().protocol().displayname;
    let text = format!(
        "Hello! This is your management room for the {protocol} bridge. Send `help` for the commands."
    );
    reply(bridge, room_id, &text).await
}

async fn reply<N: Network>(
    bridge: &BridgeHandle<N>,
    room_id: &RoomId,
    text: &str,
) -> NetworkResult<()> {
    bridge
        .app()?
        .bot()
        .send(room_id, &RoomMessageEventContent::notice_plain(text))
        .await?;
    Ok(())
}

/// The fields of a `login` command: `key=value` words by name, other words in the order of
/// [`Network::login_fields`].
pub(crate) fn login_fields(
    names: &[&str],
    args: &[&str],
) -> NetworkResult<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    let mut positional = names.iter();
    for arg in args {
        if let Some((key, value)) = arg.split_once('=')
            && names.contains(&key)
        {
            fields.insert(key.to_owned(), value.to_owned());
        } else if let Some(name) = positional.find(|n| !fields.contains_key(**n)) {
            fields.insert((*name).to_owned(), (*arg).to_owned());
        } else {
            return Err(BridgeError::BadRequest(format!(
                "too many arguments; login takes {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    Ok(fields)
}

/// Runs one command from the management room's owner and answers it.
pub(crate) async fn handle<N: Network>(
    bridge: &BridgeHandle<N>,
    event: &TimelineEvent,
    json: &Value,
) -> NetworkResult<()> {
    let Some(text) = json["content"]["body"].as_str() else {
        return Ok(());
    };
    let text = text.trim();
    let text = text.strip_prefix('!').unwrap_or(text);
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((command, args)) = words.split_first() else {
        return Ok(());
    };
    let answer = match run(bridge, &event.sender, &command.to_lowercase(), args).await {
        Ok(answer) => answer,
        Err(BridgeError::Trestle(error)) => {
            tracing::error!(%error, command, "management command failed");
            "Something went wrong on the bridge; the error is in its log.".to_owned()
        }
        Err(error) => format!("{command} failed: {error}"),
    };
    reply(bridge, &event.room_id, &answer).await
}

async fn run<N: Network>(
    bridge: &BridgeHandle<N>,
    sender: &OwnedUserId,
    command: &str,
    args: &[&str],
) -> NetworkResult<String> {
    match command {
        "help" => Ok(help(bridge)),
        "login" => {
            let fields = login_fields(bridge.network().login_fields(), args)?;
            let request = LoginRequest {
                fields,
                ..LoginRequest::new(sender.clone())
            };
            let login = bridge.login(request).await?;
            Ok(format!(
                "Logged in as {} ({}).",
                login.remote_name, login.id
            ))
        }
        "logout" => {
            let logins = bridge.logins(sender).await?;
            let login = match (args.first(), logins.as_slice()) {
                (Some(id), _) => logins.iter().find(|l| l.id == *id),
                (None, [only]) => Some(only),
                (None, []) => None,
                (None, _) => {
                    return Err(BridgeError::BadRequest(
                        "you have several logins: say which one".into(),
                    ));
                }
            };
            let Some(login) = login else {
                return Err(BridgeError::NotLoggedIn);
            };
            bridge.logout(sender, &login.id).await?;
            Ok(format!("Logged out of {}.", login.id))
        }
        "link" => {
            let [room, chat] = args else {
                return Err(BridgeError::BadRequest(
                    "usage: link <room id or alias> <chat>".into(),
                ));
            };
            let room_id = resolve_room(&bridge.app()?, room).await?;
            let chat: N::ChatId = chat
                .parse()
                .map_err(|_| BridgeError::BadRequest(format!("`{chat}` is not a chat")))?;
            bridge.link(&chat, &room_id, sender).await?;
            Ok(format!("Linked {room_id} to {chat}."))
        }
        "unlink" => {
            let [room] = args else {
                return Err(BridgeError::BadRequest(
                    "usage: unlink <room id or alias>".into(),
                ));
            };
            let room_id = resolve_room(&bridge.app()?, room).await?;
            let chat = bridge.unlink(&room_id, sender).await?;
            Ok(format!("Unlinked {room_id} from {chat}."))
        }
        "list" => {
            let portals = bridge.portals().await?;
            if portals.is_empty() {
                return Ok("No portals yet.".into());
            }
            let lines: Vec<String> = portals
                .iter()
                .map(|p| {
                    let relay = if p.relay { " (relay)" } else { "" };
                    format!("{} → {}{relay}", p.chat, p.room_id)
                })
                .collect();
            Ok(format!("Portals:\n{}", lines.join("\n")))
        }
        "status" => {
            let logins = bridge.logins(sender).await?;
            if logins.is_empty() {
                return Ok("You are not logged in.".into());
            }
            let lines: Vec<String> = logins
                .iter()
                .map(|l| {
                    let reason = l
                        .state
                        .reason()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    format!("{} as {}: {}{reason}", l.id, l.remote_name, l.state.name())
                })
                .collect();
            Ok(lines.join("\n"))
        }
        "relay" => {
            let [room, setting] = args else {
                return Err(BridgeError::BadRequest(
                    "usage: relay <room id or alias> on|off".into(),
                ));
            };
            let on = on_off(setting)?;
            let room_id = resolve_room(&bridge.app()?, room).await?;
            bridge.set_relay(&room_id, on, sender).await?;
            Ok(format!("Relay mode is {setting} in {room_id}."))
        }
        "double-puppet" => double_puppet(bridge, sender, args).await,
        other => Ok(format!(
            "Unknown command `{other}`. Send `help` for the commands."
        )),
    }
}

/// `on` or `off` as a boolean.
fn on_off(setting: &str) -> NetworkResult<bool> {
    match setting {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(BridgeError::BadRequest(format!(
            "`{other}` is not on or off"
        ))),
    }
}

async fn double_puppet<N: Network>(
    bridge: &BridgeHandle<N>,
    sender: &OwnedUserId,
    args: &[&str],
) -> NetworkResult<String> {
    let protocol = bridge.network().protocol().displayname;
    let on = match args {
        [] => bridge.double_puppeting(sender).await?,
        [setting] => {
            let on = on_off(setting)?;
            bridge.set_double_puppeting(sender, on).await?;
            on
        }
        _ => {
            return Err(BridgeError::BadRequest(
                "usage: double-puppet [on|off]".into(),
            ));
        }
    };
    Ok(if on {
        format!("Double puppeting is on: what you send on {protocol} shows as your own account.")
    } else {
        format!("Double puppeting is off: what you send on {protocol} shows as your ghost.")
    })
}

fn help<N: Network>(bridge: &BridgeHandle<N>) -> String {
    let fields = bridge.network().login_fields();
    let mut lines = vec!["Commands:".to_owned()];
    for (name, usage, about) in COMMANDS {
        let usage = if *name == "login" && !fields.is_empty() {
            fields
                .iter()
                .map(|f| format!("<{f}>"))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            (*usage).to_owned()
        };
        let usage = if usage.is_empty() {
            String::new()
        } else {
            format!(" {usage}")
        };
        lines.push(format!("{name}{usage}: {about}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_fields_by_position_and_by_name() {
        let names = ["server", "nick", "password"];
        let fields = login_fields(&names, &["irc.example", "password=x", "ada"]).unwrap();
        assert_eq!(fields["server"], "irc.example");
        assert_eq!(fields["nick"], "ada");
        assert_eq!(fields["password"], "x");
        let error = login_fields(&["nick"], &["a", "b"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("too many arguments"), "{error}");
    }
}
