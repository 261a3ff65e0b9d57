//! What a webhook's POST becomes: a message from JSON, plain text or a form, through the hook's
//! template when it has one, or recognised as GitHub, GitLab or Alertmanager.

use serde_json::{Map, Value};

use super::known;
use crate::{
    Error, Result,
    render::{Message, escape_markdown},
};

/// A request body, read according to its content type.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// `application/json`.
    Json(Value),
    /// `text/plain` (or no content type): Markdown.
    Text(String),
    /// `application/x-www-form-urlencoded`: its fields, as a JSON object of strings.
    Form(Value),
}

/// Why a body could not be read: a `(errcode, message)` for the 400 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBody {
    /// `M_NOT_JSON`, `M_BAD_JSON` or `M_UNRECOGNIZED`.
    pub errcode: &'static str,
    /// Why.
    pub error: String,
}

impl Payload {
    /// Reads `body` sent with `content_type`.
    pub fn read(content_type: Option<&str>, body: &[u8]) -> std::result::Result<Self, BadBody> {
        let mime = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".to_owned());
        let text = || {
            String::from_utf8(body.to_vec()).map_err(|_| BadBody {
                errcode: "M_BAD_JSON",
                error: "the body is not UTF-8".into(),
            })
        };
        match mime.as_str() {
            "application/json" => serde_json::from_slice(body)
                .map(Payload::Json)
                .map_err(|e| BadBody {
                    errcode: "M_NOT_JSON",
                    error: format!("the body is not valid JSON: {e}"),
                }),
            m if m.ends_with("+json") => {
                serde_json::from_slice(body)
                    .map(Payload::Json)
                    .map_err(|e| BadBody {
                        errcode: "M_NOT_JSON",
                        error: format!("the body is not valid JSON: {e}"),
                    })
            }
            "application/x-www-form-urlencoded" => {
                let fields: Map<String, Value> = url::form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect();
                Ok(Payload::Form(Value::Object(fields)))
            }
            "text/plain" | "text/markdown" => text().map(Payload::Text),
            other => Err(BadBody {
                errcode: "M_UNRECOGNIZED",
                error: format!(
                    "content type {other} is not understood: send application/json, text/plain or a form"
                ),
            }),
        }
    }
}

/// What the sender told us about the payload besides its body.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// `X-GitHub-Event`.
    pub github_event: Option<String>,
    /// `X-Gitlab-Event`.
    pub gitlab_event: Option<String>,
}

/// Renders a payload. A template, when given, wins; else known senders are recognised; else a
/// JSON object's `text`/`html` fields are used, and any other JSON is shown as code.
pub fn render(payload: &Payload, origin: &Origin, template: Option<&str>) -> Result<Message> {
    let json = match payload {
        Payload::Text(text) => {
            if let Some(template) = template {
                let context = serde_json::json!({ "text": text });
                return Ok(Message::markdown(
                    "m.text",
                    &apply_template(template, &context)?,
                ));
            }
            return Ok(Message::markdown("m.text", text));
        }
        Payload::Json(json) | Payload::Form(json) => json,
    };
    let mut message = if let Some(template) = template {
        Message::markdown("m.text", &apply_template(template, json)?)
    } else if let Some(markdown) = known::render(json, origin) {
        Message::markdown("m.notice", &markdown)
    } else {
        generic(json)
    };
    keep_options(json, &mut message);
    Ok(message)
}

/// A JSON object in the generic shape: `text` (Markdown), `html`, `username`.
fn generic(json: &Value) -> Message {
    let text = json.get("text").and_then(Value::as_str);
    let html = json.get("html").and_then(Value::as_str);
    let username = json.get("username").and_then(Value::as_str);
    let mut message = match (text, html) {
        (text, Some(html)) => {
            let body = text
                .map(str::to_owned)
                .unwrap_or_else(|| crate::render::strip_tags(&crate::render::sanitize(html)));
            Message::html("m.text", &body, html)
        }
        (Some(text), None) => Message::markdown("m.text", text),
        (None, None) => {
            let pretty = serde_json::to_string_pretty(json).unwrap_or_default();
            Message::markdown("m.text", &format!("```json\n{pretty}\n```"))
        }
    };
    if let Some(name) = username.filter(|n| !n.is_empty()) {
        message.body = format!("{name}: {}", message.body);
        let html = message
            .html
            .take()
            .unwrap_or_else(|| crate::render::escape(&message.body[name.len() + 2..]));
        message.html = Some(format!(
            "<strong>{}</strong>: {html}",
            crate::render::escape(name)
        ));
    }
    message
}

/// `msgtype` and `mentions` of the payload are kept whatever rendered it.
fn keep_options(json: &Value, message: &mut Message) {
    if let Some(msgtype) = json.get("msgtype").and_then(Value::as_str)
        && matches!(msgtype, "m.text" | "m.notice" | "m.emote")
    {
        message.msgtype = msgtype.to_owned();
    }
    let mentions = json.get("mentions").or_else(|| json.get("m.mentions"));
    if let Some(mentions) = mentions {
        if let Some(users) = mentions.get("user_ids").and_then(Value::as_array) {
            message.user_ids = users
                .iter()
                .filter_map(Value::as_str)
                .filter(|u| trestle::ruma::UserId::parse(*u).is_ok())
                .map(str::to_owned)
                .collect();
        }
        message.room_mention = mentions.get("room").and_then(Value::as_bool) == Some(true);
    }
}

/// Compiles a template, to refuse a broken one when it is set rather than when it is used.
pub fn check_template(template: &str) -> Result<()> {
    let mut env = minijinja::Environment::new();
    env.add_template("hook", template)
        .map_err(|e| Error::Template(e.to_string()))?;
    Ok(())
}

/// Renders a Jinja template over the payload: an object's fields are top-level names, and the
/// whole payload is `payload`. Values are escaped for Markdown (the `safe` filter keeps one
/// raw), so a payload cannot add links or formatting the template did not ask for.
pub fn apply_template(template: &str, json: &Value) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Custom("markdown"));
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == minijinja::AutoEscape::None || value.is_safe() {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = value.to_string();
        let text = if value.is_undefined() || value.is_none() {
            String::new()
        } else {
            text
        };
        out.write_str(&escape_markdown(&text))?;
        Ok(())
    });
    env.add_template("hook", template)
        .map_err(|e| Error::Template(e.to_string()))?;
    let mut context = match json {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    context.insert("payload".into(), json.clone());
    env.get_template("hook")
        .and_then(|t| t.render(Value::Object(context)))
        .map_err(|e| Error::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bodies_are_read_by_content_type() {
        assert_eq!(
            Payload::read(Some("application/json; charset=utf-8"), br#"{"text":"hi"}"#),
            Ok(Payload::Json(json!({"text": "hi"})))
        );
        assert_eq!(
            Payload::read(None, b"hello"),
            Ok(Payload::Text("hello".into()))
        );
        assert_eq!(
            Payload::read(
                Some("application/x-www-form-urlencoded"),
                b"text=a+b&msgtype=m.notice"
            ),
            Ok(Payload::Form(json!({"text": "a b", "msgtype": "m.notice"})))
        );
        assert_eq!(
            Payload::read(Some("application/json"), b"{nope")
                .unwrap_err()
                .errcode,
            "M_NOT_JSON"
        );
        assert_eq!(
            Payload::read(Some("image/png"), b"x").unwrap_err().errcode,
            "M_UNRECOGNIZED"
        );
    }

    #[test]
    fn generic_json_keeps_msgtype_and_mentions() {
        let payload = Payload::Json(json!({
            "text": "**deploy** done",
            "msgtype": "m.notice",
            "mentions": {"user_ids": ["@ops:example.org", "not a user"]},
        }));
        let message = render(&payload, &Origin::default(), None).unwrap();
        assert_eq!(message.msgtype, "m.notice");
        assert_eq!(message.body, "**deploy** done");
        assert!(message.html.unwrap().contains("<strong>deploy</strong>"));
        assert_eq!(message.user_ids, vec!["@ops:example.org".to_owned()]);
    }

    #[test]
    fn html_is_sanitised_and_username_prefixed() {
        let payload = Payload::Json(json!({
            "html": "<b>hi</b><script>x</script>", "username": "CI",
        }));
        let message = render(&payload, &Origin::default(), None).unwrap();
        assert_eq!(message.body, "CI: hi");
        assert_eq!(
            message.html.as_deref(),
            Some("<strong>CI</strong>: <b>hi</b>")
        );
    }

    #[test]
    fn unknown_json_is_shown_as_code() {
        let payload = Payload::Json(json!({"a": 1}));
        let message = render(&payload, &Origin::default(), None).unwrap();
        assert!(message.body.starts_with("```json"));
        assert!(message.html.unwrap().contains("<pre><code"));
    }

    #[test]
    fn templates_render_fields_escaped_and_keep_msgtype() {
        let payload = Payload::Json(json!({
            "status": "firing", "service": {"name": "api *prod*"}, "msgtype": "m.notice",
        }));
        let message = render(
            &payload,
            &Origin::default(),
            Some("**{{ status | upper }}** on {{ service.name }}{{ missing }}"),
        )
        .unwrap();
        assert_eq!(message.msgtype, "m.notice");
        assert_eq!(message.body, "**FIRING** on api \\*prod\\*");
        assert_eq!(
            message.html.as_deref().map(str::trim),
            Some("<p><strong>FIRING</strong> on api *prod*</p>")
        );
        assert!(check_template("{{ broken").is_err());
        assert!(
            render(
                &payload,
                &Origin::default(),
                Some("{% include \"missing\" %}")
            )
            .is_err()
        );
    }

    #[test]
    fn plain_text_goes_through_the_template_as_text() {
        let message = render(
            &Payload::Text("disk full".into()),
            &Origin::default(),
            Some("Alert: {{ text }}"),
        )
        .unwrap();
        assert_eq!(message.body, "Alert: disk full");
    }
}
