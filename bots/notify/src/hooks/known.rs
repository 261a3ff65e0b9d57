//! Payloads of well-known senders, rendered readably without a template: GitHub, GitLab and
//! Prometheus Alertmanager. Each renderer returns Markdown whose payload text is escaped.

use serde_json::Value;

use super::payload::Origin;
use crate::render::escape_markdown as esc;

/// Markdown for a payload from a known sender, or `None` if the sender is not recognised.
pub fn render(json: &Value, origin: &Origin) -> Option<String> {
    if let Some(event) = &origin.github_event {
        return Some(github(event, json));
    }
    if origin.gitlab_event.is_some() || json.get("object_kind").is_some() {
        return Some(gitlab(json));
    }
    if json.get("alerts").is_some_and(Value::is_array) && json.get("status").is_some() {
        return Some(alertmanager(json));
    }
    None
}

fn s<'a>(json: &'a Value, pointer: &str) -> &'a str {
    json.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn link(text: &str, url: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        format!("[{}](<{}>)", esc(text), url.replace('>', "%3E"))
    } else {
        esc(text)
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// GitHub: <https://docs.github.com/en/webhooks/webhook-events-and-payloads>.
fn github(event: &str, json: &Value) -> String {
    let repo = link(
        s(json, "/repository/full_name"),
        s(json, "/repository/html_url"),
    );
    let who = esc(s(json, "/sender/login"));
    let action = esc(s(json, "/action"));
    match event {
        "push" => {
            let branch = s(json, "/ref").trim_start_matches("refs/heads/");
            let commits = json["commits"].as_array().cloned().unwrap_or_default();
            let pusher = match s(json, "/pusher/name") {
                "" => who.clone(),
                name => esc(name),
            };
            let count = commits.len();
            let noun = if count == 1 { "commit" } else { "commits" };
            let mut out = format!(
                "**{pusher}** pushed {} to {repo} `{}`",
                link(&format!("{count} {noun}"), s(json, "/compare")),
                branch.replace('`', "'")
            );
            for commit in commits.iter().take(10) {
                let id: String = s(commit, "/id").chars().take(7).collect();
                out.push_str(&format!(
                    "\n- {} {} ({})",
                    link(&id, s(commit, "/url")),
                    esc(first_line(s(commit, "/message"))),
                    esc(s(commit, "/author/name"))
                ));
            }
            if count > 10 {
                out.push_str(&format!("\n- … and {} more", count - 10));
            }
            out
        }
        "pull_request" => format!(
            "**{who}** {action} pull request {} in {repo}",
            link(
                &format!(
                    "#{}: {}",
                    json["pull_request"]["number"],
                    s(json, "/pull_request/title")
                ),
                s(json, "/pull_request/html_url")
            )
        ),
        "issues" => format!(
            "**{who}** {action} issue {} in {repo}",
            link(
                &format!("#{}: {}", json["issue"]["number"], s(json, "/issue/title")),
                s(json, "/issue/html_url")
            )
        ),
        "issue_comment" => format!(
            "**{who}** commented on {} in {repo}: {}",
            link(
                &format!("#{}: {}", json["issue"]["number"], s(json, "/issue/title")),
                s(json, "/comment/html_url")
            ),
            esc(first_line(s(json, "/comment/body")))
        ),
        "release" => format!(
            "**{who}** {action} release {} in {repo}",
            link(
                match s(json, "/release/name") {
                    "" => s(json, "/release/tag_name"),
                    name => name,
                },
                s(json, "/release/html_url")
            )
        ),
        "ping" => format!(
            "GitHub webhook for {repo} is set up: *{}*",
            esc(s(json, "/zen"))
        ),
        "star" | "watch" => format!("**{who}** starred {repo}"),
        other => format!(
            "GitHub `{}` event{} in {repo} by **{who}**",
            other.replace('`', "'"),
            if action.is_empty() {
                String::new()
            } else {
                format!(" ({action})")
            }
        ),
    }
}

/// GitLab: <https://docs.gitlab.com/user/project/integrations/webhook_events/>.
fn gitlab(json: &Value) -> String {
    let project = link(
        s(json, "/project/path_with_namespace"),
        s(json, "/project/web_url"),
    );
    let who = match s(json, "/user/name") {
        "" => esc(s(json, "/user_name")),
        name => esc(name),
    };
    let attrs = &json["object_attributes"];
    match s(json, "/object_kind") {
        "push" | "tag_push" => {
            let reference = s(json, "/ref")
                .trim_start_matches("refs/heads/")
                .trim_start_matches("refs/tags/");
            let commits = json["commits"].as_array().cloned().unwrap_or_default();
            let count = json["total_commits_count"]
                .as_u64()
                .unwrap_or(commits.len() as u64);
            let noun = if count == 1 { "commit" } else { "commits" };
            let mut out = format!(
                "**{who}** pushed {count} {noun} to {project} `{}`",
                reference.replace('`', "'")
            );
            for commit in commits.iter().take(10) {
                let id: String = s(commit, "/id").chars().take(8).collect();
                out.push_str(&format!(
                    "\n- {} {}",
                    link(&id, s(commit, "/url")),
                    esc(first_line(s(commit, "/message")))
                ));
            }
            out
        }
        "merge_request" => format!(
            "**{who}** {} merge request {} in {project}",
            esc(s(attrs, "/action")),
            link(
                &format!("!{}: {}", attrs["iid"], s(attrs, "/title")),
                s(attrs, "/url")
            )
        ),
        "issue" => format!(
            "**{who}** {} issue {} in {project}",
            esc(s(attrs, "/action")),
            link(
                &format!("#{}: {}", attrs["iid"], s(attrs, "/title")),
                s(attrs, "/url")
            )
        ),
        "note" => format!(
            "**{who}** {} in {project}: {}",
            link("commented", s(attrs, "/url")),
            esc(first_line(s(attrs, "/note")))
        ),
        "pipeline" => format!(
            "Pipeline #{} on {project} `{}`: **{}**",
            attrs["id"],
            s(attrs, "/ref").replace('`', "'"),
            esc(s(attrs, "/status"))
        ),
        other => format!(
            "GitLab `{}` event in {project} by **{who}**",
            other.replace('`', "'")
        ),
    }
}

/// Alertmanager: <https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>.
fn alertmanager(json: &Value) -> String {
    let alerts = json["alerts"].as_array().cloned().unwrap_or_default();
    let status = s(json, "/status").to_ascii_uppercase();
    let name = match s(json, "/commonLabels/alertname") {
        "" => "alerts",
        name => name,
    };
    let mut out = format!("**[{}:{}]** {}", esc(&status), alerts.len(), esc(name));
    for alert in alerts.iter().take(20) {
        let summary = match s(alert, "/annotations/summary") {
            "" => s(alert, "/annotations/description"),
            summary => summary,
        };
        let label = match s(alert, "/labels/instance") {
            "" => s(alert, "/labels/alertname"),
            instance => instance,
        };
        // `link` escapes the text.
        let line = format!(
            "{} {label}: {summary}",
            s(alert, "/status").to_ascii_uppercase()
        );
        out.push_str(&format!("\n- {}", link(&line, s(alert, "/generatorURL"))));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::render::Message;

    fn github_origin(event: &str) -> Origin {
        Origin {
            github_event: Some(event.into()),
            ..Origin::default()
        }
    }

    #[test]
    fn github_push_lists_its_commits() {
        let payload = json!({
            "ref": "refs/heads/main",
            "compare": "https://github.com/o/r/compare/a...b",
            "repository": {"full_name": "o/r", "html_url": "https://github.com/o/r"},
            "pusher": {"name": "ada"},
            "sender": {"login": "ada"},
            "commits": [
                {"id": "0123456789abcdef", "message": "Fix the *parser*\n\nlong text",
                 "url": "https://github.com/o/r/commit/0123456", "author": {"name": "Ada"}},
            ],
        });
        let md = render(&payload, &github_origin("push")).unwrap();
        let html = Message::markdown("m.notice", &md).html.unwrap();
        assert!(html.contains("<strong>ada</strong> pushed"), "{html}");
        assert!(html.contains(">1 commit</a>"), "{html}");
        assert!(html.contains("<code>main</code>"), "{html}");
        assert!(
            html.contains(">0123456</a> Fix the *parser* (Ada)"),
            "{html}"
        );
        assert!(!html.contains("long text"), "{html}");
    }

    #[test]
    fn github_pull_requests_and_unknown_events() {
        let payload = json!({
            "action": "opened", "sender": {"login": "bob"},
            "repository": {"full_name": "o/r", "html_url": "https://github.com/o/r"},
            "pull_request": {"number": 7, "title": "Add feeds", "html_url": "https://github.com/o/r/pull/7"},
        });
        let md = render(&payload, &github_origin("pull_request")).unwrap();
        assert!(
            md.starts_with("**bob** opened pull request [\\#7: Add feeds]"),
            "{md}"
        );
        let md = render(&payload, &github_origin("deployment")).unwrap();
        assert!(md.contains("`deployment` event"), "{md}");
    }

    #[test]
    fn gitlab_merge_requests() {
        let payload = json!({
            "object_kind": "merge_request", "user": {"name": "Cy"},
            "project": {"path_with_namespace": "g/p", "web_url": "https://gitlab.com/g/p"},
            "object_attributes": {"iid": 3, "title": "Docs", "action": "merge",
                                  "url": "https://gitlab.com/g/p/-/merge_requests/3"},
        });
        let md = render(&payload, &Origin::default()).unwrap();
        assert!(
            md.starts_with("**Cy** merge merge request [!3: Docs]"),
            "{md}"
        );
    }

    #[test]
    fn alertmanager_groups() {
        let payload = json!({
            "version": "4", "status": "firing", "receiver": "matrix",
            "commonLabels": {"alertname": "DiskFull"},
            "alerts": [
                {"status": "firing", "labels": {"alertname": "DiskFull", "instance": "db1"},
                 "annotations": {"summary": "/var is 95% full"},
                 "generatorURL": "https://prom.example/graph"},
            ],
        });
        let md = render(&payload, &Origin::default()).unwrap();
        let message = Message::markdown("m.notice", &md);
        assert!(
            message.body.starts_with("**[FIRING:1]** DiskFull"),
            "{}",
            message.body
        );
        let html = message.html.unwrap();
        assert!(
            html.contains("<strong>[FIRING:1]</strong> DiskFull"),
            "{html}"
        );
        assert!(html.contains("FIRING db1: /var is 95% full"), "{html}");
        assert!(render(&json!({"text": "hi"}), &Origin::default()).is_none());
    }
}
