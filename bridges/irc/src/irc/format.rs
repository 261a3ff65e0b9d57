//! IRC formatting codes ↔ Matrix HTML and plain text.
//! Codes: <https://modern.ircdocs.horse/formatting>; Matrix HTML: <https://spec.matrix.org/v1.16/client-server-api/#mroommessage-msgtypes>

/// Toggles bold.
pub const BOLD: char = '\x02';
/// Sets the colours by mIRC number: `\x03fg[,bg]`; alone, turns colour off.
pub const COLOR: char = '\x03';
/// Sets the colours in hex: `\x04RRGGBB[,RRGGBB]`.
pub const HEX_COLOR: char = '\x04';
/// Turns every formatting off.
pub const RESET: char = '\x0f';
/// Toggles monospace.
pub const MONOSPACE: char = '\x11';
/// Toggles swapping the foreground and background colours.
pub const REVERSE: char = '\x16';
/// Toggles italics.
pub const ITALIC: char = '\x1d';
/// Toggles strikethrough.
pub const STRIKE: char = '\x1e';
/// Toggles underline.
pub const UNDERLINE: char = '\x1f';

/// The 16 standard mIRC colours.
const PALETTE: [&str; 16] = [
    "#ffffff", "#000000", "#00007f", "#009300", "#ff0000", "#7f0000", "#9c009c", "#fc7f00",
    "#ffff00", "#00fc00", "#009393", "#00ffff", "#0000fc", "#ff00ff", "#7f7f7f", "#d2d2d2",
];

/// The formatting in effect at a point of an IRC line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Bold text.
    pub bold: bool,
    /// Italic text.
    pub italic: bool,
    /// Underlined text.
    pub underline: bool,
    /// Struck-through text.
    pub strike: bool,
    /// Monospaced text (code).
    pub monospace: bool,
    /// The foreground colour's mIRC number, if one is set.
    pub fg: Option<u8>,
    /// The background colour's mIRC number, if one is set (only with a foreground).
    pub bg: Option<u8>,
}

impl Style {
    /// The codes that turn this style on at the start of a line.
    pub fn codes(&self) -> String {
        let mut out = String::new();
        for (on, code) in [
            (self.bold, BOLD),
            (self.italic, ITALIC),
            (self.underline, UNDERLINE),
            (self.strike, STRIKE),
            (self.monospace, MONOSPACE),
        ] {
            if on {
                out.push(code);
            }
        }
        if let Some(fg) = self.fg {
            out.push(COLOR);
            out.push_str(&format!("{fg:02}"));
            if let Some(bg) = self.bg {
                out.push_str(&format!(",{bg:02}"));
            }
        }
        out
    }

    fn is_plain(&self) -> bool {
        *self == Style::default()
    }
}

/// Reads one formatting code at the start of `s` (which begins with a control character),
/// updates `style` and returns how many bytes the code took, or `None` if `s` does not start
/// with a code.
pub fn apply_code(s: &str, style: &mut Style) -> Option<usize> {
    let first = s.chars().next()?;
    match first {
        BOLD => style.bold = !style.bold,
        ITALIC => style.italic = !style.italic,
        UNDERLINE => style.underline = !style.underline,
        STRIKE => style.strike = !style.strike,
        MONOSPACE => style.monospace = !style.monospace,
        REVERSE => {}
        RESET => *style = Style::default(),
        COLOR => {
            let bytes = s.as_bytes();
            let digits = |from: usize| {
                let mut n = 0;
                while n < 2 && bytes.get(from + n).is_some_and(u8::is_ascii_digit) {
                    n += 1;
                }
                n
            };
            let fg_len = digits(1);
            if fg_len == 0 {
                style.fg = None;
                style.bg = None;
                return Some(1);
            }
            style.fg = s[1..1 + fg_len].parse().ok();
            let mut used = 1 + fg_len;
            if bytes.get(used) == Some(&b',') {
                let bg_len = digits(used + 1);
                if bg_len > 0 {
                    style.bg = s[used + 1..used + 1 + bg_len].parse().ok();
                    used += 1 + bg_len;
                }
            }
            return Some(used);
        }
        HEX_COLOR => {
            // Hex colours are rare; they are read and dropped so their digits do not show.
            let hex = s[1..]
                .bytes()
                .take(6)
                .take_while(u8::is_ascii_hexdigit)
                .count();
            let mut used = 1 + hex;
            if hex == 6 && s.as_bytes().get(used) == Some(&b',') {
                let bg = s[used + 1..]
                    .bytes()
                    .take(6)
                    .take_while(u8::is_ascii_hexdigit)
                    .count();
                if bg == 6 {
                    used += 7;
                }
            }
            return Some(used);
        }
        _ => return None,
    }
    Some(first.len_utf8())
}

/// The runs of text of an IRC line, each with its style (codes removed).
fn styled_runs(line: &str) -> Vec<(Style, String)> {
    let mut runs: Vec<(Style, String)> = Vec::new();
    let mut style = Style::default();
    let mut i = 0;
    while i < line.len() {
        if let Some(used) = apply_code(&line[i..], &mut style) {
            i += used;
            continue;
        }
        let c = line[i..].chars().next().unwrap_or(' ');
        i += c.len_utf8();
        match runs.last_mut() {
            Some((s, text)) if *s == style => text.push(c),
            _ => runs.push((style.clone(), c.to_string())),
        }
    }
    runs
}

/// The text of an IRC line without its formatting codes.
pub fn irc_to_plain(line: &str) -> String {
    styled_runs(line)
        .into_iter()
        .map(|(_, text)| text)
        .collect()
}

/// Matrix HTML for an IRC line, or `None` when it has no formatting (send the plain body only).
/// Every character of the text is escaped; only tags made here appear.
pub fn irc_to_html(line: &str) -> Option<String> {
    let segments = styled_runs(line);
    let formatted = segments.iter().any(|(style, _)| !style.is_plain());
    if !formatted {
        return None;
    }
    let mut html = String::new();
    for (style, text) in segments {
        let mut close = Vec::new();
        let color = |c: Option<u8>| c.and_then(|c| PALETTE.get(usize::from(c)).copied());
        let (fg, bg) = (color(style.fg), color(style.bg));
        if fg.is_some() || bg.is_some() {
            html.push_str("<font");
            if let Some(fg) = fg {
                html.push_str(&format!(" data-mx-color=\"{fg}\""));
            }
            if let Some(bg) = bg {
                html.push_str(&format!(" data-mx-bg-color=\"{bg}\""));
            }
            html.push('>');
            close.push("</font>");
        }
        for (on, open, end) in [
            (style.bold, "<b>", "</b>"),
            (style.italic, "<i>", "</i>"),
            (style.underline, "<u>", "</u>"),
            (style.strike, "<del>", "</del>"),
            (style.monospace, "<code>", "</code>"),
        ] {
            if on {
                html.push_str(open);
                close.push(end);
            }
        }
        html.push_str(&escape_html(&text));
        for end in close.iter().rev() {
            html.push_str(end);
        }
    }
    Some(html)
}

/// Escapes text for HTML.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// IRC text (lines separated by `\n`) for Matrix HTML: bold, italic, underline, strike-through,
/// code and colours become IRC codes, block elements and `<br>` new lines, links their text
/// followed by the address when it differs; a reply fallback (`<mx-reply>`) is left out.
pub fn html_to_irc(html: &str) -> String {
    let mut out = String::new();
    let mut depth = [0usize; 5];
    let mut colors: Vec<Option<u8>> = Vec::new();
    let mut links: Vec<Option<String>> = Vec::new();
    let mut link_text_start: Vec<usize> = Vec::new();
    let mut skip = 0usize;
    let mut list_stack: Vec<Option<u32>> = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let Some(end) = after.find('>') else {
                if skip == 0 {
                    out.push_str(&decode_entities(rest));
                }
                break;
            };
            let tag = &after[..end];
            rest = &after[end + 1..];
            let closing = tag.starts_with('/');
            let body = tag.trim_start_matches('/').trim_end_matches('/');
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = body[..name_end].to_ascii_lowercase();
            let attrs = &body[name_end..];
            if name == "mx-reply" {
                if closing {
                    skip = skip.saturating_sub(1);
                } else {
                    skip += 1;
                }
                continue;
            }
            if skip > 0 {
                continue;
            }
            let toggle = match name.as_str() {
                "b" | "strong" => Some((0, BOLD)),
                "i" | "em" => Some((1, ITALIC)),
                "u" | "ins" => Some((2, UNDERLINE)),
                "s" | "del" | "strike" => Some((3, STRIKE)),
                "code" => Some((4, MONOSPACE)),
                _ => None,
            };
            if let Some((slot, code)) = toggle {
                if closing {
                    if depth[slot] > 0 {
                        depth[slot] -= 1;
                        if depth[slot] == 0 {
                            out.push(code);
                        }
                    }
                } else {
                    depth[slot] += 1;
                    if depth[slot] == 1 {
                        out.push(code);
                    }
                }
                continue;
            }
            match name.as_str() {
                "br" => out.push('\n'),
                "p" | "div" | "pre" | "blockquote" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
                | "tr" | "hr" => new_line(&mut out),
                "ul" | "ol" => {
                    new_line(&mut out);
                    if closing {
                        list_stack.pop();
                    } else {
                        list_stack.push((name == "ol").then_some(1));
                    }
                }
                "li" if !closing => {
                    new_line(&mut out);
                    match list_stack.last_mut() {
                        Some(Some(n)) => {
                            out.push_str(&format!("{n}. "));
                            *n += 1;
                        }
                        _ => out.push_str("• "),
                    }
                }
                "font" | "span" => {
                    if closing {
                        if colors.pop().flatten().is_some() {
                            out.push(COLOR);
                            if let Some(Some(outer)) = colors.iter().rev().find(|c| c.is_some()) {
                                out.push_str(&format!("{outer:02}"));
                            }
                        }
                    } else {
                        let color = attr(attrs, "data-mx-color")
                            .or_else(|| attr(attrs, "color"))
                            .and_then(|c| nearest_color(&c));
                        if let Some(c) = color {
                            out.push(COLOR);
                            out.push_str(&format!("{c:02}"));
                        }
                        colors.push(color);
                    }
                }
                "a" => {
                    if closing {
                        if let (Some(Some(href)), Some(start)) =
                            (links.pop(), link_text_start.pop())
                        {
                            let text = irc_to_plain(&out[start..]);
                            let bare = href.strip_prefix("mailto:").unwrap_or(&href);
                            if text.trim() != bare && !href.starts_with("https://matrix.to/") {
                                out.push_str(&format!(" ({href})"));
                            }
                        }
                    } else {
                        links.push(attr(attrs, "href"));
                        link_text_start.push(out.len());
                    }
                }
                "img" => {
                    let alt = attr(attrs, "alt").or_else(|| attr(attrs, "src"));
                    if let Some(alt) = alt {
                        out.push_str(&alt);
                    }
                }
                _ => {}
            }
            continue;
        }
        let end = rest.find('<').unwrap_or(rest.len());
        if skip == 0 {
            out.push_str(&decode_entities(&rest[..end]));
        }
        rest = &rest[end..];
    }
    out.trim_matches('\n').to_owned()
}

fn new_line(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// The value of an HTML attribute (quoted with `"` or `'`, or bare).
fn attr(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    while let Some(pos) = rest.to_ascii_lowercase().find(name) {
        let before_ok = pos == 0 || rest.as_bytes()[pos - 1].is_ascii_whitespace();
        let after = rest[pos + name.len()..].trim_start();
        if before_ok && let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let raw = if let Some(q) = value.strip_prefix('"') {
                q.split('"').next()
            } else if let Some(q) = value.strip_prefix('\'') {
                q.split('\'').next()
            } else {
                value.split_whitespace().next()
            };
            return raw.map(decode_entities);
        }
        rest = &rest[pos + name.len()..];
    }
    None
}

/// Decodes the HTML entities Matrix clients produce.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => entity.strip_prefix('#').and_then(|n| {
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => n.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The palette colour closest to an `#rrggbb` colour.
fn nearest_color(hex: &str) -> Option<u8> {
    let rgb = |h: &str| -> Option<[i32; 3]> {
        let h = h.strip_prefix('#')?;
        if h.len() != 6 {
            return None;
        }
        let c = |i: usize| i32::from_str_radix(h.get(i..i + 2)?, 16).ok();
        Some([c(0)?, c(2)?, c(4)?])
    };
    let target = rgb(hex.trim())?;
    PALETTE
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let p = rgb(p)?;
            let d: i32 = (0..3).map(|k| (p[k] - target[k]).pow(2)).sum();
            Some((d, i as u8))
        })
        .min()
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_have_no_html() {
        assert_eq!(irc_to_html("a <b> & c"), None);
        assert_eq!(irc_to_plain("a <b> & c"), "a <b> & c");
    }

    #[test]
    fn codes_become_escaped_html() {
        assert_eq!(
            irc_to_html("x \x02bold <tag>\x02 \x1ditalic\x0f \x1funder\x1f").as_deref(),
            Some("x <b>bold &lt;tag&gt;</b> <i>italic</i> <u>under</u>")
        );
        assert_eq!(
            irc_to_html("\x0304,01red\x03 plain").as_deref(),
            Some("<font data-mx-color=\"#ff0000\" data-mx-bg-color=\"#000000\">red</font> plain")
        );
        assert_eq!(
            irc_to_plain("\x0304,01red\x03 \x02b\x02 \x0412abEF,000000hex"),
            "red b hex"
        );
        // A colour code followed by digits that are text: at most two digits are read.
        assert_eq!(irc_to_plain("\x031234"), "34");
        assert_eq!(irc_to_plain("\x03,5"), ",5");
    }

    #[test]
    fn html_becomes_codes() {
        assert_eq!(
            html_to_irc(
                "<b>bold</b> <em>it</em> <u>u</u> <code>c</code> &lt;x&gt; &amp; &#233;&#x41;"
            ),
            "\x02bold\x02 \x1dit\x1d \x1fu\x1f \x11c\x11 <x> & éA"
        );
        assert_eq!(
            html_to_irc(
                "<p>one</p><p>two<br>three</p><ul><li>a</li><li>b</li></ul><ol><li>x</li></ol>"
            ),
            "one\ntwo\nthree\n• a\n• b\n1. x"
        );
        assert_eq!(
            html_to_irc("<mx-reply><blockquote>old</blockquote></mx-reply>new"),
            "new"
        );
        assert_eq!(
            html_to_irc("<a href=\"https://e.org\">site</a> <a href='https://x.y'>https://x.y</a>"),
            "site (https://e.org) https://x.y"
        );
        assert_eq!(
            html_to_irc(
                "<font data-mx-color=\"#fe0000\">red<font color=\"#0000fc\">blue</font>red</font>"
            ),
            "\x0304red\x0312blue\x0304red\x03"
        );
        assert_eq!(html_to_irc("<b><b>x</b>y</b>"), "\x02xy\x02");
        assert_eq!(html_to_irc("a < b"), "a < b");
        assert_eq!(
            html_to_irc("fish &chips; &unknown;"),
            "fish &chips; &unknown;"
        );
    }

    #[test]
    fn round_trip_keeps_styles() {
        let irc = "\x02b\x02 \x1di\x1d \x1fu\x1f";
        assert_eq!(html_to_irc(&irc_to_html(irc).unwrap()), irc);
    }

    #[test]
    fn style_codes_restore_state() {
        let mut style = Style::default();
        let line = "\x02\x0303,04x";
        let mut i = 0;
        while let Some(used) = apply_code(&line[i..], &mut style) {
            i += used;
        }
        assert_eq!(style.codes(), "\x02\x0303,04");
    }
}
