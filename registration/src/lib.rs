//! The application service registration file.
//!
//! A registration tells the homeserver how to reach an appservice and which users, aliases and
//! rooms it owns. Both sides read the same YAML file, so this crate aims to read exactly what
//! Synapse reads — including the unstable keys that ruma's own `Registration` type drops — and to
//! reject, with the field named, what Synapse would reject or silently misbehave on.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>

mod namespace;
mod tokens;

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Registration {
    /// A unique, user-defined ID of the application service which will never change.
    pub id: String,
    /// The URL the homeserver pushes transactions to, or `None` (written as an explicit `null`)
    /// for an appservice that only acts and never receives.
    #[serde(
        deserialize_with = "required_nullable",
        serialize_with = "explicit_null"
    )]
    pub url: Option<String>,
    /// The token the appservice uses to talk to the homeserver.
    pub as_token: String,
    /// The token the homeserver uses to talk to the appservice.
    pub hs_token: String,
    /// The localpart of the appservice's own bot user.
    pub sender_localpart: String,
    /// The users, aliases and rooms the appservice is interested in.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Whether requests from masqueraded users are rate-limited. Synapse's default is `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<bool>,
    /// Third-party protocols the appservice provides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// Whether to receive ephemeral events (typing, receipts, presence), stable key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_ephemeral: Option<bool>,
    /// The unstable form of `receive_ephemeral` (MSC2409), which Synapse before 1.156 reads.
    #[serde(
        default,
        rename = "de.sorunome.msc2409.push_ephemeral",
        skip_serializing_if = "Option::is_none"
    )]
    pub push_ephemeral_unstable: Option<bool>,
    /// MSC3202: device lists and one-time-key counts in transactions, and device masquerading.
    #[serde(
        default,
        rename = "org.matrix.msc3202",
        skip_serializing_if = "Option::is_none"
    )]
    pub msc3202: Option<bool>,
    /// MSC4190: the appservice manages its users' devices itself.
    #[serde(
        default,
        rename = "io.element.msc4190",
        skip_serializing_if = "Option::is_none"
    )]
    pub msc4190: Option<bool>,
    /// Keys this type does not know, kept so that reading and writing a file loses nothing.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `url` must be present but may be `null`: Synapse refuses a file without the key.
fn required_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
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

    /// Reads and validates a registration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a registration from YAML (JSON is YAML too). `origin` names the
    /// source in errors.
    pub fn parse(yaml: &str, origin: &str) -> Result<Self> {
        let registration: Registration =
            serde_saphyr::from_str(yaml).map_err(|e| Error::Syntax {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
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

    /// Checks what can be checked without knowing the server name.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let invalid = |field: &str, problem: &str| Error::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        if self.id.trim().is_empty() {
            return Err(invalid("id", "must not be empty"));
        }
        for (field, token) in [("as_token", &self.as_token), ("hs_token", &self.hs_token)] {
            if token.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if self.as_token == self.hs_token {
            return Err(invalid(
                "hs_token",
                "must differ from as_token, or either side could impersonate the other",
            ));
        }
        if self.sender_localpart.is_empty()
            || !self
                .sender_localpart
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
        {
            return Err(invalid(
                "sender_localpart",
                "must be a non-empty user localpart of a-z, 0-9 and . _ = - / +",
            ));
        }
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "url",
                "must be an http:// or https:// URL, or null",
            ));
        }
        self.namespaces.validate(origin)
    }

    /// The bot's full user id on `server_name`.
    pub fn bot_user_id(&self, server_name: &str) -> String {
        format!("@{}:{}", self.sender_localpart, server_name)
    }

    /// Checks that the bot user lies inside the registration's own user namespaces, so that
    /// everything the appservice acts as is owned by it.
    pub fn validate_bot(&self, server_name: &str, origin: &str) -> Result<()> {
        let bot = self.bot_user_id(server_name);
        if !self.namespaces.users.is_empty() && !self.namespaces.matches(NamespaceKind::Users, &bot)
        {
            return Err(Error::Invalid {
                origin: origin.to_owned(),
                field: "sender_localpart".to_owned(),
                problem: format!(
                    "the bot {bot} is outside namespaces.users; add it to a user namespace"
                ),
            });
        }
        Ok(())
    }

    /// Whether the registration claims `user_id`.
    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        self.namespaces.matches(NamespaceKind::Users, user_id)
    }
}

#[cfg(test)]
mod tests;
