//! Inbound webhooks: `!webhook` commands make and manage them; [`inbound`] turns a POST to a
//! hook's secret URL into a message from the hook's own ghost.

pub(crate) mod calls;
pub mod inbound;
pub mod known;
pub mod payload;

use sqlx::Row;
use trestle::{
    Appservice, Intent,
    ruma::{OwnedMxcUri, RoomId, UserId},
};

use crate::{Error, Manage, Result, Shared, answer, db, dm, render::Message};

/// One webhook as stored.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The short id in the ghost's localpart.
    pub id: String,
    /// The secret in the URL.
    pub token: String,
    /// Where messages go.
    pub room_id: String,
    /// The ghost's display name.
    pub name: String,
    /// A Jinja template over the payload.
    pub template: Option<String>,
    /// The HMAC key signatures are checked with, if any.
    pub secret: Option<String>,
}

fn hook_from(row: &sqlx::any::AnyRow) -> Hook {
    Hook {
        id: row.get(0),
        token: row.get(1),
        room_id: row.get(2),
        name: row.get(3),
        template: row.get(4),
        secret: row.get(5),
    }
}

/// The hook whose URL carries `token`.
pub async fn by_token(app: &Appservice, token: &str) -> Result<Option<Hook>> {
    hook_where(app, "token = $1", &[token]).await
}

/// The hook with id `id`.
pub(crate) async fn by_id(app: &Appservice, id: &str) -> Result<Option<Hook>> {
    hook_where(app, "id = $1", &[id]).await
}

async fn by_name(app: &Appservice, room: &RoomId, name: &str) -> Result<Hook> {
    hook_where(app, "room_id = $1 AND name = $2", &[room.as_str(), name])
        .await?
        .ok_or_else(|| Error::Invalid(format!("There is no webhook named {name} in this room.")))
}

/// The hook matching `condition` (a literal of this file), with `values` bound in order.
async fn hook_where(
    app: &Appservice,
    condition: &'static str,
    values: &[&str],
) -> Result<Option<Hook>> {
    let sql = format!(
        "SELECT id, token, room_id, name, template, secret FROM notify_hooks WHERE {condition}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = query.bind(*value);
    }
    let row = query.fetch_optional(app.store().pool()).await?;
    Ok(row.as_ref().map(hook_from))
}

/// The ghost a hook speaks as.
pub fn ghost(app: &Appservice, hook_id: &str) -> Result<Intent> {
    Ok(app.ghost(&format!("{}hook_{hook_id}", crate::PLUGIN.ghost_prefix))?)
}

/// The public URL of a hook.
pub fn url(app: &Appservice, shared: &Shared, token: &str) -> String {
    format!("{}/hook/{token}", base_url(app, shared))
}

/// Where callers reach the plugin's routes, without a trailing `/`.
fn base_url(app: &Appservice, shared: &Shared) -> String {
    let base = shared
        .settings
        .public_url
        .clone()
        .or_else(|| app.registration().url.clone())
        .unwrap_or_default();
    base.trim_end_matches('/').to_owned()
}

pub(crate) const USAGE: &str =
    "<create|list|remove|rename|avatar|template|secret|url|log> [name] [value]";

/// `!webhook …`.
pub(crate) async fn command(m: Manage) -> Result<()> {
    m.shared.ready(&m.app).await?;
    let (name, value) = split_word(&m.rest);
    let outcome = match m.sub.as_str() {
        "create" => create(&m.app, &m.shared, &m.room, &m.sender, &unquote(&m.rest)).await,
        "list" => list(&m.app, &m.room).await,
        "remove" => remove(&m.app, &m.room, &name).await,
        "rename" => rename(&m.app, &m.room, &name, &value).await,
        "avatar" => avatar(&m.app, &m.room, &name, &value).await,
        "template" => template(&m.app, &m.room, &name, &value).await,
        "secret" => secret(&m.app, &m.room, &m.sender, &name, &value).await,
        "url" => send_url(&m.app, &m.shared, &m.room, &m.sender, &name).await,
        "log" => send_log(&m.app, &m.shared, &m.room, &m.sender, &name).await,
        _ => Err(Error::Invalid(format!("Usage: !webhook {USAGE}"))),
    };
    answer(&m.app, &m.room, outcome).await
}

async fn create(
    app: &Appservice,
    shared: &Shared,
    room: &RoomId,
    sender: &UserId,
    name: &str,
) -> Result<String> {
    check_name(name)?;
    if by_name(app, room, name).await.is_ok() {
        return Err(Error::Invalid(format!(
            "There is already a webhook named {name} here."
        )));
    }
    let id = db::random_id(10);
    let token = db::random_secret();
    let ghost = ghost(app, &id)?;
    ghost.set_display_name(name).await?;
    ghost.ensure_joined(room).await?;
    sqlx::query(
        "INSERT INTO notify_hooks (id, token, room_id, name, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&token)
    .bind(room.as_str())
    .bind(name)
    .bind(sender.as_str())
    .bind(db::now_ms())
    .execute(app.store().pool())
    .await?;
    if let Err(error) = private_url(app, shared, sender, room, name, &token).await {
        tracing::warn!(%error, "could not send a webhook URL privately");
        return Ok(format!(
            "Created webhook {name}, but I could not send you its URL privately ({error}). Try `!webhook url {name}`."
        ));
    }
    Ok(format!(
        "Created webhook {name}; I sent you its URL in a direct message. Keep it secret: whoever has it can post here."
    ))
}

async fn private_url(
    app: &Appservice,
    shared: &Shared,
    sender: &UserId,
    room: &RoomId,
    name: &str,
    token: &str,
) -> Result<()> {
    let url = url(app, shared, token);
    let text = format!(
        "Webhook {name} for {room}:\n\n{url}\n\nPOST JSON (`{{\"text\": \"**Markdown**\"}}`), plain text or a form to it."
    );
    dm::send_private(app, sender, &Message::markdown("m.notice", &text)).await
}

async fn send_url(
    app: &Appservice,
    shared: &Shared,
    room: &RoomId,
    sender: &UserId,
    name: &str,
) -> Result<String> {
    let hook = by_name(app, room, name).await?;
    private_url(app, shared, sender, room, name, &hook.token).await?;
    Ok(format!("I sent you the URL of {name} in a direct message."))
}

/// `!webhook log NAME`: the hook's last calls, in a direct message (a call's body may say more
/// than what was posted), with a link to the page of all that are kept.
async fn send_log(
    app: &Appservice,
    shared: &Shared,
    room: &RoomId,
    sender: &UserId,
    name: &str,
) -> Result<String> {
    let hook = by_name(app, room, name).await?;
    let calls = calls::recent(app, &hook.id, 5).await?;
    let mut text = format!("The last calls of webhook {name} in {room}, newest first:\n");
    if calls.is_empty() {
        text.push_str("\nNone yet.\n");
    }
    for call in &calls {
        let message = call.message.as_deref().unwrap_or("(none posted)");
        let message: String = message.chars().take(200).collect();
        text.push_str(&format!(
            "\n- {} — {}: {} — {}",
            trestle::store::rfc3339(call.received_at),
            call.status,
            crate::render::escape_markdown(&call.outcome),
            crate::render::escape_markdown(&message),
        ));
    }
    text.push_str(&format!(
        "\n\nEach request, its headers and body (secrets redacted), for an hour: {}",
        calls::link(app, shared, &hook)
    ));
    dm::send_private(app, sender, &Message::markdown("m.notice", &text)).await?;
    Ok(format!(
        "I sent you the last calls of {name} in a direct message."
    ))
}

async fn list(app: &Appservice, room: &RoomId) -> Result<String> {
    let rows = db::rows_of_room(
        app,
        "SELECT name, template, secret FROM notify_hooks WHERE room_id = $1 ORDER BY name",
        room.as_str(),
    )
    .await?;
    if rows.is_empty() {
        return Ok("No webhooks in this room.".into());
    }
    let mut out = String::from("Webhooks in this room:");
    for row in rows {
        let name: String = row.get(0);
        let template: Option<String> = row.get(1);
        let secret: Option<String> = row.get(2);
        let mut notes = Vec::new();
        if template.is_some() {
            notes.push("template");
        }
        if secret.is_some() {
            notes.push("signed");
        }
        out.push_str(&format!("\n- {}", crate::render::escape_markdown(&name)));
        if !notes.is_empty() {
            out.push_str(&format!(" ({})", notes.join(", ")));
        }
    }
    Ok(out)
}

async fn remove(app: &Appservice, room: &RoomId, name: &str) -> Result<String> {
    let hook = by_name(app, room, name).await?;
    let mut tx = app.store().begin().await?;
    for sql in [
        "DELETE FROM notify_hook_calls WHERE hook_id = $1",
        "DELETE FROM notify_hooks WHERE id = $1",
    ] {
        sqlx::query(sql).bind(&hook.id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // The URL is dead from here on; the ghost leaving is a courtesy that may fail.
    if let Err(error) = ghost(app, &hook.id)?.leave(room).await {
        tracing::info!(%error, "webhook ghost could not leave");
    }
    Ok(format!("Removed webhook {name}; its URL no longer works."))
}

async fn rename(app: &Appservice, room: &RoomId, name: &str, new: &str) -> Result<String> {
    let new = unquote(new);
    check_name(&new)?;
    let hook = by_name(app, room, name).await?;
    if by_name(app, room, &new).await.is_ok() {
        return Err(Error::Invalid(format!(
            "There is already a webhook named {new} here."
        )));
    }
    ghost(app, &hook.id)?.set_display_name(&new).await?;
    set(app, Column::Name, Some(&new), &hook.id).await?;
    Ok(format!("Renamed webhook {name} to {new}."))
}

async fn avatar(app: &Appservice, room: &RoomId, name: &str, value: &str) -> Result<String> {
    let hook = by_name(app, room, name).await?;
    let mxc = OwnedMxcUri::from(value.trim());
    if !value.trim().starts_with("mxc://") || mxc.validate().is_err() {
        return Err(Error::Invalid(
            "Give the avatar as an mxc:// URI (upload an image in your client and copy its address)."
                .into(),
        ));
    }
    ghost(app, &hook.id)?.set_avatar_url(&mxc).await?;
    set(app, Column::Avatar, Some(mxc.as_str()), &hook.id).await?;
    Ok(format!("Set the avatar of {name}."))
}

async fn template(app: &Appservice, room: &RoomId, name: &str, value: &str) -> Result<String> {
    let hook = by_name(app, room, name).await?;
    let template = value.trim();
    let stored = if template.is_empty() {
        None
    } else {
        payload::check_template(template)
            .map_err(|e| Error::Invalid(format!("That template does not compile: {e}")))?;
        Some(template.to_owned())
    };
    set(app, Column::Template, stored.as_deref(), &hook.id).await?;
    Ok(match stored {
        Some(_) => format!("Webhook {name} now renders payloads with that template."),
        None => format!("Webhook {name} renders payloads without a template again."),
    })
}

async fn secret(
    app: &Appservice,
    room: &RoomId,
    sender: &UserId,
    name: &str,
    value: &str,
) -> Result<String> {
    let hook = by_name(app, room, name).await?;
    if value.trim() == "off" {
        set(app, Column::Secret, None, &hook.id).await?;
        return Ok(format!("Webhook {name} no longer checks signatures."));
    }
    let secret = db::random_secret();
    set(app, Column::Secret, Some(&secret), &hook.id).await?;
    let text = format!(
        "Signing secret of webhook {name} in {room}:\n\n`{secret}`\n\nSign each body with HMAC-SHA256 and send `X-Hub-Signature-256: sha256=<hex>` (GitHub does this when given the secret), or send the secret as `X-Gitlab-Token`."
    );
    dm::send_private(app, sender, &Message::markdown("m.notice", &text)).await?;
    Ok(format!(
        "Webhook {name} now refuses unsigned requests; I sent you the secret in a direct message."
    ))
}

/// The settings of a hook that commands change.
enum Column {
    Name,
    Avatar,
    Template,
    Secret,
}

async fn set(app: &Appservice, column: Column, value: Option<&str>, id: &str) -> Result<()> {
    let sql = match column {
        Column::Name => "UPDATE notify_hooks SET name = $1 WHERE id = $2",
        Column::Avatar => "UPDATE notify_hooks SET avatar_url = $1 WHERE id = $2",
        Column::Template => "UPDATE notify_hooks SET template = $1 WHERE id = $2",
        Column::Secret => "UPDATE notify_hooks SET secret = $1 WHERE id = $2",
    };
    sqlx::query(sql)
        .bind(value.map(str::to_owned))
        .bind(id)
        .execute(app.store().pool())
        .await?;
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "Give the webhook a name of 1 to 64 characters (quote a name with spaces).".into(),
        ));
    }
    Ok(())
}

/// Splits off the first word, which may be `"double quoted"`; the rest keeps its layout (a
/// template may span lines).
pub(crate) fn split_word(text: &str) -> (String, String) {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('"')
        && let Some(end) = quoted.find('"')
    {
        return (
            quoted[..end].to_owned(),
            quoted[end + 1..].trim_start().to_owned(),
        );
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (text[..end].to_owned(), text[end..].trim_start().to_owned())
}

fn unquote(text: &str) -> String {
    let text = text.trim();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_plain_quoted_and_keep_the_rest() {
        assert_eq!(split_word("create CI"), ("create".into(), "CI".into()));
        assert_eq!(
            split_word("\"Build Bot\" {{ a }}\n{{ b }}"),
            ("Build Bot".into(), "{{ a }}\n{{ b }}".into())
        );
        assert_eq!(split_word(""), (String::new(), String::new()));
        assert_eq!(unquote("\"New Name\""), "New Name");
    }
}
