//! Protections: per-room rules that watch messages and joins and act on abuse (word filter,
//! flood, mention spam, join flood, first-message link spam, mass invites).
//!
//! Each protection's configuration is a JSON object: the defaults of its type, overridden by
//! the settings for every protected room (`*`), overridden by the room's own. The detection
//! here is pure; the bot carries out what it decides.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// The protections, with what each does.
pub const PROTECTIONS: &[(&str, &str)] = &[
    (
        WordFilter::NAME,
        "redacts messages with a listed word or matching a pattern (words, patterns, kick)",
    ),
    (
        Flood::NAME,
        "kicks (or bans) a user sending more than max_messages in seconds (max_messages, seconds, ban)",
    ),
    (
        MentionSpam::NAME,
        "redacts messages mentioning more than max_mentions users (max_mentions, kick)",
    ),
    (
        JoinFlood::NAME,
        "makes the room invite-only when more than max_joins join within seconds (max_joins, seconds)",
    ),
    (
        LinkSpam::NAME,
        "redacts a link in a new user's first message, and kicks them (new_user_seconds, kick)",
    ),
    (
        InviteFlood::NAME,
        "kicks (or bans) a user sending more than max_invites invites in protected rooms within seconds, and withdraws them (max_invites, seconds, ban)",
    ),
];

/// Whether `name` is a protection.
pub fn is_protection(name: &str) -> bool {
    PROTECTIONS.iter().any(|(n, _)| *n == name)
}

/// The word and pattern filter.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WordFilter {
    /// On or off.
    pub enabled: bool,
    /// Words matched whole and case-insensitively.
    pub words: Vec<String>,
    /// Regular expressions matched against the body.
    pub patterns: Vec<String>,
    /// Kick the sender too.
    pub kick: bool,
}

impl WordFilter {
    /// The protection's name.
    pub const NAME: &'static str = "word-filter";
}

/// Too many messages too fast.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flood {
    /// On or off.
    pub enabled: bool,
    /// More than this many messages…
    pub max_messages: usize,
    /// …within this many seconds is a flood.
    pub seconds: u64,
    /// Ban instead of kicking.
    pub ban: bool,
}

impl Flood {
    /// The protection's name.
    pub const NAME: &'static str = "flood";
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            enabled: false,
            max_messages: 10,
            seconds: 10,
            ban: false,
        }
    }
}

/// Too many mentions in one message.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MentionSpam {
    /// On or off.
    pub enabled: bool,
    /// More than this many different users mentioned is spam.
    pub max_mentions: usize,
    /// Kick the sender too.
    pub kick: bool,
}

impl MentionSpam {
    /// The protection's name.
    pub const NAME: &'static str = "mention-spam";
}

impl Default for MentionSpam {
    fn default() -> Self {
        MentionSpam {
            enabled: false,
            max_mentions: 10,
            kick: false,
        }
    }
}

/// Too many joins too fast: a raid.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinFlood {
    /// On or off.
    pub enabled: bool,
    /// More than this many joins…
    pub max_joins: usize,
    /// …within this many seconds closes the room.
    pub seconds: u64,
}

impl JoinFlood {
    /// The protection's name.
    pub const NAME: &'static str = "join-flood";
}

impl Default for JoinFlood {
    fn default() -> Self {
        JoinFlood {
            enabled: false,
            max_joins: 20,
            seconds: 60,
        }
    }
}

/// One user inviting many people: invite spam. Counted across every protected room where it is
/// on, since a spammer spreads their invites.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InviteFlood {
    /// On or off.
    pub enabled: bool,
    /// More than this many invites from one user…
    pub max_invites: usize,
    /// …within this many seconds fires.
    pub seconds: u64,
    /// Ban rather than kick the inviter.
    pub ban: bool,
}

impl InviteFlood {
    /// The protection's name.
    pub const NAME: &'static str = "invite-flood";
}

impl Default for InviteFlood {
    fn default() -> Self {
        InviteFlood {
            enabled: false,
            max_invites: 5,
            seconds: 60,
            ban: false,
        }
    }
}

/// A link in the first message of a user who just joined.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSpam {
    /// On or off.
    pub enabled: bool,
    /// A user who joined less than this long ago is new.
    pub new_user_seconds: u64,
    /// Kick the sender too.
    pub kick: bool,
}

impl LinkSpam {
    /// The protection's name.
    pub const NAME: &'static str = "link-spam";
}

impl Default for LinkSpam {
    fn default() -> Self {
        LinkSpam {
            enabled: false,
            new_user_seconds: 3600,
            kick: true,
        }
    }
}

/// The configuration of one protection in one room: its defaults, then the settings for all
/// rooms, then the room's own.
pub fn effective<T: DeserializeOwned + Default>(
    layers: &[&Map<String, Value>],
) -> Result<T, String> {
    let mut merged = Map::new();
    for layer in layers {
        for (key, value) in *layer {
            merged.insert(key.clone(), value.clone());
        }
    }
    serde_json::from_value(Value::Object(merged)).map_err(|e| e.to_string())
}

/// Checks the merged configuration of protection `name` (types, and that patterns compile).
pub fn validate(name: &str, layers: &[&Map<String, Value>]) -> Result<(), String> {
    match name {
        WordFilter::NAME => {
            let filter: WordFilter = effective(layers)?;
            for pattern in &filter.patterns {
                Regex::new(pattern).map_err(|e| format!("pattern `{pattern}`: {e}"))?;
            }
            Ok(())
        }
        Flood::NAME => effective::<Flood>(layers).map(drop),
        MentionSpam::NAME => effective::<MentionSpam>(layers).map(drop),
        JoinFlood::NAME => effective::<JoinFlood>(layers).map(drop),
        LinkSpam::NAME => effective::<LinkSpam>(layers).map(drop),
        InviteFlood::NAME => effective::<InviteFlood>(layers).map(drop),
        other => Err(format!("no protection named `{other}`")),
    }
}

/// Reads a value typed in a command: JSON if it parses (`3`, `true`, `["a","b"]`), else the
/// text itself.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Sets `key` to `value` in `settings` so that protection `name` still reads: a text where a
/// list is wanted becomes the list of its comma-separated parts.
pub fn set_key(
    name: &str,
    base: &[&Map<String, Value>],
    settings: &mut Map<String, Value>,
    key: &str,
    value: Value,
) -> Result<(), String> {
    let try_with = |settings: &Map<String, Value>| {
        let mut layers = base.to_vec();
        layers.push(settings);
        validate(name, &layers)
    };
    let mut candidate = settings.clone();
    candidate.insert(key.to_owned(), value.clone());
    let first = try_with(&candidate);
    if first.is_ok() {
        *settings = candidate;
        return Ok(());
    }
    if let Value::String(text) = &value {
        let list: Vec<Value> = text
            .split(',')
            .map(|s| Value::String(s.trim().to_owned()))
            .filter(|v| v.as_str() != Some(""))
            .collect();
        candidate.insert(key.to_owned(), Value::Array(list));
        if try_with(&candidate).is_ok() {
            *settings = candidate;
            return Ok(());
        }
    }
    first
}

/// What a protection decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The protection that fired.
    pub protection: &'static str,
    /// What it saw, for the report.
    pub detail: String,
    /// Redact the event.
    pub redact: bool,
    /// Kick the sender.
    pub kick: bool,
    /// Ban the sender.
    pub ban: bool,
    /// Make the room invite-only.
    pub lock_room: bool,
    /// Invites to withdraw: (room, invited user).
    pub withdraw: Vec<(String, String)>,
}

/// A message, as the protections see it.
#[derive(Clone, Debug, Default)]
pub struct Message<'a> {
    /// `body`.
    pub body: &'a str,
    /// `formatted_body`, if any.
    pub formatted_body: Option<&'a str>,
    /// `m.mentions.user_ids`.
    pub mentioned: &'a [String],
}

/// The protections' configuration for one room.
#[derive(Clone, Debug, Default)]
pub struct RoomProtections {
    /// The word filter.
    pub word_filter: WordFilter,
    /// The flood protection.
    pub flood: Flood,
    /// The mention spam protection.
    pub mention_spam: MentionSpam,
    /// The join flood protection.
    pub join_flood: JoinFlood,
    /// The link spam protection.
    pub link_spam: LinkSpam,
    /// The mass invite protection.
    pub invite_flood: InviteFlood,
}

static USER_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"@[A-Za-z0-9._=\-/+]+(?::|%3[Aa])[A-Za-z0-9.\-]+(?::[0-9]+)?")
        .expect("a valid regex")
});
static LINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:https?://|www\.)\S").expect("a valid regex"));

/// The users a message mentions: its `m.mentions` and the user IDs in its text (a spammer's
/// client need not fill `m.mentions`).
pub fn mentions(message: &Message<'_>) -> usize {
    let mut users: HashSet<String> = message.mentioned.iter().cloned().collect();
    for text in [Some(message.body), message.formatted_body]
        .into_iter()
        .flatten()
    {
        users.extend(
            USER_ID
                .find_iter(text)
                .map(|m| m.as_str().replace("%3A", ":").replace("%3a", ":")),
        );
    }
    users.len()
}

/// Whether the text has a link.
pub fn has_link(message: &Message<'_>) -> bool {
    LINK.is_match(message.body) || message.formatted_body.is_some_and(|f| f.contains("href="))
}

/// The first word or pattern of the filter that the text matches.
pub fn filtered(filter: &WordFilter, text: &str) -> Option<String> {
    CompiledFilter::new(filter).first_match(text)
}

/// A word filter's words and patterns as regular expressions, compiled once per setting rather
/// than once per message.
#[derive(Debug)]
pub struct CompiledFilter {
    /// (what to report, the expression); a pattern that does not compile is left out (it was
    /// refused when set).
    rules: Vec<(String, Regex)>,
}

impl CompiledFilter {
    /// Compiles the filter.
    pub fn new(filter: &WordFilter) -> Self {
        let words = filter
            .words
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
            .filter_map(|word| {
                let pattern = format!(r"(?i)(?:^|\W){}(?:$|\W)", regex::escape(word));
                Some((format!("word `{word}`"), Regex::new(&pattern).ok()?))
            });
        let patterns = filter.patterns.iter().filter_map(|pattern| {
            let regex = RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .ok()?;
            Some((format!("pattern `{pattern}`"), regex))
        });
        CompiledFilter {
            rules: words.chain(patterns).collect(),
        }
    }

    /// What the text matches first.
    pub fn first_match(&self, text: &str) -> Option<String> {
        self.rules
            .iter()
            .find(|(_, regex)| regex.is_match(text))
            .map(|(what, _)| what.clone())
    }
}

/// What the protections remember of recent activity, per room and user. Kept in memory: after
/// a restart, users who joined before it are not "new" and old messages do not count.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Compiled word filters by their words and patterns.
    filters: HashMap<(Vec<String>, Vec<String>), std::sync::Arc<CompiledFilter>>,
    messages: HashMap<(String, String), VecDeque<i64>>,
    joins: HashMap<String, VecDeque<i64>>,
    joined_at: HashMap<(String, String), i64>,
    /// Per inviter: when they invited whom to which room.
    invites: HashMap<String, VecDeque<(i64, String, String)>>,
}

impl Tracker {
    /// A user joined `room` at `now_ms`; returns the join flood protection's verdict.
    pub fn joined(
        &mut self,
        room: &str,
        user: &str,
        now_ms: i64,
        config: &JoinFlood,
    ) -> Option<Verdict> {
        self.joined_at
            .insert((room.to_owned(), user.to_owned()), now_ms);
        let joins = self.joins.entry(room.to_owned()).or_default();
        joins.push_back(now_ms);
        let window = (config.seconds as i64).saturating_mul(1000);
        while joins.front().is_some_and(|&t| t < now_ms - window) {
            joins.pop_front();
        }
        if config.enabled && joins.len() > config.max_joins {
            let count = joins.len();
            joins.clear();
            return Some(Verdict {
                protection: JoinFlood::NAME,
                detail: format!("{count} joins within {} s", config.seconds),
                lock_room: true,
                ..Verdict::default()
            });
        }
        None
    }

    /// `inviter` invited `invited` to `room` at `now_ms`; returns the mass invite protection's
    /// verdict, with the invites of the window to withdraw.
    pub fn invited(
        &mut self,
        room: &str,
        inviter: &str,
        invited: &str,
        now_ms: i64,
        config: &InviteFlood,
    ) -> Option<Verdict> {
        if !config.enabled {
            return None;
        }
        let invites = self.invites.entry(inviter.to_owned()).or_default();
        invites.push_back((now_ms, room.to_owned(), invited.to_owned()));
        let window = (config.seconds as i64).saturating_mul(1000);
        while invites
            .front()
            .is_some_and(|(t, _, _)| *t < now_ms - window)
        {
            invites.pop_front();
        }
        if invites.len() <= config.max_invites {
            return None;
        }
        let withdraw: Vec<(String, String)> = invites
            .drain(..)
            .map(|(_, room, user)| (room, user))
            .collect();
        let rooms: HashSet<&str> = withdraw.iter().map(|(r, _)| r.as_str()).collect();
        Some(Verdict {
            protection: InviteFlood::NAME,
            detail: format!(
                "{} invites in {} rooms within {} s",
                withdraw.len(),
                rooms.len(),
                config.seconds
            ),
            kick: !config.ban,
            ban: config.ban,
            withdraw,
            ..Verdict::default()
        })
    }

    /// A user sent `message` in `room` at `now_ms`; returns what the protections decided, at
    /// most one verdict per protection.
    pub fn message(
        &mut self,
        room: &str,
        user: &str,
        now_ms: i64,
        message: &Message<'_>,
        config: &RoomProtections,
    ) -> Vec<Verdict> {
        let key = (room.to_owned(), user.to_owned());
        let mut verdicts = Vec::new();

        // The first message since a join we saw; later ones are not "first".
        let joined_at = self.joined_at.remove(&key);
        let link = &config.link_spam;
        if link.enabled
            && let Some(joined_at) = joined_at
            && now_ms - joined_at < (link.new_user_seconds as i64).saturating_mul(1000)
            && has_link(message)
        {
            verdicts.push(Verdict {
                protection: LinkSpam::NAME,
                detail: format!(
                    "a link in the first message, {} s after joining",
                    (now_ms - joined_at) / 1000
                ),
                redact: true,
                kick: link.kick,
                ..Verdict::default()
            });
        }

        let words = &config.word_filter;
        if words.enabled {
            let text = [Some(message.body), message.formatted_body]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n");
            if let Some(what) = self.filter(words).first_match(&text) {
                verdicts.push(Verdict {
                    protection: WordFilter::NAME,
                    detail: format!("matched {what}"),
                    redact: true,
                    kick: words.kick,
                    ..Verdict::default()
                });
            }
        }

        let spam = &config.mention_spam;
        if spam.enabled {
            let count = mentions(message);
            if count > spam.max_mentions {
                verdicts.push(Verdict {
                    protection: MentionSpam::NAME,
                    detail: format!("{count} users mentioned (limit {})", spam.max_mentions),
                    redact: true,
                    kick: spam.kick,
                    ..Verdict::default()
                });
            }
        }

        let flood = &config.flood;
        let sent = self.messages.entry(key).or_default();
        sent.push_back(now_ms);
        let window = (flood.seconds as i64).saturating_mul(1000);
        while sent.front().is_some_and(|&t| t < now_ms - window) {
            sent.pop_front();
        }
        // Nobody needs more history than the largest limit allows.
        while sent.len() > flood.max_messages.saturating_add(1).max(64) {
            sent.pop_front();
        }
        if flood.enabled && sent.len() > flood.max_messages {
            let count = sent.len();
            sent.clear();
            verdicts.push(Verdict {
                protection: Flood::NAME,
                detail: format!("{count} messages within {} s", flood.seconds),
                kick: !flood.ban,
                ban: flood.ban,
                ..Verdict::default()
            });
        }
        verdicts
    }

    fn filter(&mut self, filter: &WordFilter) -> std::sync::Arc<CompiledFilter> {
        let key = (filter.words.clone(), filter.patterns.clone());
        if let Some(compiled) = self.filters.get(&key) {
            return compiled.clone();
        }
        // Settings change rarely; a bound keeps edits from piling up.
        if self.filters.len() >= 64 {
            self.filters.clear();
        }
        let compiled = std::sync::Arc::new(CompiledFilter::new(filter));
        self.filters.insert(key, compiled.clone());
        compiled
    }

    /// Forgets what is known of `user` in `room` (they left or were removed).
    pub fn left(&mut self, room: &str, user: &str) {
        let key = (room.to_owned(), user.to_owned());
        self.joined_at.remove(&key);
        self.messages.remove(&key);
    }
}

#[cfg(test)]
mod tests;
