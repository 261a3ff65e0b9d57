//! Moderation policy lists, for every plugin: the `m.policy.rule.user`, `m.policy.rule.room`
//! and `m.policy.rule.server` state events of policy list rooms, parsed into [`Rule`]s, and
//! matched against users, rooms and servers with their globs or, for a rule that names its
//! entity only by hash (MSC4205), the entity's SHA-256. Bans and takedowns (MSC4204) are kept. [`PolicyLists`] follows a set of
//! lists and answers "is this user (room, server) banned?" — what a bridge asks before letting
//! someone in; the moderation bot applies the same rules in the rooms it protects.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#moderation-policy-lists>

pub mod glob;
mod lists;

pub use lists::{PolicyLists, read_list, resolve_room};

use serde::Deserialize;

/// What a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `m.policy.rule.user`: a user ID glob.
    User,
    /// `m.policy.rule.room`: a room ID (or alias) glob.
    Room,
    /// `m.policy.rule.server`: a server name glob.
    Server,
}

impl Kind {
    /// The stable event type this bot writes.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::User => "m.policy.rule.user",
            Kind::Room => "m.policy.rule.room",
            Kind::Server => "m.policy.rule.server",
        }
    }

    /// The kind of a policy event type: the stable name, and the older `m.room.rule.*` and
    /// `org.matrix.mjolnir.rule.*` names that existing lists still use.
    pub fn from_event_type(event_type: &str) -> Option<Kind> {
        let suffix = event_type
            .strip_prefix("m.policy.rule.")
            .or_else(|| event_type.strip_prefix("m.room.rule."))
            .or_else(|| event_type.strip_prefix("org.matrix.mjolnir.rule."))?;
        match suffix {
            "user" => Some(Kind::User),
            "room" => Some(Kind::Room),
            "server" => Some(Kind::Server),
            _ => None,
        }
    }

    /// The name stored in the database and shown to moderators.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Room => "room",
            Kind::Server => "server",
        }
    }

    /// The inverse of [`Kind::as_str`].
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "user" => Some(Kind::User),
            "room" => Some(Kind::Room),
            "server" => Some(Kind::Server),
            _ => None,
        }
    }

    /// What an entity typed in a command is about: `@user:server`, `!room` or `#alias`,
    /// otherwise a server name.
    pub fn of_entity(entity: &str) -> Kind {
        match entity.chars().next() {
            Some('@') => Kind::User,
            Some('!') | Some('#') => Kind::Room,
            _ => Kind::Server,
        }
    }
}

/// What a rule asks of those who follow the list. Rules with any other recommendation are
/// ignored, as the spec says of unknown ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Recommendation {
    /// `m.ban` (and the older `org.matrix.mjolnir.ban`): keep the entity out.
    #[default]
    Ban,
    /// `org.matrix.msc4204.takedown` ([MSC4204](https://github.com/matrix-org/matrix-spec-proposals/pull/4204)):
    /// a ban whose entity's content should also go from view, and whose reason is not repeated
    /// where others see it.
    Takedown,
}

impl Recommendation {
    /// The recommendation of a rule's `recommendation` field, if it is one acted on.
    pub fn parse(recommendation: &str) -> Option<Recommendation> {
        match recommendation {
            "m.ban" | "org.matrix.mjolnir.ban" => Some(Recommendation::Ban),
            "org.matrix.msc4204.takedown" | "m.takedown" => Some(Recommendation::Takedown),
            _ => None,
        }
    }

    /// The name stored in the database and written in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::Ban => "m.ban",
            Recommendation::Takedown => "org.matrix.msc4204.takedown",
        }
    }
}

/// One rule of a list that is acted on: a ban or a takedown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The policy list room the rule is in.
    pub list: String,
    /// What the rule is about.
    pub kind: Kind,
    /// The state key of the rule's event: with the kind and list, what identifies it.
    pub state_key: String,
    /// The glob of users, rooms or servers it bans; empty for a rule that names its entity
    /// only by hash ([`Rule::sha256`]).
    pub entity: String,
    /// Why, as the list says.
    pub reason: String,
    /// What the rule recommends.
    pub recommendation: Recommendation,
    /// The entity's SHA-256 as unpadded base64, for a rule without a plain `entity`
    /// ([MSC4205](https://github.com/matrix-org/matrix-spec-proposals/pull/4205)): the list
    /// need not say whom it bans for the rule to match them.
    pub sha256: Option<String>,
}

impl Rule {
    /// A ban rule of a plain entity glob, as the bot writes them.
    pub fn ban(list: &str, kind: Kind, state_key: &str, entity: &str, reason: &str) -> Rule {
        Rule {
            list: list.to_owned(),
            kind,
            state_key: state_key.to_owned(),
            entity: entity.to_owned(),
            reason: reason.to_owned(),
            recommendation: Recommendation::Ban,
            sha256: None,
        }
    }

    /// What the rule is about, for reports and for the records of what it did: the entity
    /// glob, or `sha256:<hash>` for a hashed rule.
    pub fn label(&self) -> String {
        match &self.sha256 {
            Some(hash) if self.entity.is_empty() => format!("sha256:{hash}"),
            _ => self.entity.clone(),
        }
    }

    /// `rule <label> in <list>`, for reports: the rule and where it comes from.
    pub fn describe(&self) -> String {
        format!("rule {} in {}", self.label(), self.list)
    }

    /// Whether the rule matches `text` (a user ID, room ID or alias, server name): its glob,
    /// or the hash of exactly `text`.
    pub fn matches(&self, text: &str) -> bool {
        if !self.entity.is_empty() {
            return glob::matches(&self.entity, text);
        }
        self.sha256
            .as_deref()
            .is_some_and(|hash| hash == sha256_base64(text))
    }

    /// Whether this (server) rule matches the server name `server`: names are not
    /// case-sensitive, and a hashed rule matches the hash of the name in lower case.
    pub fn matches_server(&self, server: &str) -> bool {
        self.matches_server_hashed(&server.to_ascii_lowercase(), &mut None)
    }

    /// [`Rule::matches_server`] for a name already in lower case, its hash made at most once
    /// in `hash` however many rules a caller asks about it.
    fn matches_server_hashed(&self, server: &str, hash: &mut Option<String>) -> bool {
        if !self.entity.is_empty() {
            return glob::matches(&self.entity.to_ascii_lowercase(), server);
        }
        let Some(wanted) = self.sha256.as_deref() else {
            return false;
        };
        wanted == hash.get_or_insert_with(|| sha256_base64(server)).as_str()
    }
}

/// The unpadded standard base64 of the SHA-256 of `entity`: how MSC4205 names an entity in a
/// rule's `hashes.sha256`.
pub fn sha256_base64(entity: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(entity.as_bytes());
    ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(&digest[..]).encode()
}

/// What a policy state event says: a rule, or that the rule under this state key is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A ban rule is set (new, or replacing the one under this state key).
    Set(Rule),
    /// No ban rule under this state key any more: removed (empty content), redacted, or
    /// replaced by a recommendation this bot does not act on.
    Removed {
        /// The list room.
        list: String,
        /// The kind, from the event type.
        kind: Kind,
        /// The state key.
        state_key: String,
    },
}

#[derive(Deserialize)]
struct RuleContent {
    entity: Option<String>,
    recommendation: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    hashes: Option<Hashes>,
}

#[derive(Deserialize)]
struct Hashes {
    sha256: Option<String>,
}

/// Reads a policy state event of `event_type` with `state_key` and `content` in `list`;
/// `None` when the type is not a policy rule.
pub fn parse_event(
    list: &str,
    event_type: &str,
    state_key: &str,
    content: &serde_json::Value,
) -> Option<Change> {
    let kind = Kind::from_event_type(event_type)?;
    let removed = || Change::Removed {
        list: list.to_owned(),
        kind,
        state_key: state_key.to_owned(),
    };
    let Ok(content) = RuleContent::deserialize(content) else {
        return Some(removed());
    };
    let Some(recommendation) = content
        .recommendation
        .as_deref()
        .and_then(Recommendation::parse)
    else {
        return Some(removed());
    };
    let entity = content.entity.unwrap_or_default();
    // A plain entity wins: the hash is then only a copy of it (MSC4205).
    let sha256 = content
        .hashes
        .and_then(|h| h.sha256)
        .filter(|_| entity.is_empty())
        .and_then(|h| unpadded_sha256(&h));
    if entity.is_empty() && sha256.is_none() {
        return Some(removed());
    }
    Some(Change::Set(Rule {
        list: list.to_owned(),
        kind,
        state_key: state_key.to_owned(),
        entity,
        reason: content.reason.unwrap_or_default(),
        recommendation,
        sha256,
    }))
}

/// `hash` as unpadded base64 if it reads as a SHA-256 in base64, padded or not: anything else
/// could never match, so the rule is not kept.
fn unpadded_sha256(hash: &str) -> Option<String> {
    ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(hash)
        .ok()
        .filter(|bytes| bytes.as_bytes().len() == 32)
        .map(|bytes| bytes.encode())
}

/// The ban rules of every followed list.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    rules: Vec<Rule>,
}

impl PolicySet {
    /// A set of these rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        PolicySet { rules }
    }

    /// Every rule.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Applies a change; returns the rule it replaced or removed, if any.
    pub fn apply(&mut self, change: &Change) -> Option<Rule> {
        let (list, kind, state_key) = match change {
            Change::Set(rule) => (&rule.list, rule.kind, &rule.state_key),
            Change::Removed {
                list,
                kind,
                state_key,
            } => (list, *kind, state_key),
        };
        let old = self
            .rules
            .iter()
            .position(|r| &r.list == list && r.kind == kind && &r.state_key == state_key)
            .map(|i| self.rules.remove(i));
        if let Change::Set(rule) = change {
            self.rules.push(rule.clone());
        }
        old
    }

    /// Drops every rule of `list`; returns them.
    pub fn remove_list(&mut self, list: &str) -> Vec<Rule> {
        let (gone, kept) = std::mem::take(&mut self.rules)
            .into_iter()
            .partition(|r| r.list == list);
        self.rules = kept;
        gone
    }

    /// The first user rule banning `user_id`.
    pub fn user_rule(&self, user_id: &str) -> Option<&Rule> {
        self.matching(Kind::User, user_id)
    }

    /// The first room rule banning `room` (a room ID or alias).
    pub fn room_rule(&self, room: &str) -> Option<&Rule> {
        self.matching(Kind::Room, room)
    }

    /// The first server rule banning `server` (server names are not case-sensitive; a hashed
    /// rule matches the hash of the name in lower case).
    pub fn server_rule(&self, server: &str) -> Option<&Rule> {
        let server = server.to_ascii_lowercase();
        let mut hash = None;
        self.rules
            .iter()
            .find(|r| r.kind == Kind::Server && r.matches_server_hashed(&server, &mut hash))
    }

    /// The first room rule banning the room `room_id` or any of its `aliases`: what a plugin
    /// asks before protecting or bridging a room.
    pub fn room_banned<'a>(
        &self,
        room_id: &'a str,
        aliases: impl IntoIterator<Item = &'a str>,
    ) -> Option<&Rule> {
        let mut names = vec![room_id];
        names.extend(aliases);
        names.into_iter().find_map(|name| self.room_rule(name))
    }

    /// Whether `user_id` is banned: by a user rule, or because its server is.
    pub fn user_banned(&self, user_id: &str) -> Option<&Rule> {
        self.user_rule(user_id).or_else(|| {
            let server = user_id.split_once(':')?.1;
            self.server_rule(server)
        })
    }

    /// The server globs to deny in `m.room.server_acl`, sorted and without duplicates; never
    /// one that matches `own_server`, which would lock the bot out of its own rooms. Hashed
    /// rules have no name to put there: they are left out.
    pub fn server_denies(&self, own_server: &str) -> Vec<String> {
        let own = own_server.to_ascii_lowercase();
        let mut deny: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.kind == Kind::Server && !r.entity.is_empty())
            .map(|r| r.entity.to_ascii_lowercase())
            .filter(|e| !glob::matches(e, &own))
            .collect();
        deny.sort();
        deny.dedup();
        deny
    }

    /// [`PolicySet::server_denies`], and each of `seen` that a hashed server rule matches. A hash
    /// names no server, so a hashed rule can deny only servers the caller knows of: those of a
    /// room's members, past and present, and those its ACL already denies (so that a denied
    /// server stays denied while its rule stands). Never `own_server`.
    pub fn server_denies_among<'a>(
        &self,
        own_server: &str,
        seen: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let own = own_server.to_ascii_lowercase();
        let mut deny = self.server_denies(own_server);
        for server in seen {
            let server = server.to_ascii_lowercase();
            let mut hash = None;
            let hashed_ban = self.rules.iter().any(|r| {
                r.kind == Kind::Server
                    && r.entity.is_empty()
                    && r.matches_server_hashed(&server, &mut hash)
            });
            if hashed_ban && server != own {
                deny.push(server);
            }
        }
        deny.sort();
        deny.dedup();
        deny
    }

    fn matching(&self, kind: Kind, text: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.kind == kind)
            .find(|r| r.matches(text))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(list: &str, event_type: &str, key: &str, content: serde_json::Value) -> Rule {
        match parse_event(list, event_type, key, &content) {
            Some(Change::Set(rule)) => rule,
            other => panic!("expected a rule, got {other:?}"),
        }
    }

    #[test]
    fn rules_of_every_event_type_name_parse() {
        let content =
            json!({"entity": "@spam*:evil.example", "recommendation": "m.ban", "reason": "spam"});
        let rule = set("!list", "m.policy.rule.user", "r1", content.clone());
        assert_eq!(rule.kind, Kind::User);
        assert_eq!(rule.entity, "@spam*:evil.example");
        assert_eq!(rule.reason, "spam");
        assert_eq!(
            set("!list", "m.room.rule.server", "r2", content.clone()).kind,
            Kind::Server
        );
        assert_eq!(
            set("!list", "org.matrix.mjolnir.rule.room", "r3", content).kind,
            Kind::Room
        );
        let legacy = json!({"entity": "evil.example", "recommendation": "org.matrix.mjolnir.ban"});
        let rule = set("!list", "m.policy.rule.server", "r4", legacy);
        assert_eq!(rule.reason, "");
        assert_eq!(
            parse_event("!list", "m.room.message", "", &json!({})),
            None,
            "not a policy event"
        );
    }

    #[test]
    fn empty_redacted_or_unknown_content_removes_the_rule() {
        for content in [
            json!({}),
            json!({"entity": "@a:b", "recommendation": "org.example.mute"}),
            json!({"recommendation": "m.ban"}),
            json!({"entity": "", "recommendation": "m.ban"}),
            json!({"entity": 5, "recommendation": "m.ban"}),
        ] {
            assert_eq!(
                parse_event("!list", "m.policy.rule.user", "k", &content),
                Some(Change::Removed {
                    list: "!list".into(),
                    kind: Kind::User,
                    state_key: "k".into()
                }),
                "{content}"
            );
        }
    }

    #[test]
    fn a_set_matches_users_rooms_and_servers_and_follows_changes() {
        let mut set_ = PolicySet::default();
        let user = set(
            "!l",
            "m.policy.rule.user",
            "u",
            json!({"entity": "@spam*:localhost", "recommendation": "m.ban"}),
        );
        set_.apply(&Change::Set(user.clone()));
        set_.apply(&Change::Set(set(
            "!l",
            "m.policy.rule.server",
            "s",
            json!({"entity": "*.Evil.example", "recommendation": "m.ban"}),
        )));
        set_.apply(&Change::Set(set(
            "!l",
            "m.policy.rule.room",
            "r",
            json!({"entity": "#bad:*", "recommendation": "m.ban"}),
        )));
        assert_eq!(set_.user_rule("@spammer:localhost"), Some(&user));
        assert_eq!(set_.user_rule("@alice:localhost"), None);
        assert!(set_.user_banned("@alice:matrix.evil.example").is_some());
        assert!(set_.server_rule("MATRIX.EVIL.EXAMPLE").is_some());
        assert!(set_.room_rule("#bad:localhost").is_some());
        assert!(set_.room_rule("#good:localhost").is_none());

        // A new rule under the same key replaces the old one; an empty one removes it.
        let replaced = set_.apply(&Change::Set(set(
            "!l",
            "m.policy.rule.user",
            "u",
            json!({"entity": "@other:localhost", "recommendation": "m.ban"}),
        )));
        assert_eq!(replaced, Some(user));
        assert!(set_.user_rule("@spammer:localhost").is_none());
        let removed =
            set_.apply(&parse_event("!l", "m.policy.rule.user", "u", &json!({})).unwrap());
        assert_eq!(removed.unwrap().entity, "@other:localhost");
        assert!(set_.user_rule("@other:localhost").is_none());
        assert_eq!(set_.remove_list("!l").len(), 2);
        assert!(set_.rules().is_empty());
    }

    #[test]
    fn acl_denies_never_include_our_own_server() {
        let rules = ["evil.example", "*", "*.example", "evil.example", "local*"]
            .iter()
            .enumerate()
            .map(|(i, e)| Rule::ban("!l", Kind::Server, &i.to_string(), e, ""))
            .collect();
        let set_ = PolicySet::new(rules);
        assert_eq!(
            set_.server_denies("localhost"),
            vec!["*.example".to_owned(), "evil.example".to_owned()]
        );
    }

    #[test]
    fn hashed_server_rules_deny_the_servers_seen_that_they_hash() {
        let hashed = |key: &str, server: &str| {
            set(
                "!l",
                "m.policy.rule.server",
                key,
                json!({"hashes": {"sha256": sha256_base64(server)}, "recommendation": "m.ban"}),
            )
        };
        let plain = Rule::ban("!l", Kind::Server, "p", "plain.example", "");
        let set_ = PolicySet::new(vec![
            hashed("h1", "evil.example"),
            hashed("h2", "localhost"),
            plain,
        ]);
        // Alone, a hash denies nothing: it names no server.
        assert_eq!(set_.server_denies("localhost"), vec!["plain.example"]);
        // Among the servers seen, those it hashes (in any case), never our own.
        assert_eq!(
            set_.server_denies_among(
                "localhost",
                ["good.example", "EVIL.example", "localhost", "plain.example"]
            ),
            vec!["evil.example", "plain.example"]
        );
    }

    #[test]
    fn hashes_are_unpadded_base64_of_sha256() {
        // Known values (Python's hashlib and base64, padding stripped).
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(
            sha256_base64("@spammer:localhost"),
            "W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk"
        );
    }

    #[test]
    fn hashed_rules_match_the_entity_they_hash() {
        let user = set(
            "!l",
            "m.policy.rule.user",
            "h1",
            json!({"hashes": {"sha256": "W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk"},
                   "recommendation": "m.ban", "reason": "spam"}),
        );
        assert_eq!(user.entity, "");
        assert_eq!(
            user.label(),
            "sha256:W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk"
        );
        // Padded base64 is read too.
        let server = set(
            "!l",
            "m.policy.rule.server",
            "h2",
            json!({"hashes": {"sha256": "nBgN4M1pnueIl8R8/bPn7h11kG4xt3RqR0fepTaQmDc="},
                   "recommendation": "m.ban"}),
        );
        let room = set(
            "!l",
            "m.policy.rule.room",
            "h3",
            json!({"hashes": {"sha256": "Spax8GOad9NtnCxsSGvWpd5xcoKZ8qHm4HW/9iRQ1Uo"},
                   "recommendation": "m.ban"}),
        );
        let set_ = PolicySet::new(vec![user.clone(), server, room]);
        assert_eq!(set_.user_rule("@spammer:localhost"), Some(&user));
        assert!(set_.user_rule("@spammer2:localhost").is_none());
        assert!(set_.user_banned("@anyone:Evil.Example").is_some());
        assert!(set_.user_banned("@anyone:evil.example.org").is_none());
        assert!(set_.room_banned("!room:localhost", []).is_some());
        assert!(
            set_.room_banned("!other:localhost", ["#x:localhost"])
                .is_none()
        );
        // A hash has no name to put in an ACL.
        assert!(set_.server_denies("localhost").is_empty());

        // A plain entity wins over its hash; a hash that is no SHA-256 makes no rule.
        let both = set(
            "!l",
            "m.policy.rule.user",
            "h4",
            json!({"entity": "@a:b", "hashes": {"sha256": "W92T4OwtzLiscEoWTpGsFxDuoAYAd/XxSvsg8X+DKLk"},
                   "recommendation": "m.ban"}),
        );
        assert!(both.matches("@a:b") && !both.matches("@spammer:localhost"));
        for hashes in [
            json!({"sha256": "not base64!"}),
            json!({"sha256": "AAAA"}),
            json!({}),
            json!("x"),
        ] {
            let content = json!({"hashes": hashes, "recommendation": "m.ban"});
            assert!(
                matches!(
                    parse_event("!l", "m.policy.rule.user", "k", &content),
                    Some(Change::Removed { .. })
                ),
                "{content}"
            );
        }
    }

    #[test]
    fn takedowns_are_kept_with_their_recommendation() {
        for name in ["org.matrix.msc4204.takedown", "m.takedown"] {
            let rule = set(
                "!l",
                "m.policy.rule.user",
                "t",
                json!({"entity": "@csam:evil.example", "recommendation": name}),
            );
            assert_eq!(rule.recommendation, Recommendation::Takedown);
        }
        let rule = set(
            "!l",
            "m.policy.rule.user",
            "b",
            json!({"entity": "@x:y", "recommendation": "org.matrix.mjolnir.ban"}),
        );
        assert_eq!(rule.recommendation, Recommendation::Ban);
    }

    #[test]
    fn entities_typed_in_commands_have_a_kind() {
        assert_eq!(Kind::of_entity("@u:hs"), Kind::User);
        assert_eq!(Kind::of_entity("!r:hs"), Kind::Room);
        assert_eq!(Kind::of_entity("#a:hs"), Kind::Room);
        assert_eq!(Kind::of_entity("evil.example"), Kind::Server);
        assert_eq!(Kind::parse(Kind::Server.as_str()), Some(Kind::Server));
    }
}
