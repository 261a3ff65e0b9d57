mod python;

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use crate::{Error, Result};
use python::Problem;

/// The three namespace lists of a registration.
///
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Namespaces {
    /// User ids the appservice owns or watches.
    pub users: Vec<Namespace>,
    /// Room aliases the appservice owns or watches.
    pub aliases: Vec<Namespace>,
    /// Room ids the appservice watches.
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
    /// The three kinds, in Synapse's order.
    pub(crate) const ALL: [NamespaceKind; 3] = [
        NamespaceKind::Users,
        NamespaceKind::Aliases,
        NamespaceKind::Rooms,
    ];

    /// The key under `namespaces`.
    pub(crate) fn field(self) -> &'static str {
        match self {
            NamespaceKind::Users => "users",
            NamespaceKind::Aliases => "aliases",
            NamespaceKind::Rooms => "rooms",
        }
    }
}

/// One namespace: a regular expression and whether the appservice claims it exclusively.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Namespace {
    /// Whether only this appservice may create or act in this namespace. Required: Synapse
    /// refuses a namespace without it.
    pub exclusive: bool,
    /// The regular expression, in Python's syntax, matched the way Synapse does (see
    /// [`Namespace::matches`]).
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
    /// `irc` matches `ircbot` — but `bot` does not match `@bot:x` (the `@` comes first). The
    /// pattern is Python's syntax, translated (see `python.rs`).
    fn compile(regex: &str) -> Result<Regex, Problem> {
        let translated = python::translate(regex)?;
        Regex::new(&format!("^(?:{translated})")).map_err(|e| {
            let reason = e.to_string();
            let reason = reason.lines().last().unwrap_or_default().trim();
            Problem::Unsupported(format!("the `regex` crate refuses it ({reason})"))
        })
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

    /// Checks that every regex compiles, as Synapse requires, and that Trestle can match it.
    pub(crate) fn validate(&self, origin: &str) -> Result<()> {
        for kind in NamespaceKind::ALL {
            for (i, ns) in self.of(kind).iter().enumerate() {
                if let Err(problem) = Namespace::compile(&ns.regex) {
                    return Err(Error::Invalid {
                        origin: origin.to_owned(),
                        field: format!("namespaces.{}[{i}].regex", kind.field()),
                        problem: regex_problem(problem),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why a regex cannot be used, in words for an error.
fn regex_problem(problem: Problem) -> String {
    match problem {
        Problem::Invalid(why) => {
            format!(
                "not a valid regular expression (Synapse compiles it with Python's `re`): {why}"
            )
        }
        Problem::Unsupported(why) => format!(
            "Synapse accepts this regular expression, but Trestle cannot match it: {why} \
             (see docs/registration.md)"
        ),
    }
}
