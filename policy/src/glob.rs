//! The glob patterns of policy rules: `*` matches any run of characters, `?` exactly one.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#mpolicyrule>

/// Whether `text` matches `pattern`, character by character.
pub fn matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Greedy match with one backtrack point (the last `*`): linear in practice, never
    // exponential, whatever a hostile list puts in an entity.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether `pattern` has glob characters, i.e. may match more than itself.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_match_only_themselves() {
        assert!(matches("@spam:evil.example", "@spam:evil.example"));
        assert!(!matches("@spam:evil.example", "@spam:evil.example.org"));
        assert!(!matches("@spam:evil.example", "@spa:evil.example"));
        assert!(!matches("a", ""));
        assert!(matches("", ""));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(matches("@*:evil.example", "@anyone:evil.example"));
        assert!(matches("@*:evil.example", "@:evil.example"));
        assert!(!matches("@*:evil.example", "@anyone:good.example"));
        assert!(matches("*.evil.example", "matrix.evil.example"));
        assert!(!matches("*.evil.example", "evil.example"));
        assert!(matches("*", "anything at all"));
        assert!(matches("@spam*:*", "@spammer:localhost"));
        assert!(matches("a*b*c", "aXXbYYbZZc"));
        assert!(!matches("a*b*c", "aXXbYYbZZ"));
    }

    #[test]
    fn question_mark_matches_exactly_one() {
        assert!(matches("@user?:hs", "@user1:hs"));
        assert!(!matches("@user?:hs", "@user:hs"));
        assert!(!matches("@user?:hs", "@user12:hs"));
        assert!(matches("évil?", "évilé"));
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!matches(&pattern, &text));
    }

    #[test]
    fn globs_are_recognised() {
        assert!(is_glob("*.example"));
        assert!(is_glob("@u?:hs"));
        assert!(!is_glob("@u:hs"));
    }
}
