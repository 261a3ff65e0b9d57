//! Synapse itself reads the corpus (through tests/synapse_reads.py, with Synapse's own loader),
//! and Python's `re` the namespace regexes; Trestle must read them alike.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::{Value, json};
use trestle_registration::{Namespace, NamespaceKind, Registration};

use super::{SERVER, files, namespace};

/// Users, aliases and rooms every accepted file is asked about.
const USERS: &[&str] = &[
    "@alice:example.org",
    "@irc_alice:example.org",
    "@irc_alice1:example.org",
    "@irc_alice:example.org.evil",
    "@IRC_alice:example.org",
    "@xmpp_x:example.org",
    "@watched_eve:example.org",
    "@WATCHED_eve:example.org",
    "@whatsappbot:example.org",
    "@whatsappbot:example.org.evil",
    "@whatsapp_1:example.org",
    "@whatsapp_1:exampleXorg",
    "@telegram_1:example.org",
    "@telegrambot:example.org",
    "@facebook_x:example.org",
    "@_github_x:example.org",
    "@feeds:example.org",
    "@feeds:example.org2",
    "@heisenbridge:example.org",
    "@appservice-irc:example.org",
    "@echo:example.org",
    "@echo_x:example.org",
];
const ALIASES: &[&str] = &[
    "#irc_#chan:example.org",
    "#github_x:example.org",
    "#github_:example.org",
    "#telegram_x:example.org",
    "#quirks_x:example.org",
    "#echo_x:example.org",
    "#other:example.org",
];
const ROOMS: &[&str] = &["!kWdWpEKbaPpHzAHyaN:example.org", "!other:example.org"];

/// Patterns and subjects for comparing regex syntax and matching with Python's `re`.
const PATTERNS: &[&str] = &[
    "@irc_.*",
    r"^@bot:example\.org$",
    r"\#irc_.*:example\.org",
    r"@(?P<n>irc|xmpp)_.+\Z",
    "(?i)@IRC_.*",
    "(?x) @ irc _ .* # comment",
    "(?i:@A)b.*",
    "@[^:]+:example[.]org",
    "@[]a-]+",
    "@[a-]+",
    r"@\w+:\S+",
    r"@\d{2,}",
    "@a{,2}b",
    "@a{}",
    "@a{1,2",
    "@(a|b)*?c",
    r"@\x41\u00e9\101",
    r"@[\x41-\x43]",
    "@ä.*",
    "",
    "@a|#b",
    "(?#comment)@x",
    r"\@\:\-\~",
    "@a$",
    // Python refuses these.
    r"\z",
    "(?<n>a)",
    r"[\d-z]",
    r"\8",
    r"\x4",
    "a**",
    "^*",
    "(?i)a(?m)b",
    "(",
    ")",
    "[",
    r"a\",
    "(?L)x",
    r"\G",
    "a{3,2}",
    "(?P<1>x)",
];
/// Patterns Python accepts and the `regex` crate cannot do.
const UNSUPPORTED: &[&str] = &[
    "@irc_(?!admin).*",
    "(?<=@)irc",
    r"@(a)\1",
    "(?P<a>x)(?P=a)",
    "(?>a)",
    "a*+",
    "(?a)x",
    r"\N{LATIN SMALL LETTER A}",
];
const SUBJECTS: &[&str] = &[
    "",
    "@irc_bob:example.org",
    "@IRC_bob",
    "@bot:example.org",
    "@bot:example.org\n",
    "@bot:example.org.evil",
    "#irc_x:example.org",
    "@xmpp_a",
    "@Ab",
    "@ab",
    "@]a-",
    "@bob:examplexorg",
    "@bob:example.org",
    "@12",
    "@1",
    "@aab",
    "@b",
    "@a{}",
    "@a{1,2",
    "@ababc",
    "@Aé\u{41}",
    "@B",
    "@äx",
    "@a",
    "#b",
    "@x",
    "@:-~",
    "@a\n",
];

/// The Synapse virtualenv's Python, found as the end-to-end tests find it (`tests/src/synapse.rs`,
/// which this crate cannot use: that crate depends on the whole framework).
fn venv_python() -> PathBuf {
    let venv = match std::env::var_os("TRESTLE_SYNAPSE_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/synapse-venv"),
    };
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "Synapse is not installed: {} does not exist. Run scripts/install-synapse.sh \
         (or set TRESTLE_SYNAPSE_VENV to a virtualenv with matrix-synapse).",
        python.display()
    );
    python
}

fn patterns() -> Vec<&'static str> {
    PATTERNS.iter().chain(UNSUPPORTED).copied().collect()
}

/// A registration Trestle generates, written (once) where Synapse can read it.
fn generated() -> &'static (PathBuf, Registration) {
    static GENERATED: OnceLock<(PathBuf, Registration)> = OnceLock::new();
    GENERATED.get_or_init(|| {
        let registration = Registration::generate_with_bot(
            "echo",
            Some("http://localhost:29300/echo".into()),
            "echo",
            "echo_",
            SERVER,
        );
        let path = std::env::temp_dir().join(format!(
            "trestle-corpus-generated-{}.yaml",
            std::process::id()
        ));
        registration.write_file(&path).unwrap();
        (path, registration)
    })
}

/// Synapse's reading of every corpus file and the generated one, and Python's of `PATTERNS`.
fn synapse() -> &'static Value {
    static ANSWER: OnceLock<Value> = OnceLock::new();
    ANSWER.get_or_init(|| {
        let mut paths: Vec<String> = ["accepted", "refused", "trestle-refuses"]
            .iter()
            .flat_map(|kind| files(kind))
            .map(|p| p.display().to_string())
            .collect();
        paths.push(generated().0.display().to_string());
        let request = json!({
            "hostname": SERVER, "files": paths, "users": USERS, "aliases": ALIASES,
            "rooms": ROOMS, "patterns": patterns(), "subjects": SUBJECTS,
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/synapse_reads.py");
        let mut child = Command::new(venv_python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        serde_json::to_writer(child.stdin.take().unwrap(), &request).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "synapse_reads.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    })
}

/// Compares Trestle's reading of an accepted file with Synapse's.
fn same_as_synapse(path: &str, r: &Registration, s: &Value) {
    let ctx = |what: &str| format!("{path}: {what}");
    assert_eq!(s["id"], r.id, "{}", ctx("id"));
    assert_eq!(
        s["url"].as_str(),
        r.url.as_deref().map(|u| u.trim_end_matches('/')),
        "{}",
        ctx("url")
    );
    assert_eq!(s["as_token"], r.as_token, "{}", ctx("as_token"));
    assert_eq!(s["hs_token"], r.hs_token, "{}", ctx("hs_token"));
    let bot = r.bot_user_id(SERVER);
    assert_eq!(s["sender"], bot, "{}", ctx("sender"));
    for kind in [
        NamespaceKind::Users,
        NamespaceKind::Aliases,
        NamespaceKind::Rooms,
    ] {
        let key = match kind {
            NamespaceKind::Users => "users",
            NamespaceKind::Aliases => "aliases",
            _ => "rooms",
        };
        let ours: Vec<Value> = namespace(r, kind)
            .into_iter()
            .map(|(regex, exclusive)| json!([regex, exclusive]))
            .collect();
        assert_eq!(s["namespaces"][key], json!(ours), "{}", ctx(key));
    }
    assert_eq!(
        s["rate_limited"],
        r.rate_limited.unwrap_or(true),
        "{}",
        ctx("rate_limited")
    );
    let protocols: BTreeSet<&str> = r.protocols.iter().flatten().map(String::as_str).collect();
    assert_eq!(s["protocols"], json!(protocols), "{}", ctx("protocols"));
    assert_eq!(
        s["receive_ephemeral"],
        r.receive_ephemeral.unwrap_or(false),
        "{}",
        ctx("receive_ephemeral")
    );
    assert_eq!(
        s["push_ephemeral_unstable"],
        r.push_ephemeral_unstable.unwrap_or(false),
        "{}",
        ctx("de.sorunome.msc2409.push_ephemeral")
    );
    assert_eq!(
        s["msc3202"],
        r.msc3202.unwrap_or(false),
        "{}",
        ctx("msc3202")
    );
    assert_eq!(
        s["msc4190"],
        r.msc4190.unwrap_or(false),
        "{}",
        ctx("msc4190")
    );

    let users: Vec<&str> = USERS.iter().copied().chain([bot.as_str()]).collect();
    let probe = |name: &str, ours: Vec<bool>| {
        assert_eq!(s["probes"][name], json!(ours), "{}", ctx(name));
    };
    probe(
        "interested",
        users
            .iter()
            .map(|u| r.is_interested_in_user(u, SERVER))
            .collect(),
    );
    probe(
        "exclusive",
        users
            .iter()
            .map(|u| r.is_exclusive_user(u, SERVER))
            .collect(),
    );
    probe(
        "aliases",
        ALIASES
            .iter()
            .map(|a| r.namespaces.matches(NamespaceKind::Aliases, a))
            .collect(),
    );
    probe(
        "rooms",
        ROOMS
            .iter()
            .map(|a| r.namespaces.matches(NamespaceKind::Rooms, a))
            .collect(),
    );
}

#[test]
fn synapse_reads_the_corpus_alike() {
    let answer = &synapse()["files"];
    for kind in ["accepted", "refused", "trestle-refuses"] {
        for path in files(kind) {
            let key = path.display().to_string();
            let s = &answer[&key];
            let ours = Registration::from_file(&path);
            match kind {
                "accepted" => {
                    assert_eq!(s["ok"], true, "Synapse refuses {key}: {}", s["error"]);
                    same_as_synapse(&key, &ours.unwrap(), s);
                }
                "refused" => {
                    assert_eq!(s["ok"], false, "Synapse accepts {key}");
                    assert!(ours.is_err(), "Trestle accepts {key}");
                }
                _ => {
                    assert_eq!(s["ok"], true, "Synapse refuses {key}: {}", s["error"]);
                    assert!(ours.is_err(), "Trestle accepts {key}");
                }
            }
        }
    }
    let (path, registration) = generated();
    let key = path.display().to_string();
    let s = &answer[&key];
    assert_eq!(
        s["ok"], true,
        "Synapse refuses what Trestle generates: {}",
        s["error"]
    );
    let read = Registration::from_file(path).unwrap();
    same_as_synapse(&key, &read, s);
    assert_eq!(&read, registration);
    std::fs::remove_file(path).ok();
}

/// Trestle's verdict on a namespace regex: `Ok` with its matches, or the error's text.
fn trestle_regex(pattern: &str) -> Result<Vec<bool>, String> {
    let mut r = Registration::generate("r", None, "bot", "r_", SERVER);
    r.namespaces.users = vec![Namespace::new(true, pattern)];
    r.validate("test").map_err(|e| e.to_string())?;
    Ok(SUBJECTS
        .iter()
        .map(|s| r.namespaces.users[0].matches(s))
        .collect())
}

#[test]
fn namespace_regexes_match_as_in_python() {
    let answer = &synapse()["patterns"];
    for pattern in &patterns() {
        let python = &answer[*pattern];
        let ours = trestle_regex(pattern);
        match (python["ok"].as_bool().unwrap(), ours) {
            (true, Ok(matches)) => {
                assert!(!UNSUPPORTED.contains(pattern), "{pattern:?} now works");
                for (i, subject) in SUBJECTS.iter().enumerate() {
                    assert_eq!(
                        python["matches"][i], matches[i],
                        "{pattern:?} on {subject:?}"
                    );
                }
            }
            (true, Err(e)) => {
                assert!(UNSUPPORTED.contains(pattern), "{pattern:?}: {e}");
                assert!(e.contains("Synapse accepts"), "{pattern:?}: {e}");
            }
            (false, Ok(_)) => panic!("{pattern:?}: Python refuses it ({})", python["error"]),
            (false, Err(e)) => assert!(e.contains("not a valid regular expression"), "{e}"),
        }
    }
}
