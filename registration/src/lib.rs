//! The application service registration file.
//!
//! A registration tells the homeserver how to reach an appservice and which users, aliases and
//! rooms it owns. Both sides read the same YAML file, so this crate reads exactly what Synapse
//! reads — YAML 1.1 values as PyYAML gives them, Python regexes, the unstable keys that ruma's
//! own `Registration` type drops — accepts what Synapse accepts, and refuses, with the field
//! named, what Synapse refuses. `docs/registration.md` lists the few exceptions.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>

mod load;
mod namespace;
mod tokens;
mod yaml;

use std::{collections::BTreeMap, path::Path};

use serde::{Serialize, Serializer};

pub use namespace::{Namespace, NamespaceKind, Namespaces};
pub use tokens::generate_token;

/// Errors from reading, writing or validating a registration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape. The message carries the line and column.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file, or `<string>` when parsed from memory.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// The file parsed but a field's value cannot work.
    #[error("{origin}: field `{field}`: {problem}")]
    Invalid {
        /// The file, or `<string>` when parsed from memory.
        origin: String,
        /// The field, as a path such as `namespaces.users[0].regex`.
        field: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An application service registration, as read by the homeserver.
///
/// Read one with [`Registration::parse`] or [`Registration::from_file`]; each field holds what
/// Synapse makes of the file.
///
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Registration {
    /// A unique, user-defined ID of the application service which will never change.
    pub id: String,
    /// The URL the homeserver pushes transactions to, or `None` (written as an explicit `null`)
    /// for an appservice that only acts and never receives.
    #[serde(serialize_with = "explicit_null")]
    pub url: Option<String>,
    /// The token the appservice uses to talk to the homeserver.
    pub as_token: String,
    /// The token the homeserver uses to talk to the appservice.
    pub hs_token: String,
    /// The localpart of the appservice's own user, the "bot": the user the `as_token` acts as
    /// when no other is named. It need not match the user namespace (Synapse does not ask it
    /// to, and mautrix, matrix-appservice-bridge and hookshot registrations often put it
    /// outside); it is the appservice's own user either way.
    pub sender_localpart: String,
    /// The users, aliases and rooms the appservice is interested in.
    pub namespaces: Namespaces,
    /// Whether requests from masqueraded users are rate-limited. `None` is Synapse's default,
    /// `true`, which Synapse also takes for any value that is not a boolean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<bool>,
    /// Third-party protocols the appservice provides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// Whether to receive ephemeral events (typing, receipts, presence), stable key. Synapse
    /// takes any value, for its truth in Python: `1` is true, `""` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_ephemeral: Option<bool>,
    /// The unstable form of `receive_ephemeral` (MSC2409); Synapse reads both, and sends
    /// ephemeral events under both keys if either is true.
    #[serde(
        rename = "de.sorunome.msc2409.push_ephemeral",
        skip_serializing_if = "Option::is_none"
    )]
    pub push_ephemeral_unstable: Option<bool>,
    /// MSC3202: device lists and one-time-key counts in transactions, and device masquerading.
    #[serde(rename = "org.matrix.msc3202", skip_serializing_if = "Option::is_none")]
    pub msc3202: Option<bool>,
    /// MSC4190: the appservice manages its users' devices itself.
    #[serde(rename = "io.element.msc4190", skip_serializing_if = "Option::is_none")]
    pub msc4190: Option<bool>,
    /// Keys this type does not know (`ip_range_whitelist`, MSC4502's scopes, MSC4512's proxy,
    /// anything else), kept so that reading and writing a file loses nothing. Synapse's checks
    /// on the ones it knows were made when the file was read.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `<bot>-sender-` and 8 random lowercase letters and digits.
fn hidden_sender(bot_localpart: &str) -> String {
    let random: String = generate_token()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    format!("{bot_localpart}-sender-{random}")
}

fn explicit_null<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(url),
        None => s.serialize_none(),
    }
}

impl Registration {
    /// A new registration with fresh random tokens and exclusive namespaces for the bot and for
    /// ghosts named `<ghost_prefix>…`. The bot's own user id lies inside the user namespace.
    pub fn generate(
        id: impl Into<String>,
        url: Option<String>,
        sender_localpart: impl Into<String>,
        ghost_prefix: &str,
        server_name: &str,
    ) -> Self {
        let sender_localpart = sender_localpart.into();
        let users = format!(
            "@({}|{}.+):{}",
            regex::escape(&sender_localpart),
            regex::escape(ghost_prefix),
            regex::escape(server_name)
        );
        let aliases = format!(
            "#{}.+:{}",
            regex::escape(ghost_prefix),
            regex::escape(server_name)
        );
        Registration {
            id: id.into(),
            url,
            as_token: generate_token(),
            hs_token: generate_token(),
            sender_localpart,
            namespaces: Namespaces {
                users: vec![Namespace::new(true, users)],
                aliases: vec![Namespace::new(true, aliases)],
                rooms: vec![],
            },
            rate_limited: Some(false),
            protocols: None,
            receive_ephemeral: Some(true),
            push_ephemeral_unstable: Some(true),
            msc3202: None,
            msc4190: None,
            other: BTreeMap::new(),
        }
    }

    /// A new registration whose bot is an ordinary user of its exclusive namespace,
    /// `@<bot_localpart>:<server_name>`, and whose `sender_localpart` is a hidden user that
    /// never acts (`<bot_localpart>-sender-<random>`; random so that nobody registered it
    /// before the homeserver loads the file): mautrix's shape. The appservice is then built
    /// with its bot named (`trestle::AppserviceBuilder::bot`). Synapse refuses `/sync` to the
    /// sender, not to the bot, so the bot's device can fetch its to-device events where the
    /// homeserver does not push them.
    pub fn generate_with_bot(
        id: impl Into<String>,
        url: Option<String>,
        bot_localpart: &str,
        ghost_prefix: &str,
        server_name: &str,
    ) -> Self {
        let mut registration = Self::generate(id, url, bot_localpart, ghost_prefix, server_name);
        registration.sender_localpart = hidden_sender(bot_localpart);
        registration
    }

    /// Reads and validates a registration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a registration from YAML (JSON is YAML too), as Synapse reads it.
    /// `origin` names the source in errors.
    pub fn parse(yaml: &str, origin: &str) -> Result<Self> {
        let tree = yaml::load(yaml).map_err(|message| Error::Syntax {
            origin: origin.to_owned(),
            message,
        })?;
        let registration = load::registration(&tree, origin)?;
        registration.validate(origin)?;
        Ok(registration)
    }

    /// Writes the registration as YAML.
    pub fn to_yaml(&self) -> String {
        // Serialising plain strings, booleans and JSON values cannot fail.
        serde_saphyr::to_string(self).unwrap_or_default()
    }

    /// Writes the registration to a file, readable by its owner only: it holds both tokens.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(path, self.to_yaml()).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        Ok(())
    }

    /// Checks what Synapse checks of these fields (and, beyond Synapse, that neither token is
    /// blank): what a registration built in code must pass as well as a file.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let invalid = |field: &str, problem: &str| Error::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        if self.id.contains('|') {
            return Err(invalid("id", "must not contain `|`"));
        }
        for (field, token) in [("as_token", &self.as_token), ("hs_token", &self.hs_token)] {
            // Synapse loads a blank token, but then a request with none passes its check, or
            // Trestle's: the appservice, or the homeserver, would answer anyone.
            if token.trim().is_empty() {
                return Err(invalid(
                    field,
                    "must not be blank: anyone could then pass for the homeserver or the appservice",
                ));
            }
        }
        // Synapse's rule: the localpart must be what `urllib.parse.quote` leaves unchanged.
        if let Some(c) = self
            .sender_localpart
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~' | '/')))
        {
            return Err(invalid(
                "sender_localpart",
                &format!(
                    "{c:?} would need URL encoding; Synapse allows letters, digits and _ . - ~ /"
                ),
            ));
        }
        self.namespaces.validate(origin)
    }

    /// Things Synapse accepts that are probably mistakes, in words for a log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.as_token == self.hs_token {
            warnings.push(
                "as_token and hs_token are equal: whoever learns one can act as both the \
                 homeserver and the appservice"
                    .to_owned(),
            );
        }
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            warnings.push(format!(
                "url `{url}` is not an http:// or https:// URL: the homeserver cannot push to it"
            ));
        }
        if self.sender_localpart.is_empty() {
            warnings.push("sender_localpart is empty: the bot is `@:<server name>`".to_owned());
        }
        for kind in NamespaceKind::ALL {
            for (i, ns) in self.namespaces.of(kind).iter().enumerate() {
                if ns.regex.is_empty() {
                    warnings.push(format!(
                        "namespaces.{}[{i}].regex is empty, so it matches every id",
                        kind.field()
                    ));
                }
            }
        }
        warnings
    }

    /// The full user id of `sender_localpart` on `server_name`: the appservice's own user,
    /// which is its bot unless the appservice names another (see
    /// [`Registration::generate_with_bot`]).
    pub fn bot_user_id(&self, server_name: &str) -> String {
        format!("@{}:{}", self.sender_localpart, server_name)
    }

    /// Whether `@<localpart>:<server_name>` can be the appservice's bot: the sender itself, or
    /// a user of an exclusive user namespace, whom the homeserver lets this appservice alone
    /// act as.
    pub fn can_be_bot(&self, localpart: &str, server_name: &str) -> bool {
        localpart == self.sender_localpart
            || self
                .namespaces
                .matches_exclusive(NamespaceKind::Users, &format!("@{localpart}:{server_name}"))
    }

    /// Whether the registration's user namespaces claim `user_id`. The bot need not be among
    /// them: see [`Registration::is_interested_in_user`].
    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        self.namespaces.matches(NamespaceKind::Users, user_id)
    }

    /// Synapse's `is_interested_in_user`: the bot, or a user in a user namespace. These are the
    /// users the appservice may act as.
    pub fn is_interested_in_user(&self, user_id: &str, server_name: &str) -> bool {
        user_id == self.bot_user_id(server_name) || self.is_user_in_namespace(user_id)
    }

    /// Synapse's `is_exclusive_user`: the bot, or a user in an exclusive user namespace. These
    /// are the users only this appservice may act as — its own.
    pub fn is_exclusive_user(&self, user_id: &str, server_name: &str) -> bool {
        user_id == self.bot_user_id(server_name)
            || self
                .namespaces
                .matches_exclusive(NamespaceKind::Users, user_id)
    }

    /// Whether Synapse sends this appservice ephemeral events: either `receive_ephemeral` or its
    /// unstable form is true.
    pub fn receives_ephemeral(&self) -> bool {
        self.receive_ephemeral == Some(true) || self.push_ephemeral_unstable == Some(true)
    }
}

#[cfg(test)]
mod tests;
