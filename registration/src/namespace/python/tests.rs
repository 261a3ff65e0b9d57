use super::*;

fn rust(pattern: &str) -> String {
    translate(pattern).unwrap()
}

#[test]
fn common_patterns_translate() {
    assert_eq!(rust("@irc_.*"), r"\x{40}irc_.*");
    assert_eq!(
        rust(r"^@bot:example\.org$"),
        r"^\x{40}bot\x{3A}example\x{2E}org(?:\n?\z)"
    );
    assert_eq!(rust(r"\#irc_.*"), r"\x{23}irc_.*");
    assert_eq!(rust("a{,3}b{2,}c{}"), r"a{0,3}b{2,}c\x{7B}\x{7D}");
    assert_eq!(rust("(?P<n>x)|[]a-]"), r"(?:x)|[\x{5D}a\x{2D}]");
    assert_eq!(rust(r"(?x) a b # c"), "ab");
    assert_eq!(rust(r"\Z\101[\b]"), r"\zA[\x{8}]");
}

#[test]
fn python_errors_are_invalid() {
    for p in [
        "a{3,2}",
        "[z-a]",
        "(?P<a>x)(?P<a>y)",
        r"\U00110000",
        r"(a)\2",
        "(?i-i:a)",
    ] {
        assert!(matches!(translate(p), Err(Problem::Invalid(_))), "{p}");
    }
}

#[test]
fn python_only_features_are_unsupported() {
    for p in ["(?!a)", "(?<=a)b", "(a)(?(1)b|c)", "a{2}+", r"\ud800"] {
        assert!(matches!(translate(p), Err(Problem::Unsupported(_))), "{p}");
    }
    // Python refuses this before the look-ahead matters.
    assert!(matches!(translate("(?=a)**"), Err(Problem::Invalid(_))));
}
