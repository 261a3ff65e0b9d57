//! Names: IRC nicks from Matrix display names, and Matrix localparts for IRC channels and nicks.

/// Whether a message target or parameter names a channel (by the prefixes RFC 2812 §1.3
/// allows), rather than a nick.
pub fn is_channel(name: &str) -> bool {
    name.starts_with(['#', '&', '!', '+'])
}

/// IRC's default case mapping (`rfc1459`): ASCII letters, and `[]\~` as the upper case of `{}|^`.
pub fn irc_lowercase(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c,
        })
        .collect()
}

fn nick_special(c: char) -> bool {
    matches!(c, '[' | ']' | '\\' | '`' | '_' | '^' | '{' | '|' | '}')
}

/// A valid IRC nick of at most `max_len` characters from a Matrix display name: spaces become
/// `_`, other characters IRC does not allow are dropped, and a name that would start with a
/// digit or `-` gets a `_` in front. `fallback` is used when nothing is left.
pub fn sanitize_nick(name: &str, fallback: &str, max_len: usize) -> String {
    let mut nick: String = name
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('_'),
            c if c.is_ascii_alphanumeric() || nick_special(c) || c == '-' => Some(c),
            _ => None,
        })
        .collect();
    if nick.is_empty() && fallback != name {
        return sanitize_nick(fallback, "matrix", max_len);
    }
    if nick.is_empty() {
        nick.push_str("matrix");
    }
    if nick.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        nick.insert(0, '_');
    }
    nick.chars().take(max_len.max(1)).collect()
}

/// Nicks to try in turn when a nick is taken: the nick, then with `_` appended (or replacing the
/// last character when there is no room), then with a number.
pub fn nick_candidates(nick: &str, max_len: usize) -> impl Iterator<Item = String> + '_ {
    let max_len = max_len.max(2);
    let with_suffix = move |suffix: String| -> String {
        let keep = max_len.saturating_sub(suffix.len());
        let mut base: String = nick.chars().take(keep).collect();
        base.push_str(&suffix);
        base
    };
    std::iter::once(nick.chars().take(max_len).collect())
        .chain(std::iter::once(with_suffix("_".into())))
        .chain((1..10_000).map(move |n| with_suffix(n.to_string())))
}

/// Escapes a string into a Matrix localpart: lower-case ASCII letters, digits, `.`, `_`, `-` and
/// `/` stay; everything else (upper case included, and `=` itself) becomes `=xx` for each UTF-8
/// byte. [`unescape_localpart`] reverses it.
pub fn escape_localpart(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => out.push(byte as char),
            _ => out.push_str(&format!("={byte:02x}")),
        }
    }
    out
}

/// Reverses [`escape_localpart`]; `None` if the text is not an escaped string.
pub fn unescape_localpart(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = s.get(i + 1..i + 3)?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A localpart pattern such as `irc_{network}_{channel}`: `{network}` is the network's name and
/// exactly one other placeholder (`key`) is the escaped channel or nick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    template: String,
    key: &'static str,
}

impl Pattern {
    /// Checks that the template has the placeholder `{key}` exactly once.
    pub fn new(template: &str, key: &'static str) -> Result<Self, String> {
        let placeholder = format!("{{{key}}}");
        if template.matches(&placeholder).count() != 1 {
            return Err(format!(
                "the pattern {template:?} must contain {placeholder} exactly once"
            ));
        }
        let probe = template
            .replace("{network}", "net")
            .replace(&placeholder, "x");
        if probe.is_empty() || escape_localpart(&probe) != probe {
            return Err(format!(
                "the pattern {template:?} may only contain a-z, 0-9, '.', '_', '-', '/' besides its placeholders"
            ));
        }
        Ok(Pattern {
            template: template.to_owned(),
            key,
        })
    }

    /// The localpart for `value` on `network`.
    pub fn localpart(&self, network: &str, value: &str) -> String {
        let (before, after) = self.parts(network);
        format!("{before}{}{after}", escape_localpart(value))
    }

    /// The value behind a localpart on `network`, if the localpart follows the pattern.
    pub fn value(&self, network: &str, localpart: &str) -> Option<String> {
        let (before, after) = self.parts(network);
        let escaped = localpart.strip_prefix(&before)?.strip_suffix(&after)?;
        if escaped.is_empty() {
            return None;
        }
        unescape_localpart(escaped)
    }

    fn parts(&self, network: &str) -> (String, String) {
        let filled = self
            .template
            .replace("{network}", &escape_localpart(&network.to_lowercase()));
        let placeholder = format!("{{{}}}", self.key);
        let (before, after) = filled.split_once(&placeholder).unwrap_or((&filled, ""));
        (before.to_owned(), after.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks_from_display_names() {
        assert_eq!(sanitize_nick("Ada Lovelace", "ada", 30), "Ada_Lovelace");
        assert_eq!(sanitize_nick("Ada Lovelace", "ada", 9), "Ada_Lovel");
        assert_eq!(sanitize_nick("Zoë [away]", "z", 30), "Zo_[away]");
        assert_eq!(sanitize_nick("1337", "x", 30), "_1337");
        assert_eq!(sanitize_nick("-dash", "x", 30), "_-dash");
        assert_eq!(sanitize_nick("日本", "alice", 30), "alice");
        assert_eq!(sanitize_nick("日本", "日本", 30), "matrix");
    }

    #[test]
    fn collisions_get_distinct_nicks_within_the_limit() {
        let tried: Vec<String> = nick_candidates("alice", 9).take(4).collect();
        assert_eq!(tried, ["alice", "alice_", "alice1", "alice2"]);
        let tried: Vec<String> = nick_candidates("abcdefghi", 9).take(3).collect();
        assert_eq!(tried, ["abcdefghi", "abcdefgh_", "abcdefgh1"]);
        let many: std::collections::HashSet<String> =
            nick_candidates("abcdefghi", 9).take(500).collect();
        assert_eq!(many.len(), 500);
        assert!(many.iter().all(|n| n.len() <= 9));
    }

    #[test]
    fn localparts_escape_and_unescape() {
        for value in ["chan", "Alice", "we=ird", "a b", "é", "[x]|y", "#cpp", ""] {
            let escaped = escape_localpart(value);
            assert!(
                escaped.bytes().all(
                    |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' | b'=')
                ),
                "{escaped}"
            );
            assert_eq!(unescape_localpart(&escaped).as_deref(), Some(value));
        }
        assert_eq!(escape_localpart("Alice"), "=41lice");
        assert_ne!(escape_localpart("Alice"), escape_localpart("alice"));
        assert_eq!(unescape_localpart("bad=zz"), None);
        assert_eq!(unescape_localpart("bad=4"), None);
        assert_eq!(unescape_localpart("=4A"), None);
    }

    #[test]
    fn patterns_format_and_parse() {
        let channels = Pattern::new("irc_{network}_{channel}", "channel").unwrap();
        assert_eq!(channels.localpart("Libera", "rust"), "irc_libera_rust");
        assert_eq!(
            channels.value("Libera", "irc_libera_rust").as_deref(),
            Some("rust")
        );
        assert_eq!(channels.value("libera", "irc_other_rust"), None);
        assert_eq!(channels.value("libera", "irc_libera_"), None);
        let nicks = Pattern::new("{nick}.irc.{network}", "nick").unwrap();
        assert_eq!(nicks.localpart("net", "Bob"), "=42ob.irc.net");
        assert_eq!(nicks.value("net", "=42ob.irc.net").as_deref(), Some("Bob"));
        assert!(Pattern::new("irc_{network}", "nick").is_err());
        assert!(Pattern::new("{nick}{nick}", "nick").is_err());
        assert!(Pattern::new("IRC_{nick}", "nick").is_err());
    }

    #[test]
    fn irc_case_mapping() {
        assert_eq!(irc_lowercase("Nick[A]\\~"), "nick{a}|^");
    }
}
