//! Splitting Matrix text into IRC lines that fit the 512-byte limit without losing text.

use super::format::{Style, apply_code, irc_to_plain};
use super::message::MAX_LINE;

/// The smallest text budget splitting works with; below it a line would be mostly codes.
const MIN_BUDGET: usize = 32;
/// The longest `user@host` part of a prefix we expect servers to put before our messages.
const USER_HOST_ALLOWANCE: usize = 10 + 1 + 63;

/// How many bytes of text fit in one `PRIVMSG`/`NOTICE` from `nick` to `target`, counting the
/// prefix (`:nick!user@host `) the server adds when it relays the line, and CTCP ACTION framing.
pub fn text_budget(nick: &str, target: &str, action: bool) -> usize {
    let prefix = 1 + nick.len() + 1 + USER_HOST_ALLOWANCE + 1;
    let command = "PRIVMSG ".len() + target.len() + " :".len();
    let framing = if action { "\x01ACTION \x01".len() } else { 0 };
    MAX_LINE
        .saturating_sub(2 + prefix + command + framing)
        .max(MIN_BUDGET)
}

/// Splits text (lines separated by `\n`, with IRC formatting codes) into lines of at most
/// `budget` bytes. Long lines break at a space where one is near the end (the space becomes the
/// break), otherwise between characters (never inside a UTF-8 character or a colour code). Formatting that is on at a
/// break is switched on again at the start of the next line. Blank lines are left out: IRC
/// cannot send an empty message.
pub fn split_lines(text: &str, budget: usize) -> Vec<String> {
    let budget = budget.max(MIN_BUDGET);
    let mut out = Vec::new();
    let mut style = Style::default();
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        let blank = irc_to_plain(line).trim().is_empty();
        let mut current = style.codes();
        let mut prefix_len = current.len();
        let mut last_space: Option<(usize, Style)> = None;
        let mut i = 0;
        while i < line.len() {
            let mut next = style.clone();
            let token_len = match apply_code(&line[i..], &mut next) {
                Some(used) => used,
                None => line[i..].chars().next().map_or(1, char::len_utf8),
            };
            let token = &line[i..i + token_len];
            i += token_len;
            if !blank && current.len() + token_len > budget && current.len() > prefix_len {
                match last_space.take() {
                    Some((at, at_style)) if at > budget / 3 && at < current.len() => {
                        let tail = current.split_off(at);
                        // The space becomes the line break (servers trim trailing spaces).
                        current.pop();
                        out.push(std::mem::take(&mut current));
                        current = at_style.codes();
                        prefix_len = current.len();
                        current.push_str(&tail);
                    }
                    _ => {
                        out.push(std::mem::take(&mut current));
                        current = style.codes();
                        prefix_len = current.len();
                    }
                }
            }
            current.push_str(token);
            style = next;
            if token == " " {
                last_space = Some((current.len(), style.clone()));
            }
        }
        if !blank && current.len() > prefix_len {
            out.push(current);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_joined(lines: &[String]) -> String {
        lines.iter().map(|l| irc_to_plain(l)).collect()
    }

    #[test]
    fn short_lines_stay_whole_and_blank_lines_go() {
        assert_eq!(
            split_lines("one\n\ntwo\r\n  \nthree", 400),
            ["one", "two", "three"]
        );
        assert!(split_lines("", 400).is_empty());
    }

    #[test]
    fn long_lines_break_at_spaces_and_keep_every_character() {
        let words: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
        let text = words.join(" ");
        let lines = split_lines(&text, 100);
        assert!(lines.len() > 10);
        for line in &lines {
            assert!(line.len() <= 100, "{} bytes: {line}", line.len());
        }
        for line in &lines {
            assert!(
                !line.starts_with(' ') && !line.ends_with(' '),
                "breaks at spaces: {line:?}"
            );
        }
        assert_eq!(lines.join(" "), text);
    }

    #[test]
    fn multibyte_text_without_spaces_breaks_on_char_boundaries() {
        let text = "日本語のテキスト🎉".repeat(40);
        let lines = split_lines(&text, 50);
        for line in &lines {
            assert!(line.len() <= 50);
        }
        assert_eq!(plain_joined(&lines), text);
    }

    #[test]
    fn formatting_carries_over_a_break() {
        let text = format!("\x02\x0304{}\x02 after", "x".repeat(60));
        let lines = split_lines(&text, 40);
        assert!(lines[1].starts_with("\x02\x0304"), "{:?}", lines[1]);
        assert_eq!(plain_joined(&lines), irc_to_plain(&text));
        // Across Matrix lines too: bold opened on one line is still on for the next.
        assert_eq!(split_lines("\x02a\nb\x02", 100), ["\x02a", "\x02b\x02"]);
        // A colour code is never cut in half.
        let coloured = "\x0312,04".repeat(20);
        for line in split_lines(&format!("{coloured}text"), 33) {
            assert!(!line.ends_with('\x03') && !line.ends_with(','), "{line:?}");
        }
    }

    #[test]
    fn budget_counts_prefix_command_target_and_action() {
        let plain = text_budget("alice", "#chan", false);
        assert_eq!(plain, 512 - 2 - (1 + 5 + 1 + 74 + 1) - (8 + 5 + 2));
        assert_eq!(text_budget("alice", "#chan", true), plain - 9);
        assert_eq!(text_budget(&"n".repeat(600), "#c", false), MIN_BUDGET);
    }
}
