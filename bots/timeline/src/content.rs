//! The event schema of a timeline (documented in `docs/timeline.md`): what a post looks like,
//! and the checks a post from the page passes before it is sent.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `type` in the `m.room.create` content of a timeline room.
pub const ROOM_TYPE: &str = "org.trestle.timeline";
/// The event type of a post, a reply and a repost.
pub const POST_TYPE: &str = "org.trestle.timeline.post";
/// The post's plain text.
pub const TEXT_KEY: &str = "org.trestle.timeline.text";
/// The post's sanitised HTML, when it has any.
pub const HTML_KEY: &str = "org.trestle.timeline.html";
/// On a repost: `{ "room_id", "event_id" }` of the original.
pub const REPOST_KEY: &str = "org.trestle.timeline.repost";
/// The reaction key of a like.
pub const LIKE_KEY: &str = "❤️";
/// On a post with an image: `{ "url": "mxc://…", "info": { "mimetype", "w", "h", "size" }, "alt" }`.
pub const IMAGE_KEY: &str = "org.trestle.timeline.image";
/// The image types a post may carry: those every browser shows, none that runs script (SVG).
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
/// The longest description of an image, in characters.
pub const MAX_ALT_CHARS: usize = 1000;

/// An image in a post, stored in the homeserver's content repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The `mxc://` URI of the uploaded image.
    pub url: String,
    /// One of [`IMAGE_TYPES`].
    pub mimetype: String,
    /// Width in pixels, if known.
    pub w: Option<u64>,
    /// Height in pixels, if known.
    pub h: Option<u64>,
    /// Size in bytes, if known.
    pub size: Option<u64>,
    /// A description for people who cannot see it.
    pub alt: Option<String>,
}

impl Image {
    /// Checks an image from a client or an event: an `mxc://` URI, an image type that is
    /// shown safely, a description of bounded length.
    pub fn check(self) -> Result<Image, Refusal> {
        if <&trestle::ruma::MxcUri>::from(self.url.as_str())
            .validate()
            .is_err()
        {
            return Err(Refusal::BadImage("its `url` is not an mxc:// URI"));
        }
        if !IMAGE_TYPES.contains(&self.mimetype.as_str()) {
            return Err(Refusal::BadImage(
                "its `mimetype` is not image/png, image/jpeg, image/gif or image/webp",
            ));
        }
        if self
            .alt
            .as_deref()
            .is_some_and(|alt| alt.chars().count() > MAX_ALT_CHARS)
        {
            return Err(Refusal::BadImage(
                "its description (`alt`) is over 1000 characters",
            ));
        }
        Ok(self)
    }

    /// The image as a post's content carries it.
    fn content(&self) -> Value {
        let mut info = json!({ "mimetype": self.mimetype });
        for (key, value) in [("w", self.w), ("h", self.h), ("size", self.size)] {
            if let Some(value) = value {
                info[key] = json!(value);
            }
        }
        let mut image = json!({ "url": self.url, "info": info });
        if let Some(alt) = &self.alt {
            image["alt"] = json!(alt);
        }
        image
    }

    /// Reads an image from a post's content, checked as one from the page would be.
    fn from_content(value: &Value) -> Option<Image> {
        let info = &value["info"];
        Image {
            url: value["url"].as_str()?.to_owned(),
            mimetype: info["mimetype"].as_str()?.to_owned(),
            w: info["w"].as_u64(),
            h: info["h"].as_u64(),
            size: info["size"].as_u64(),
            alt: value["alt"].as_str().map(str::to_owned),
        }
        .check()
        .ok()
    }
}

/// A post's parts that a client supplies.
#[derive(Debug, Default)]
pub struct Draft {
    /// The plain text.
    pub text: String,
    /// Sanitised HTML, if any.
    pub html: Option<String>,
    /// For a reply: the thread root and the event replied to.
    pub thread: Option<(String, String)>,
    /// For a repost: the original's room and event.
    pub repost: Option<(String, String)>,
    /// An image, checked.
    pub image: Option<Image>,
}

/// Why a draft was refused, in words for the person who wrote it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The text is empty.
    Empty,
    /// Longer than the limit (characters).
    TooLong {
        /// The most characters a post may have.
        limit: usize,
        /// How many the draft has.
        length: usize,
    },
    /// The HTML is longer than its limit (characters).
    HtmlTooLong {
        /// The most characters a post's HTML may have.
        limit: usize,
        /// How many the draft's HTML has.
        length: usize,
    },
    /// The HTML contains something that is never allowed (scripts, event handlers, …).
    UnsafeHtml(&'static str),
    /// The image is not one a post may carry.
    BadImage(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Empty => write!(f, "the post is empty"),
            Refusal::TooLong { limit, length } => write!(
                f,
                "the post has {length} characters; at most {limit} are allowed"
            ),
            Refusal::HtmlTooLong { limit, length } => write!(
                f,
                "the post's HTML has {length} characters; at most {limit} are allowed"
            ),
            Refusal::UnsafeHtml(what) => {
                write!(f, "the HTML contains {what}, which is not allowed")
            }
            Refusal::BadImage(why) => write!(f, "the image is refused: {why}"),
        }
    }
}

/// Checks the text's length (in characters, after trimming).
pub fn check_text(text: &str, limit: usize) -> Result<String, Refusal> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Refusal::Empty);
    }
    let length = text.chars().count();
    if length > limit {
        return Err(Refusal::TooLong { limit, length });
    }
    Ok(text.to_owned())
}

/// Refuses HTML that carries active content, then sanitises the rest. The refusal comes first
/// so that a writer learns their markup was not taken as they meant it; sanitising guards
/// against whatever the quick check misses.
pub fn check_html(html: &str, limit: usize) -> Result<String, Refusal> {
    // Markup may triple the text, not more.
    let length = html.chars().count();
    if length > limit * 3 {
        return Err(Refusal::HtmlTooLong {
            limit: limit * 3,
            length,
        });
    }
    let lower = html.to_ascii_lowercase();
    for (needle, what) in [
        ("<script", "a <script> element"),
        ("<style", "a <style> element"),
        ("<iframe", "an <iframe> element"),
        ("<object", "an <object> element"),
        ("<embed", "an <embed> element"),
        ("javascript:", "a javascript: link"),
    ] {
        if lower.contains(needle) {
            return Err(Refusal::UnsafeHtml(what));
        }
    }
    if has_event_handler(&lower) {
        return Err(Refusal::UnsafeHtml("an event handler attribute (on…=)"));
    }
    Ok(sanitise(html))
}

/// Whether an attribute named `on…` appears inside a tag.
fn has_event_handler(lower: &str) -> bool {
    let mut in_tag = false;
    let bytes = lower.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            b'o' if in_tag
                && i > 0
                && (bytes[i - 1].is_ascii_whitespace() || bytes[i - 1] == b'/')
                && bytes.get(i + 1) == Some(&b'n') =>
            {
                let name: String = lower[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                let rest = lower[i + name.len()..].trim_start();
                if name.len() > 2 && rest.starts_with('=') {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// The HTML a timeline keeps: a small set of inline and block elements, links to http(s) and
/// mailto only.
pub fn sanitise(html: &str) -> String {
    ammonia::Builder::new()
        .tags(
            [
                "a",
                "b",
                "strong",
                "i",
                "em",
                "u",
                "s",
                "del",
                "code",
                "pre",
                "p",
                "br",
                "blockquote",
                "ul",
                "ol",
                "li",
            ]
            .into_iter()
            .collect(),
        )
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(html)
        .to_string()
}

/// Escapes text for HTML or XML, in content and attribute values alike, dropping the control
/// characters XML 1.0 forbids.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// HTML for plain text: escaped, line breaks kept.
pub fn text_to_html(text: &str) -> String {
    escape(text).replace('\n', "<br>")
}

/// The users a text mentions: each `@user:server` that is a valid user id, once, in order.
/// The page makes the same words links.
pub fn mentions(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let starts = text
        .char_indices()
        .filter(|&(i, c)| {
            c == '@'
                && text[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|before| before.is_whitespace() || "(,;!?".contains(before))
        })
        .map(|(i, _)| i);
    for start in starts {
        let word: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "@._=/+-:".contains(*c))
            .collect();
        // Punctuation ending a sentence is not part of the server name.
        let word = word.trim_end_matches(['.', ':', '-']);
        if trestle::ruma::UserId::parse(word).is_ok() && !found.iter().any(|f| f == word) {
            found.push(word.to_owned());
        }
    }
    found
}

/// The content of a post event.
pub fn post_content(draft: &Draft) -> Value {
    let html = draft
        .html
        .clone()
        .unwrap_or_else(|| text_to_html(&draft.text));
    // Clients that render unknown events like messages show the image from `formatted_body`
    // (an `mxc://` source is what the spec allows there); the text alone names it.
    let (body, formatted) = match &draft.image {
        Some(image) => {
            let alt = image.alt.as_deref().unwrap_or("image");
            let tag = format!(
                "<img src=\"{}\" alt=\"{}\">",
                escape(&image.url),
                escape(alt)
            );
            let body = if draft.text.is_empty() {
                format!("🖼 {alt}")
            } else {
                format!("{}\n🖼 {alt}", draft.text)
            };
            (body, format!("{html}<br>{tag}"))
        }
        None => (draft.text.clone(), html.clone()),
    };
    let mut content = json!({
        // What clients that do not know the type show.
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": formatted,
        TEXT_KEY: draft.text,
        HTML_KEY: html,
    });
    if let Some(image) = &draft.image {
        content[IMAGE_KEY] = image.content();
    }
    // Intentional mentions: Matrix clients notify the users named, and nobody else.
    content["m.mentions"] = json!({ "user_ids": mentions(&draft.text) });
    if let Some((root, replied)) = &draft.thread {
        content["m.relates_to"] = json!({
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": root == replied,
            "m.in_reply_to": { "event_id": replied },
        });
    }
    if let Some((room_id, event_id)) = &draft.repost {
        content[REPOST_KEY] = json!({ "room_id": room_id, "event_id": event_id });
    }
    content
}

/// The content of an edit (`m.replace`) of `original` to `draft`'s text.
pub fn edit_content(original: &str, draft: &Draft) -> Value {
    let new = post_content(draft);
    json!({
        "body": format!("* {}", draft.text),
        "m.new_content": new,
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
        // Those the post named were told when it was sent; an edit tells nobody again.
        "m.mentions": {},
    })
}

/// A post as read back from an event's content; `None` when the content is not a post (a
/// redacted one has no text).
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The plain text (the post's own key, else `body`).
    pub text: String,
    /// The HTML, sanitised here, if the post had any.
    pub html: Option<String>,
    /// For a reply, the event id of the post that started the thread.
    pub thread_root: Option<String>,
    /// For a repost, the event id of the original post.
    pub repost_of: Option<String>,
    /// The post's image, if it has one that passes the checks.
    pub image: Option<Image>,
}

/// Reads a post's content, sanitising its HTML again: other clients may send anything.
pub fn parse_post(content: &Value) -> Option<Parsed> {
    let text = content[TEXT_KEY]
        .as_str()
        .or_else(|| content["body"].as_str())?
        .to_owned();
    let html = content[HTML_KEY].as_str().map(sanitise);
    let relates = &content["m.relates_to"];
    let thread_root = (relates["rel_type"] == "m.thread")
        .then(|| relates["event_id"].as_str().map(str::to_owned))
        .flatten();
    let repost_of = content[REPOST_KEY]["event_id"].as_str().map(str::to_owned);
    let image = Image::from_content(&content[IMAGE_KEY]);
    Some(Parsed {
        text,
        html,
        thread_root,
        repost_of,
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_limits_count_characters() {
        assert_eq!(check_text("  hi  ", 5), Ok("hi".into()));
        assert_eq!(check_text(" \n ", 5), Err(Refusal::Empty));
        assert_eq!(check_text("ééééé", 5), Ok("ééééé".into()));
        assert_eq!(
            check_text("ééééé!", 5),
            Err(Refusal::TooLong {
                limit: 5,
                length: 6
            })
        );
    }

    #[test]
    fn active_html_is_refused_and_the_rest_sanitised() {
        assert!(check_html("<b>hi</b><SCRIPT>x</SCRIPT>", 100).is_err());
        assert!(check_html("<a href=\"JavaScript:alert(1)\">x</a>", 100).is_err());
        assert!(check_html("<img src=x onerror=alert(1)>", 100).is_err());
        assert!(check_html("<p/onclick = 'x'>hi</p>", 100).is_err());
        // Words starting with "on" are fine.
        assert_eq!(
            check_html("<p>one <b>online</b></p>", 100).unwrap(),
            "<p>one <b>online</b></p>"
        );
        assert_eq!(
            check_html("<img src=\"x\"><b class=\"y\">hi</b>", 100).unwrap(),
            "<b>hi</b>"
        );
    }

    #[test]
    fn html_has_a_limit_of_its_own() {
        assert!(check_html(&"<b>x</b>".repeat(4), 10).is_err());
        assert!(check_html(&"<b>x</b>".repeat(3), 10).is_ok());
    }

    #[test]
    fn text_becomes_escaped_html() {
        assert_eq!(
            text_to_html("a<b> & \"c\"\nd"),
            "a&lt;b&gt; &amp; &quot;c&quot;<br>d"
        );
    }

    #[test]
    fn a_reply_round_trips_through_its_content() {
        let draft = Draft {
            text: "yes".into(),
            thread: Some(("$root".into(), "$root".into())),
            ..Draft::default()
        };
        let content = post_content(&draft);
        assert_eq!(content["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(content["body"], "yes");
        let parsed = parse_post(&content).unwrap();
        assert_eq!(parsed.thread_root.as_deref(), Some("$root"));
        assert_eq!(parsed.text, "yes");
        assert_eq!(parse_post(&json!({})), None);
    }

    #[test]
    fn mentions_are_user_ids_in_the_text() {
        assert_eq!(
            mentions(
                "Hi @alice:localhost, and (@bob:example.org:8448). Mail a@b.c, @nobody, @alice:localhost again"
            ),
            ["@alice:localhost", "@bob:example.org:8448"]
        );
        let content = post_content(&Draft {
            text: "cc @carol:example.org.".into(),
            ..Draft::default()
        });
        assert_eq!(
            content["m.mentions"],
            json!({ "user_ids": ["@carol:example.org"] })
        );
    }

    #[test]
    fn an_image_round_trips_and_bad_ones_are_refused_or_dropped() {
        let image = Image {
            url: "mxc://example.org/abc".into(),
            mimetype: "image/png".into(),
            w: Some(120),
            h: Some(80),
            size: Some(1000),
            alt: Some("A <red> square".into()),
        };
        let draft = Draft {
            image: Some(image.clone().check().unwrap()),
            ..Draft::default()
        };
        let content = post_content(&draft);
        assert_eq!(content["body"], "🖼 A <red> square");
        assert_eq!(
            content["formatted_body"],
            "<br><img src=\"mxc://example.org/abc\" alt=\"A &lt;red&gt; square\">"
        );
        assert_eq!(parse_post(&content).unwrap().image, Some(image.clone()));
        for bad in [
            Image {
                url: "https://example.org/x.png".into(),
                ..image.clone()
            },
            Image {
                mimetype: "image/svg+xml".into(),
                ..image.clone()
            },
            Image {
                alt: Some("x".repeat(MAX_ALT_CHARS + 1)),
                ..image.clone()
            },
        ] {
            assert!(matches!(bad.clone().check(), Err(Refusal::BadImage(_))));
            // From another client, such an image is left out; the post stays.
            let mut content = post_content(&Draft {
                text: "hi".into(),
                ..Draft::default()
            });
            content[IMAGE_KEY] = bad.content();
            let parsed = parse_post(&content).unwrap();
            assert_eq!((parsed.text.as_str(), parsed.image), ("hi", None));
        }
    }
}
