//! Matrix messages as IRC text: formatting, relayed names, reply quotes, edits, media links.

use trestle_bridge::{MessageContent, MessageKind};

use crate::irc::{connection::Kind, format::html_to_irc};

/// The IRC text of a Matrix message: its HTML as IRC codes when it has HTML, and `link` (where
/// IRC users can open its media) for media.
pub fn irc_text(content: &MessageContent, link: Option<&str>) -> String {
    let text = match &content.html {
        Some(html) => html_to_irc(html),
        None => content.body.clone(),
    };
    let Some(mxc) = &content.media else {
        return text;
    };
    let link = link.map_or_else(|| mxc.to_string(), str::to_owned);
    if text.is_empty() || text == link {
        link
    } else {
        format!("{text}: {link}")
    }
}

/// A link to a file of the homeserver's media repository at `media_url`, an address that serves
/// media without authentication (the `mxc://` URI if it cannot be one).
pub fn media_url_link(mxc: &trestle::ruma::MxcUri, media_url: &str) -> String {
    match mxc.parts() {
        Ok((server, id)) => format!(
            "{}/_matrix/client/v1/media/download/{server}/{id}",
            media_url.trim_end_matches('/')
        ),
        Err(_) => mxc.to_string(),
    }
}

/// The IRC text of a long message posted as a file at `link`: its first line, then how many
/// lines there are and where.
pub fn paste_line(text: &str, lines: usize, link: &str) -> String {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    format!("{first} [{lines} lines: {link}]")
}

/// How many lines IRC would get for `text` (blank ones are dropped).
pub fn line_count(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// How a message kind is sent on IRC.
pub fn irc_kind(kind: MessageKind) -> Kind {
    match kind {
        MessageKind::Notice => Kind::Notice,
        MessageKind::Emote => Kind::Action,
        _ => Kind::Privmsg,
    }
}

/// A message the bot relays for `name`: every line says who speaks.
pub fn relayed(name: &str, kind: Kind, text: &str) -> (Kind, String) {
    let lines = text.split('\n').filter(|l| !l.trim().is_empty());
    let text = match kind {
        Kind::Action => lines.map(|l| format!("* {name} {l}")).collect::<Vec<_>>(),
        _ => lines.map(|l| format!("<{name}> {l}")).collect(),
    }
    .join("\n");
    let kind = if kind == Kind::Notice {
        Kind::Notice
    } else {
        Kind::Privmsg
    };
    (kind, text)
}

/// The longest quote of a replied-to message.
const QUOTE: usize = 40;

/// A reply's text: who it answers and a short quote of what, then the reply.
pub fn with_quote(nick: &str, quoted: &str, text: &str) -> String {
    let first = quoted.lines().next().unwrap_or("");
    let short: String = first.chars().take(QUOTE).collect();
    let ellipsis = if short.len() < quoted.len() {
        "…"
    } else {
        ""
    };
    format!("{nick}: \"{short}{ellipsis}\" <- {text}")
}

/// An edit as a compact correction: only the words that changed (with `…` for the rest)
/// when the old text is known and most of it stayed; otherwise the whole new text.
pub fn correction(old: Option<&str>, new: &str) -> String {
    let Some(old) = old else {
        return format!("* {new}");
    };
    let (a, b): (Vec<&str>, Vec<&str>) = (old.split(' ').collect(), new.split(' ').collect());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let changed = &b[prefix..b.len() - suffix];
    if changed.is_empty() || changed.len() * 2 > b.len() {
        return format!("* {new}");
    }
    let before = if prefix > 0 { "…" } else { "" };
    let after = if suffix > 0 { "…" } else { "" };
    format!("* {before}{}{after}", changed.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrections_are_compact() {
        assert_eq!(
            correction(Some("I really like cats a lot"), "I really like dogs a lot"),
            "* …dogs…"
        );
        assert_eq!(correction(Some("hello wrld"), "hello world"), "* …world");
        assert_eq!(correction(Some("abc"), "xyz"), "* xyz");
        assert_eq!(correction(None, "new"), "* new");
        assert_eq!(correction(Some("a b c"), "a c"), "* a c");
    }

    #[test]
    fn relayed_lines_name_the_speaker() {
        assert_eq!(
            relayed("alice", Kind::Privmsg, "one\n\ntwo"),
            (Kind::Privmsg, "<alice> one\n<alice> two".to_owned())
        );
        assert_eq!(
            relayed("alice", Kind::Action, "waves"),
            (Kind::Privmsg, "* alice waves".to_owned())
        );
        assert_eq!(relayed("a", Kind::Notice, "n").0, Kind::Notice);
    }

    #[test]
    fn quotes_are_short() {
        let long = "x".repeat(100);
        let quoted = with_quote("bob", &long, "yes");
        assert_eq!(quoted, format!("bob: \"{}…\" <- yes", "x".repeat(40)));
        assert_eq!(with_quote("bob", "hi", "yes"), "bob: \"hi\" <- yes");
    }

    #[test]
    fn media_become_links() {
        let mut content = MessageContent::text("cat.png");
        content.media = Some("mxc://example.org/abc".into());
        let link = media_url_link(
            <&trestle::ruma::MxcUri>::from("mxc://example.org/abc"),
            "https://matrix.example.org/",
        );
        assert_eq!(
            link,
            "https://matrix.example.org/_matrix/client/v1/media/download/example.org/abc"
        );
        assert_eq!(irc_text(&content, Some(&link)), format!("cat.png: {link}"));
        assert_eq!(irc_text(&content, None), "cat.png: mxc://example.org/abc");
        let html = MessageContent::text("b").html("<b>b</b>");
        assert_eq!(irc_text(&html, None), "\x02b\x02");
    }

    #[test]
    fn a_paste_is_the_first_line_its_length_and_the_link() {
        let text = "\n  \nfirst line\nsecond\n\nthird";
        assert_eq!(line_count(text), 3);
        assert_eq!(
            paste_line(text, line_count(text), "https://hs/x"),
            "first line [3 lines: https://hs/x]"
        );
    }
}
