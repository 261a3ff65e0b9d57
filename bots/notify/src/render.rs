//! Messages the bot posts: Markdown rendered to HTML, HTML cut down to what Matrix allows.
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#mroommessage-msgtypes> (HTML subset)

use std::collections::HashSet;

use serde_json::{Value, json};

/// A message ready to send: `m.room.message` content.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `m.text`, `m.notice` or `m.emote`.
    pub msgtype: String,
    /// The plain-text body.
    pub body: String,
    /// The sanitised HTML body, when it says more than the plain one.
    pub html: Option<String>,
    /// Users to notify.
    pub user_ids: Vec<String>,
    /// Whether to notify the whole room.
    pub room_mention: bool,
}

impl Message {
    /// A message from Markdown: the source is the plain body, the rendering the HTML one.
    pub fn markdown(msgtype: &str, source: &str) -> Self {
        let html = markdown_to_html(source);
        let plain_paragraph = format!("<p>{}</p>", escape(source.trim()));
        let html = (html.trim() != plain_paragraph).then_some(html);
        Message {
            msgtype: msgtype.to_owned(),
            body: source.trim().to_owned(),
            html,
            user_ids: Vec::new(),
            room_mention: false,
        }
    }

    /// A message from HTML of unknown origin, sanitised, with a plain-text fallback.
    pub fn html(msgtype: &str, body: &str, html: &str) -> Self {
        Message {
            msgtype: msgtype.to_owned(),
            body: body.to_owned(),
            html: Some(sanitize(html)),
            user_ids: Vec::new(),
            room_mention: false,
        }
    }

    /// The event content. `m.mentions` is always present: only those named in it are
    /// notified, never someone whose name happens to be in a payload.
    pub fn content(&self) -> Value {
        let mut mentions = json!({});
        if !self.user_ids.is_empty() {
            mentions["user_ids"] = json!(self.user_ids);
        }
        if self.room_mention {
            mentions["room"] = json!(true);
        }
        let mut content = json!({
            "msgtype": self.msgtype,
            "body": self.body,
            "m.mentions": mentions,
        });
        if let Some(html) = &self.html {
            content["format"] = json!("org.matrix.custom.html");
            content["formatted_body"] = json!(html);
        }
        content
    }
}

/// Renders Markdown (CommonMark with tables and strikethrough) to sanitised HTML.
pub fn markdown_to_html(source: &str) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut out = String::new();
    html::push_html(&mut out, Parser::new_ext(source, options));
    sanitize(&out)
}

/// Keeps the HTML tags and attributes the Matrix spec suggests clients render; links only to
/// web, mail and Matrix addresses. Everything else is dropped with its scripts and styles.
pub fn sanitize(html: &str) -> String {
    let tags: HashSet<&str> = [
        "font",
        "del",
        "s",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "p",
        "a",
        "ul",
        "ol",
        "sup",
        "sub",
        "li",
        "b",
        "i",
        "u",
        "strong",
        "em",
        "strike",
        "code",
        "hr",
        "br",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "caption",
        "pre",
        "span",
        "details",
        "summary",
    ]
    .into_iter()
    .collect();
    let schemes: HashSet<&str> = ["http", "https", "ftp", "mailto", "magnet", "matrix"]
        .into_iter()
        .collect();
    ammonia::Builder::default()
        .tags(tags)
        .add_tag_attributes("a", ["href", "target"])
        .add_tag_attributes("ol", ["start"])
        .add_tag_attributes("code", ["class"])
        .add_tag_attributes("font", ["data-mx-bg-color", "data-mx-color", "color"])
        .add_tag_attributes(
            "span",
            ["data-mx-bg-color", "data-mx-color", "data-mx-spoiler"],
        )
        .url_schemes(schemes)
        .link_rel(Some("noopener"))
        .clean(html)
        .to_string()
}

/// Escapes text for HTML, exactly as the Markdown renderer does.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = pulldown_cmark_escape::escape_html(&mut out, text);
    out
}

/// The text of an HTML fragment: tags dropped, whitespace collapsed, entities decoded.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Escapes text that is put into Markdown, so a title cannot inject links or formatting.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_[]<>#|~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_stays_plain_and_markdown_gets_html() {
        let plain = Message::markdown("m.text", "hello there");
        assert_eq!(plain.body, "hello there");
        assert_eq!(plain.html, None);
        let rich = Message::markdown("m.text", "**build** [passed](https://ci.example/1)");
        assert_eq!(
            rich.html.as_deref().map(str::trim),
            Some(
                "<p><strong>build</strong> <a href=\"https://ci.example/1\" rel=\"noopener\">passed</a></p>"
            )
        );
    }

    #[test]
    fn scripts_styles_and_javascript_links_are_removed() {
        let html = sanitize(
            "<p onclick=\"x()\">hi<script>alert(1)</script><a href=\"javascript:alert(1)\">x</a>\
             <img src=\"https://tracker.example/p.gif\"><font color=\"red\">red</font></p>",
        );
        assert!(!html.contains("script"), "{html}");
        assert!(!html.contains("onclick"), "{html}");
        assert!(!html.contains("javascript"), "{html}");
        assert!(!html.contains("img"), "{html}");
        assert!(html.contains("<font color=\"red\">red</font>"), "{html}");
        let md = markdown_to_html("<script>alert(1)</script> *ok*");
        assert!(!md.contains("<script"), "{md}");
    }

    #[test]
    fn content_always_says_whom_to_notify() {
        let mut message = Message::markdown("m.notice", "deploy done @room");
        assert_eq!(message.content()["m.mentions"], json!({}));
        message.user_ids.push("@ops:example.org".into());
        let content = message.content();
        assert_eq!(content["msgtype"], "m.notice");
        assert_eq!(
            content["m.mentions"]["user_ids"],
            json!(["@ops:example.org"])
        );
    }

    #[test]
    fn markdown_escaping_neutralises_links() {
        let md = escape_markdown("[click](javascript:x) *a*");
        let html = markdown_to_html(&md);
        assert!(!html.contains("<a"), "{html}");
        assert!(!html.contains("<em>"), "{html}");
    }
}
