//! An Atom feed (RFC 4287) of one user's posts, for feed readers.

use crate::query::Profile;

use crate::content::escape as xml_escape;
use trestle::store::rfc3339;

/// A `matrix:` URI (MSC2312) path segment: the id without its sigil, percent-encoded.
fn segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes().skip(1) {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first line of a post, shortened, for an entry's title.
fn title(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(79).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The feed document; `self_href` is where it is served.
pub(crate) fn feed(profile: &Profile, self_href: &str) -> String {
    let name = profile
        .display_name
        .clone()
        .unwrap_or_else(|| profile.user_id.clone());
    let updated = profile.page.posts.first().map(|p| p.ts).unwrap_or(0);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    xml.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    xml.push_str(&format!(
        "  <id>matrix:u/{}</id>\n  <title>{}</title>\n  <updated>{}</updated>\n  \
         <author><name>{}</name><uri>matrix:u/{}</uri></author>\n  \
         <link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>\n",
        segment(&profile.user_id),
        xml_escape(&format!("{name}'s timeline")),
        rfc3339(updated),
        xml_escape(&name),
        segment(&profile.user_id),
        xml_escape(self_href),
    ));
    for post in &profile.page.posts {
        xml.push_str(&format!(
            "  <entry>\n    <id>matrix:roomid/{}/e/{}</id>\n    <title>{}</title>\n    \
             <updated>{}</updated>\n    <author><name>{}</name></author>\n    \
             <content type=\"text\">{}</content>\n  </entry>\n",
            segment(&post.room_id),
            segment(&post.event_id),
            xml_escape(&title(&post.text)),
            rfc3339(post.ts),
            xml_escape(post.author_name.as_deref().unwrap_or(&post.author)),
            xml_escape(&post.text),
        ));
    }
    xml.push_str("</feed>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            xml_escape("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(segment("$ab+c/d"), "ab%2Bc%2Fd");
    }
}
