use super::*;

const GOOD: &str = r#"
id: echo
url: "http://127.0.0.1:9000"
as_token: aaaa
hs_token: bbbb
sender_localpart: echo
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
io.element.msc4190: true
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: "@echo_.*:localhost"
  aliases: []
x-custom-key: 7
"#;

fn parse(yaml: &str) -> Result<Registration> {
    Registration::parse(yaml, "reg.yaml")
}

fn error_field(yaml: &str) -> String {
    match parse(yaml) {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn reads_every_field_including_unstable_keys() {
    let r = parse(GOOD).unwrap();
    assert_eq!(r.id, "echo");
    assert_eq!(r.url.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!((r.as_token.as_str(), r.hs_token.as_str()), ("aaaa", "bbbb"));
    assert_eq!(r.rate_limited, Some(false));
    assert_eq!(r.receive_ephemeral, Some(true));
    assert_eq!(r.push_ephemeral_unstable, Some(true));
    assert_eq!(r.msc3202, Some(true));
    assert_eq!(r.msc4190, Some(true));
    assert_eq!(r.protocols, Some(vec!["irc".to_owned()]));
    assert!(r.namespaces.users[0].exclusive);
    assert!(r.namespaces.rooms.is_empty());
    assert_eq!(r.other["x-custom-key"], serde_json::json!(7));
}

#[test]
fn yaml_round_trip_keeps_everything() {
    let r = parse(GOOD).unwrap();
    let again = parse(&r.to_yaml()).unwrap();
    assert_eq!(r, again);
    assert!(
        r.to_yaml()
            .contains("de.sorunome.msc2409.push_ephemeral: true")
    );
}

#[test]
fn explicit_null_url_is_kept_and_written() {
    let yaml = GOOD.replace("url: \"http://127.0.0.1:9000\"", "url: null");
    let r = parse(&yaml).unwrap();
    assert_eq!(r.url, None);
    assert!(r.to_yaml().contains("url: null"), "{}", r.to_yaml());
    assert_eq!(parse(&r.to_yaml()).unwrap().url, None);
}

#[test]
fn missing_url_is_an_error_like_in_synapse() {
    let yaml = GOOD.replace("url: \"http://127.0.0.1:9000\"\n", "");
    let err = parse(&yaml).unwrap_err().to_string();
    assert!(err.contains("url"), "{err}");
    assert!(err.starts_with("reg.yaml"), "{err}");
}

#[test]
fn errors_name_the_field() {
    for (from, to, field) in [
        ("as_token: aaaa", "as_token: \"\"", "as_token"),
        ("hs_token: bbbb", "hs_token: \" \"", "hs_token"),
        ("id: echo", "id: a|b", "id"),
        ("id: echo", "id: 12", "id"),
        (
            "sender_localpart: echo",
            "sender_localpart: Echo Bot",
            "sender_localpart",
        ),
        (
            "sender_localpart: echo",
            "sender_localpart: a=b",
            "sender_localpart",
        ),
        (
            "@echo_.*:localhost",
            "@echo_(.*:localhost",
            "namespaces.users[0].regex",
        ),
        ("url: \"http://127.0.0.1:9000\"", "url: 5", "url"),
        (
            "org.matrix.msc3202: true",
            "org.matrix.msc3202: null",
            "org.matrix.msc3202",
        ),
        ("protocols: [irc]", "protocols: irc", "protocols"),
    ] {
        assert_eq!(error_field(&GOOD.replace(from, to)), field, "{to}");
    }
}

#[test]
fn what_synapse_accepts_is_accepted() {
    // Equal tokens, a URL Synapse cannot push to, a mixed-case bot (mautrix makes one), and
    // values Synapse reads by their Python truth.
    let yaml = GOOD
        .replace("hs_token: bbbb", "hs_token: aaaa")
        .replace("url: \"http://127.0.0.1:9000\"", "url: localhost:9000")
        .replace("sender_localpart: echo", "sender_localpart: Xy~z")
        .replace("rate_limited: false", "rate_limited: \"false\"")
        .replace("receive_ephemeral: true", "receive_ephemeral: \"\"")
        .replace(
            "de.sorunome.msc2409.push_ephemeral: true",
            "de.sorunome.msc2409.push_ephemeral: 1",
        );
    let r = parse(&yaml).unwrap();
    assert_eq!(r.rate_limited, None, "a string is Synapse's default, true");
    assert_eq!(r.receive_ephemeral, Some(false));
    assert_eq!(r.push_ephemeral_unstable, Some(true));
    assert!(r.receives_ephemeral());
    assert_eq!(r.bot_user_id("x"), "@Xy~z:x");
    assert_eq!(r.warnings().len(), 2, "{:?}", r.warnings());
}

#[test]
fn bad_regex_error_says_why() {
    let err = parse(&GOOD.replace("@echo_.*:localhost", "@echo_(.*:localhost"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reg.yaml: field `namespaces.users[0].regex`"),
        "{err}"
    );
    assert!(err.contains("not a valid regular expression"), "{err}");
}

#[test]
fn namespace_without_exclusive_is_refused() {
    let yaml = GOOD.replace("    - exclusive: true\n      regex", "    - regex");
    let err = parse(&yaml).unwrap_err().to_string();
    assert!(err.contains("exclusive"), "{err}");
}

#[test]
fn syntax_errors_carry_a_location() {
    let err = parse("id: [unclosed\n").unwrap_err();
    assert!(matches!(err, Error::Syntax { .. }));
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn bot_outside_its_namespace_is_still_its_own_user() {
    let r = parse(GOOD).unwrap();
    assert!(!r.is_user_in_namespace("@echo:localhost"));
    assert!(r.is_interested_in_user("@echo:localhost", "localhost"));
    assert!(r.is_exclusive_user("@echo:localhost", "localhost"));
    assert!(r.is_exclusive_user("@echo_a:localhost", "localhost"));
    assert!(!r.is_interested_in_user("@other:localhost", "localhost"));
}

#[test]
fn namespace_matching_is_anchored_at_the_start_only() {
    let ns = Namespace::new(true, "@irc_.*:example\\.org");
    assert!(ns.matches("@irc_bob:example.org"));
    // Python's re.match does not anchor the end: a longer id still matches.
    assert!(ns.matches("@irc_bob:example.org.evil"));
    // ...but it anchors the start.
    assert!(!ns.matches("x@irc_bob:example.org"));

    let bare = Namespace::new(false, "irc");
    assert!(bare.matches("ircbot"));
    assert!(!bare.matches("@irc"));

    // An alternation is anchored as a whole, as Python does, not only its first branch.
    let alt = Namespace::new(false, "@a:x|@b:x");
    assert!(alt.matches("@b:x"));
    assert!(!alt.matches("z@b:x"));
}

#[test]
fn exclusive_matching() {
    let r = parse(GOOD).unwrap();
    assert!(
        r.namespaces
            .matches_exclusive(NamespaceKind::Users, "@echo_a:localhost")
    );
    assert!(
        !r.namespaces
            .matches(NamespaceKind::Aliases, "#echo_a:localhost")
    );
    assert!(r.is_user_in_namespace("@echo_a:localhost"));
}

#[test]
fn generated_tokens_are_strong_and_distinct() {
    let a = Registration::generate("x", Some("http://h:1".into()), "bot", "x_", "hs");
    let b = Registration::generate("x", Some("http://h:1".into()), "bot", "x_", "hs");
    assert_eq!(a.as_token.len(), 64);
    assert!(a.as_token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a.as_token, a.hs_token);
    assert_ne!(a.as_token, b.as_token);
    a.validate("gen").unwrap();
    assert!(a.is_user_in_namespace("@x_anything:hs"));
    assert!(a.is_user_in_namespace("@bot:hs"));
    assert!(!a.is_user_in_namespace("@other:hs"));
}

#[test]
fn generated_with_a_bot_has_a_hidden_sender() {
    let a = Registration::generate_with_bot("echo", None, "echo", "echo_", "hs");
    let b = Registration::generate_with_bot("echo", None, "echo", "echo_", "hs");
    a.validate("gen").unwrap();
    assert!(a.sender_localpart.starts_with("echo-sender-"));
    assert_eq!(a.sender_localpart.len(), "echo-sender-".len() + 8);
    assert_ne!(a.sender_localpart, b.sender_localpart);
    // The bot is an ordinary user of the exclusive namespace; the sender is not in it, and is
    // the appservice's own all the same (Synapse's `is_exclusive_user`).
    assert!(
        a.namespaces
            .matches_exclusive(NamespaceKind::Users, "@echo:hs")
    );
    assert!(a.is_user_in_namespace("@echo_alice:hs"));
    let sender = a.bot_user_id("hs");
    assert!(!a.is_user_in_namespace(&sender));
    assert!(a.is_exclusive_user(&sender, "hs"));
}

#[test]
fn file_round_trip_is_private() {
    let dir = std::env::temp_dir().join(format!("trestle-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r.yaml");
    let r = Registration::generate("x", None, "bot", "x_", "hs");
    r.write_file(&path).unwrap();
    assert_eq!(Registration::from_file(&path).unwrap(), r);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let missing = Registration::from_file(dir.join("nope.yaml")).unwrap_err();
    assert!(missing.to_string().contains("nope.yaml"));
    std::fs::remove_dir_all(dir).unwrap();
}
