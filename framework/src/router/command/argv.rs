//! Splitting a command's arguments, keeping what the user typed inside each one.
//!
//! Arguments are separated by whitespace. An argument that is wholly quoted — `"two words"`,
//! or with the typographic quotes phones type, `“two words”` — is one argument without its
//! quotes; inside it `\"` is a quote and `\\` a backslash. Anywhere else a quote is an
//! ordinary character that stays where it was typed, though whitespace between two quotes
//! does not split the argument, nor does whitespace inside the brackets of an argument that
//! starts with `[` or `{`: `["a b", "c"]` is one argument, exactly as typed, so JSON,
//! regular expressions and `key="value"` pairs reach the command unchanged.

/// The arguments of `text`.
pub(super) fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (arg, after) = quoted(rest).unwrap_or_else(|| word(rest));
        out.push(arg);
        rest = after.trim_start();
    }
    out
}

/// The closing quote for an opening one.
fn closing(open: char) -> Option<char> {
    match open {
        '"' => Some('"'),
        '“' => Some('”'),
        _ => None,
    }
}

/// A wholly quoted argument at the start of `text`, unquoted, and what follows it; `None`
/// unless the closing quote ends the argument.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut chars = text.char_indices();
    let close = closing(chars.next()?.1)?;
    let mut arg = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            if c != close && c != '\\' {
                arg.push('\\');
            }
            arg.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == close {
            let after = &text[i + c.len_utf8()..];
            let ends = after.chars().next().is_none_or(char::is_whitespace);
            return ends.then_some((arg, after));
        } else {
            arg.push(c);
        }
    }
    None
}

/// The argument at the start of `text` exactly as typed, and what follows it. An unclosed
/// quote or bracket keeps the rest of the text in it.
fn word(text: &str) -> (String, &str) {
    // Brackets group only a JSON-like argument, one that starts with one.
    let brackets = text.starts_with(['[', '{']);
    let mut depth = 0usize;
    let mut open: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match open {
            _ if c == '\\' => escaped = true,
            Some(close) if c == close => open = None,
            Some(_) => {}
            None if c.is_whitespace() && depth == 0 => {
                return (text[..i].to_owned(), &text[i..]);
            }
            None if brackets && matches!(c, '[' | '{') => depth += 1,
            None if brackets && matches!(c, ']' | '}') => depth = depth.saturating_sub(1),
            None => open = closing(c),
        }
    }
    (text.to_owned(), "")
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn whitespace_separates_and_runs_of_it_count_once() {
        assert_eq!(split("  hello \t world\n"), ["hello", "world"]);
        assert!(split("   ").is_empty());
    }

    #[test]
    fn a_wholly_quoted_argument_loses_its_quotes() {
        assert_eq!(split(r#""two words" three"#), ["two words", "three"]);
        assert_eq!(split(r#"“smart quotes” too"#), ["smart quotes", "too"]);
        assert_eq!(split(r#""""#), [""]);
        assert_eq!(split(r#""spam, scam""#), ["spam, scam"]);
        assert_eq!(split(r#""say \"hi\" \\ \d""#), [r#"say "hi" \ \d"#]);
    }

    #[test]
    fn quotes_inside_an_argument_stay_as_typed() {
        assert_eq!(split(r#"words ["a","b"]"#), ["words", r#"["a","b"]"#]);
        assert_eq!(split(r#"["a b", "c"] next"#), [r#"["a b", "c"]"#, "next"]);
        assert_eq!(split(r#"{"a": [1, 2]} x"#), [r#"{"a": [1, 2]}"#, "x"]);
        assert_eq!(split(r#"["]", "}"] x"#), [r#"["]", "}"]"#, "x"]);
        // Only an argument that starts with a bracket is grouped by brackets.
        assert_eq!(split("a[b c]"), ["a[b", "c]"]);
        assert_eq!(
            split(r#"["say \"hi there\""]"#),
            [r#"["say \"hi there\""]"#]
        );
        assert_eq!(split(r#"key="a b" x"#), [r#"key="a b""#, "x"]);
        assert_eq!(split(r#""a"b c"#), [r#""a"b"#, "c"]);
        assert_eq!(split("don't stop"), ["don't", "stop"]);
    }

    #[test]
    fn backslashes_outside_quotes_are_kept() {
        assert_eq!(split(r"\bspam\b \d+"), [r"\bspam\b", r"\d+"]);
        assert_eq!(split(r"a\ b c"), [r"a\ b", "c"]);
    }

    #[test]
    fn an_unclosed_quote_keeps_the_rest_together() {
        assert_eq!(split(r#"x "no end here"#), ["x", r#""no end here"#]);
        assert_eq!(split(r#"[1, 2"#), ["[1, 2"]);
    }
}
