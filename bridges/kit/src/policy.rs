//! Policy lists in the kit: Matrix users banned by the lists a bridge follows
//! ([`super::BridgeConfig::policy_lists`]) are not bridged. Their events in portals do not reach
//! the network (they are told why once, in the room), their joins are kicked (when the bot has
//! the power), and their logins do not connect. Rooms they ban are not bridged (module
//! `rooms`).

mod rooms;

use std::{collections::HashSet, sync::Mutex};
use trestle::sync::MutexExt;

use ruma::{OwnedUserId, UserId, events::room::message::RoomMessageEventContent};
use serde_json::Value;
use trestle::transaction::TimelineEvent;
use trestle_policy::{PolicyLists, Rule};

use super::{BridgeError, BridgeHandle, Network, NetworkResult};

/// The lists a bridge follows, and whom it has told already.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) lists: PolicyLists,
    told: Mutex<HashSet<OwnedUserId>>,
    /// Portals left for a room rule.
    left: rooms::Left,
}

impl Gate {
    /// A gate for these lists; none when there are none.
    pub(crate) fn new(lists: &[String]) -> Option<Gate> {
        (!lists.is_empty()).then(|| Gate {
            lists: PolicyLists::new(lists.iter().cloned()),
            told: Mutex::new(HashSet::new()),
            left: rooms::Left::default(),
        })
    }

    /// Whether `user` is told now: the first time since they were last found not banned.
    fn tell(&self, user: &UserId, banned: bool) -> bool {
        let mut told = self.told.lock_unpoisoned();
        if banned {
            told.insert(user.to_owned())
        } else {
            told.remove(user);
            false
        }
    }
}

/// What a refusal says.
fn refusal(rule: &Rule) -> String {
    // A hashed rule (MSC4205) names no entity: its label is the hash.
    if rule.reason.is_empty() {
        format!("banned by the policy list {} ({})", rule.list, rule.label())
    } else {
        format!(
            "banned by the policy list {} ({}): {}",
            rule.list,
            rule.label(),
            rule.reason
        )
    }
}

impl<N: Network> BridgeHandle<N> {
    /// The rule of the followed policy lists banning `user`, if any. A list that cannot be
    /// read bans nobody (it is logged, and read again later).
    pub async fn banned(&self, user: &UserId) -> NetworkResult<Option<Rule>> {
        let Some(gate) = &self.shared.policy else {
            return Ok(None);
        };
        match gate.lists.check_user(&self.app()?, user).await {
            Ok(rule) => Ok(rule),
            Err(error) => {
                tracing::warn!(%user, %error, "policy lists unreadable: not checked");
                Ok(None)
            }
        }
    }

    /// Refuses a login of `user` whom the lists ban.
    pub(crate) async fn refuse_login(&self, user: &UserId) -> NetworkResult<()> {
        match self.banned(user).await? {
            Some(rule) => Err(BridgeError::Forbidden(format!(
                "Not connected: {}",
                refusal(&rule)
            ))),
            None => Ok(()),
        }
    }

    /// Ends the live connections of a user the lists now ban (made before the rule came): they
    /// are marked as needing a new login, which is refused while the rule stands.
    async fn disconnect_banned(&self, user: &UserId, rule: &Rule) -> NetworkResult<()> {
        for login in self.logins(user).await? {
            if self.connection(user, &login.id).is_none() {
                continue;
            }
            self.drop_connection(user, &login.id).await;
            let state = super::ConnectionState::BadCredentials(refusal(rule));
            self.set_login_state(user, &login.id, state).await?;
        }
        Ok(())
    }

    /// Whether `event` (a message, reaction, redaction, or a join) in a portal comes from a
    /// user the lists ban: then it is not bridged, a join is kicked, and the user is told why
    /// once.
    pub(crate) async fn refused(&self, event: &TimelineEvent, json: &Value) -> NetworkResult<bool> {
        let Some(gate) = &self.shared.policy else {
            return Ok(false);
        };
        let join = event.event_type == "m.room.member"
            && event.state_key.as_deref() == Some(event.sender.as_str())
            && json["content"]["membership"] == "join";
        let relevant = join
            || matches!(
                event.event_type.as_str(),
                "m.room.message" | "m.reaction" | "m.room.redaction"
            );
        if !relevant || self.portal_for_room(&event.room_id).await?.is_none() {
            return Ok(false);
        }
        let rule = self.banned(&event.sender).await?;
        let first = gate.tell(&event.sender, rule.is_some());
        let Some(rule) = rule else {
            return Ok(false);
        };
        let app = self.app()?;
        let protocol = self.network().protocol().displayname;
        if first {
            self.disconnect_banned(&event.sender, &rule).await?;
        }
        if join {
            let reason = format!("Not bridged to {protocol}: {}", refusal(&rule));
            match app
                .bot()
                .kick(&event.room_id, &event.sender, Some(&reason))
                .await
            {
                Ok(()) => return Ok(true),
                Err(error) => {
                    tracing::info!(user = %event.sender, %error, "could not kick a banned user")
                }
            }
        }
        if first {
            let notice = RoomMessageEventContent::notice_plain(format!(
                "{}: what you send here is not bridged to {protocol}: {}",
                event.sender,
                refusal(&rule)
            ));
            app.bot().send(&event.room_id, &notice).await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_lists_no_gate_and_a_banned_user_is_told_once_per_ban() {
        assert!(Gate::new(&[]).is_none());
        let gate = Gate::new(&["#bans:example.org".to_owned()]).unwrap();
        let user = UserId::parse("@mallory:example.org").unwrap();
        assert!(gate.tell(&user, true));
        assert!(!gate.tell(&user, true));
        assert!(!gate.tell(&user, false));
        assert!(gate.tell(&user, true), "banned again: told again");
    }

    #[test]
    fn a_refusal_names_the_list_the_rule_and_its_reason() {
        let rule = Rule::ban(
            "!list:example.org",
            trestle_policy::Kind::User,
            "r",
            "@mall*:example.org",
            "",
        );
        assert_eq!(
            refusal(&rule),
            "banned by the policy list !list:example.org (@mall*:example.org)"
        );
        let rule = Rule {
            reason: "spam".into(),
            ..rule
        };
        assert!(refusal(&rule).ends_with("(@mall*:example.org): spam"));
        let hashed = Rule {
            entity: String::new(),
            sha256: Some("W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk".into()),
            ..rule
        };
        assert!(
            refusal(&hashed)
                .ends_with("(sha256:W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk): spam")
        );
    }
}
