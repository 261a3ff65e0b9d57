use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The three namespace lists of a registration.
///
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Namespaces {
    /// User ids the appservice owns or watches.
    #[serde(default)]
    pub users: Vec<Namespace>,
    /// Room aliases the appservice owns or watches.
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    /// Room ids the appservice watches.
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

/// Which list of [`Namespaces`] to look in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceKind {
    /// `namespaces.users`
    Users,
    /// `namespaces.aliases`
    Aliases,
    /// `namespaces.rooms`
    Rooms,
}

impl NamespaceKind {
    fn field(self) -> &'static str {
        match self {
            NamespaceKind::Users => "users",
            NamespaceKind::Aliases => "aliases",
            NamespaceKind::Rooms => "rooms",
        }
    }
}

/// One namespace: a regular expression and whether the appservice claims it exclusively.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Namespace {
    /// Whether only this appservice may create or act in this namespace. Required: Synapse
    /// refuses a namespace without it.
    pub exclusive: bool,
    /// The regular expression, matched the way Synapse does (see [`Namespace::matches`]).
    pub regex: String,
    #[serde(skip)]
    compiled: OnceLock<Option<Regex>>,
}

impl PartialEq for Namespace {
    fn eq(&self, other: &Self) -> bool {
        self.exclusive == other.exclusive && self.regex == other.regex
    }
}

impl Namespace {
    /// A namespace from its parts.
    pub fn new(exclusive: bool, regex: impl Into<String>) -> Self {
        Namespace {
            exclusive,
            regex: regex.into(),
            compiled: OnceLock::new(),
        }
    }

    /// Compiles the regex as Synapse applies it: Python's `re.match`, which is anchored at the
    /// start of the string but not at the end. So `@irc_.*` matches `@irc_bob:example.org`, and
    /// `irc` matches `ircbot` — but `bot` does not match `@bot:x` (the `@` comes first).
    fn compile(regex: &str) -> Result<Regex, regex::Error> {
        Regex::new(&format!("^(?:{regex})"))
    }

    /// Whether `id` is in this namespace. A regex that does not compile matches nothing; parsing
    /// a registration rejects such a file before this can happen.
    pub fn matches(&self, id: &str) -> bool {
        self.compiled
            .get_or_init(|| Self::compile(&self.regex).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(id))
    }
}

impl Namespaces {
    /// The list of one kind.
    pub fn of(&self, kind: NamespaceKind) -> &[Namespace] {
        match kind {
            NamespaceKind::Users => &self.users,
            NamespaceKind::Aliases => &self.aliases,
            NamespaceKind::Rooms => &self.rooms,
        }
    }

    /// Whether any namespace of `kind` matches `id`.
    pub fn matches(&self, kind: NamespaceKind, id: &str) -> bool {
        self.of(kind).iter().any(|ns| ns.matches(id))
    }

    /// Whether an exclusive namespace of `kind` matches `id`.
    pub fn matches_exclusive(&self, kind: NamespaceKind, id: &str) -> bool {
        self.of(kind)
            .iter()
            .any(|ns| ns.exclusive && ns.matches(id))
    }

    pub(crate) fn validate(&self, origin: &str) -> Result<()> {
        for kind in [
            NamespaceKind::Users,
            NamespaceKind::Aliases,
            NamespaceKind::Rooms,
        ] {
            for (i, ns) in self.of(kind).iter().enumerate() {
                let field = format!("namespaces.{}[{i}].regex", kind.field());
                let invalid = |problem: String| Error::Invalid {
                    origin: origin.to_owned(),
                    field: field.clone(),
                    problem,
                };
                if ns.regex.is_empty() {
                    return Err(invalid("must not be empty".to_owned()));
                }
                if let Err(e) = Self::check_regex(&ns.regex) {
                    return Err(invalid(format!("not a valid regular expression: {e}")));
                }
            }
        }
        Ok(())
    }

    fn check_regex(regex: &str) -> Result<(), String> {
        Namespace::compile(regex).map(drop).map_err(|e| {
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
    }
}
