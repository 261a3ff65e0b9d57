//! Registration files in the shapes the main appservices generate (`corpus/accepted`), files
//! Synapse refuses (`corpus/refused`) and the two kinds Synapse accepts but Trestle refuses
//! (`corpus/trestle-refuses`, see docs/registration.md).
//!
//! The first tests state by hand what each file means; `synapse_reads_the_corpus_alike` and
//! `namespace_regexes_match_as_in_python` ask Synapse itself (its own loader, from the
//! virtualenv the end-to-end tests use) and compare.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use trestle_registration::{Error, NamespaceKind, Registration};

/// The comparison with Synapse's own reading.
#[path = "corpus/synapse.rs"]
mod synapse;

const SERVER: &str = "example.org";

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind)
}

fn files(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn read(kind: &str, name: &str) -> trestle_registration::Result<Registration> {
    Registration::from_file(dir(kind).join(name))
}

/// What Synapse makes of an accepted file.
struct Expected {
    file: &'static str,
    id: &'static str,
    url: Option<&'static str>,
    /// The bot's user id, and whether a user namespace holds it.
    bot: (&'static str, bool),
    users: &'static [(&'static str, bool)],
    aliases: &'static [(&'static str, bool)],
    rooms: &'static [(&'static str, bool)],
    rate_limited: bool,
    ephemeral: bool,
    protocols: &'static [&'static str],
    msc3202: bool,
    msc4190: bool,
    /// Users that are the appservice's own (the bot, or an exclusive user namespace).
    own: &'static [&'static str],
    /// Users it has no claim on.
    foreign: &'static [&'static str],
    /// Things Synapse accepts that are probably mistakes.
    warnings: usize,
}

/// What most files share; each entry says what differs.
const BASE: Expected = Expected {
    file: "",
    id: "",
    url: None,
    bot: ("", false),
    users: &[],
    aliases: &[],
    rooms: &[],
    rate_limited: false,
    ephemeral: false,
    protocols: &[],
    msc3202: false,
    msc4190: false,
    own: &[],
    foreign: &[],
    warnings: 0,
};

const EXPECTED: &[Expected] = &[
    Expected {
        file: "heisenbridge.yaml",
        id: "heisenbridge",
        url: Some("http://127.0.0.1:9898"),
        bot: ("@heisenbridge:example.org", false),
        users: &[("@irc_.*", true)],
        own: &["@irc_alice:example.org", "@irc_bob:elsewhere.org"],
        foreign: &["@alice:example.org", "@heisenbridge2:example.org"],
        ..BASE
    },
    Expected {
        file: "hookshot.yaml",
        id: "matrix-hookshot",
        url: Some("http://localhost:9993"),
        bot: ("@hookshot:example.org", false),
        users: &[
            ("@_github_.*:example.org", true),
            ("@_gitlab_.*:example.org", true),
            ("@_jira_.*:example.org", true),
            ("@_webhooks_.*:example.org", true),
            ("@feeds:example.org", true),
        ],
        aliases: &[("#github_.+:example.org", true)],
        ephemeral: true,
        msc3202: true,
        own: &["@_webhooks_alerts:example.org", "@feeds:example.org"],
        foreign: &["@alice:example.org", "@_slack_x:example.org"],
        // The sample's tokens are one placeholder.
        warnings: 1,
        ..BASE
    },
    Expected {
        file: "matrix-appservice-bridge.yaml",
        id: "0db6196754b6014a4175a9aaa89b7fbddb38e46fb7e96f489cb8f9690c7c13b1",
        url: Some("http://localhost:8090"),
        bot: ("@facebookbot:example.org", false),
        users: &[("@facebook_.*", true)],
        rate_limited: true,
        own: &["@facebook_123:example.org"],
        foreign: &["@alice:example.org"],
        ..BASE
    },
    Expected {
        file: "matrix-appservice-irc.yaml",
        id: "d564fe714bb85ce6b7afcbf7dc4f0b56fe9d739012f7d2cb191a5b734575a1d8",
        url: Some("http://localhost:9995"),
        bot: ("@appservice-irc:example.org", false),
        users: &[("@irc_.*", true)],
        aliases: &[("#irc_.*", true)],
        rooms: &[("!kWdWpEKbaPpHzAHyaN:example.org", false)],
        ephemeral: true,
        protocols: &["irc"],
        own: &["@irc_alice:example.org"],
        foreign: &["@alice:example.org", "@appservice-irc2:example.org"],
        ..BASE
    },
    Expected {
        file: "mautrix-go.yaml",
        id: "whatsapp",
        url: Some("http://localhost:29318"),
        bot: ("@zYL0IRWHaiXS24fEz0zlyAirTzRSxjvv:example.org", false),
        users: &[
            (r"^@whatsappbot:example\.org$", true),
            (r"^@whatsapp_.*:example\.org$", true),
        ],
        ephemeral: true,
        msc3202: true,
        msc4190: true,
        own: &[
            "@whatsappbot:example.org",
            "@whatsapp_4915112345678:example.org",
        ],
        foreign: &["@whatsappbot:example.org.evil", "@whatsapp_1:exampleXorg"],
        ..BASE
    },
    Expected {
        file: "mautrix-python.yaml",
        id: "telegram",
        url: Some("http://localhost:29317"),
        bot: (
            "@r4d7w6d3ssam7nbktpm0e9lb38p3f54nm2uq1timyv98qxncejzef5qwn4eexjvv:example.org",
            false,
        ),
        users: &[
            (r"@telegram_.*:example\.org", true),
            (r"@telegrambot:example\.org", true),
        ],
        aliases: &[(r"\#telegram_.*:example\.org", true)],
        ephemeral: true,
        own: &["@telegrambot:example.org", "@telegram_777:example.org"],
        foreign: &["@alice:example.org"],
        ..BASE
    },
    Expected {
        file: "nix-json.yaml",
        id: "telegram",
        url: Some("http://localhost:29317"),
        bot: ("@mautrix-telegram:example.org", false),
        users: &[
            (r"@telegram_.*:example\.org", true),
            (r"@telegrambot:example\.org", true),
        ],
        aliases: &[(r"\#telegram_.*:example\.org", true)],
        ephemeral: true,
        own: &["@telegrambot:example.org"],
        foreign: &["@alice:example.org"],
        ..BASE
    },
    Expected {
        file: "yaml-1.1-and-python.yaml",
        id: "quirks",
        url: Some("http://localhost:9000/"),
        bot: ("@Quirks~Bot:example.org", false),
        users: &[
            (r"@(?P<network>irc|xmpp)_[a-z0-9]+:example\.org\Z", true),
            ("(?i)@WATCHED_.*", false),
        ],
        aliases: &[(r"#quirks_.{,32}:example\.org", true)],
        // The string "no" is true in Python.
        ephemeral: true,
        own: &["@irc_alice1:example.org", "@xmpp_x:example.org"],
        // `\Z` is the very end, and the second namespace is not exclusive.
        foreign: &["@irc_alice:example.org.evil", "@watched_eve:example.org"],
        ..BASE
    },
];

fn namespace(r: &Registration, kind: NamespaceKind) -> Vec<(&str, bool)> {
    r.namespaces
        .of(kind)
        .iter()
        .map(|ns| (ns.regex.as_str(), ns.exclusive))
        .collect()
}

#[test]
fn peers_registrations_read_as_synapse_reads_them() {
    let names: Vec<_> = files("accepted")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let described: Vec<_> = EXPECTED.iter().map(|e| e.file.to_owned()).collect();
    assert_eq!(names, described, "every accepted file is described");

    for e in EXPECTED {
        let r = read("accepted", e.file).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(r.id, e.id, "{}", e.file);
        assert_eq!(r.url.as_deref(), e.url, "{}", e.file);
        assert_eq!(r.bot_user_id(SERVER), e.bot.0, "{}", e.file);
        assert_eq!(r.is_user_in_namespace(e.bot.0), e.bot.1, "{}", e.file);
        assert_eq!(namespace(&r, NamespaceKind::Users), e.users, "{}", e.file);
        assert_eq!(
            namespace(&r, NamespaceKind::Aliases),
            e.aliases,
            "{}",
            e.file
        );
        assert_eq!(namespace(&r, NamespaceKind::Rooms), e.rooms, "{}", e.file);
        assert_eq!(r.rate_limited.unwrap_or(true), e.rate_limited, "{}", e.file);
        assert_eq!(r.receives_ephemeral(), e.ephemeral, "{}", e.file);
        assert_eq!(
            r.protocols.clone().unwrap_or_default(),
            e.protocols,
            "{}",
            e.file
        );
        assert_eq!(r.msc3202.unwrap_or(false), e.msc3202, "{}", e.file);
        assert_eq!(r.msc4190.unwrap_or(false), e.msc4190, "{}", e.file);
        // The bot is the appservice's own user, in the namespace or not.
        assert!(r.is_exclusive_user(e.bot.0, SERVER), "{}", e.file);
        for user in e.own {
            assert!(r.is_exclusive_user(user, SERVER), "{}: {user}", e.file);
        }
        for user in e.foreign {
            assert!(!r.is_exclusive_user(user, SERVER), "{}: {user}", e.file);
        }
        assert_eq!(
            r.warnings().len(),
            e.warnings,
            "{}: {:?}",
            e.file,
            r.warnings()
        );
        // Written back, it reads the same.
        let again = Registration::parse(&r.to_yaml(), "again").unwrap();
        assert_eq!(again, r, "{}", e.file);
    }
}

/// The files Synapse refuses, and the field each error names.
const REFUSED: &[(&str, &str)] = &[
    ("bad-regex.yaml", "namespaces.aliases[0].regex"),
    ("id-with-pipe.yaml", "id"),
    ("msc3202-not-a-boolean.yaml", "org.matrix.msc3202"),
    ("namespace-as-string.yaml", "namespaces.users[0]"),
    ("no-exclusive.yaml", "namespaces.users[0].exclusive"),
    ("no-namespaces.yaml", "namespaces"),
    ("no-url.yaml", "url"),
    ("protocols-not-a-list.yaml", "protocols"),
    ("proxy-prefix-alone.yaml", "io.element.msc4512.proxy_url"),
    ("sender-localpart.yaml", "sender_localpart"),
    ("token-not-a-string.yaml", "as_token"),
    ("yaml-1.1-exclusive.yaml", "namespaces.users[0].exclusive"),
];

/// The files Synapse accepts and Trestle refuses, and the field each error names.
const TRESTLE_REFUSES: &[(&str, &str)] = &[
    ("blank-hs-token.yaml", "hs_token"),
    ("look-ahead.yaml", "namespaces.users[0].regex"),
];

fn refused_field(kind: &str, name: &str) -> String {
    let path = dir(kind).join(name);
    match read(kind, name) {
        Err(Error::Invalid { origin, field, .. }) => {
            assert_eq!(origin, path.display().to_string());
            field
        }
        other => panic!("{name}: expected a field error, got {other:?}"),
    }
}

#[test]
fn refused_files_are_refused_naming_file_and_field() {
    for (kind, list) in [("refused", REFUSED), ("trestle-refuses", TRESTLE_REFUSES)] {
        let names: Vec<_> = files(kind)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let described: Vec<_> = list.iter().map(|(f, _)| (*f).to_owned()).collect();
        assert_eq!(names, described, "every {kind} file is described");
        for (name, field) in list {
            assert_eq!(refused_field(kind, name), *field, "{name}");
        }
    }
    let look_ahead = read("trestle-refuses", "look-ahead.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        look_ahead.contains("Synapse accepts") && look_ahead.contains("look-ahead"),
        "{look_ahead}"
    );
}
