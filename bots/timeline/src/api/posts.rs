//! Writing and reading posts: new posts and replies, reposts, threads, likes.

use super::*;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/posts", post(create_post))
        .route(
            "/api/posts/{event_id}",
            get(thread).put(edit_post).delete(delete_post),
        )
        .route("/api/posts/{event_id}/like", post(like).delete(like))
        .route("/api/posts/{event_id}/repost", post(repost))
        .route("/api/search", get(search))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    text: String,
    html: Option<String>,
    reply_to: Option<String>,
    /// Must be the caller when given: nobody posts as someone else.
    author: Option<String>,
    /// An image uploaded with `POST /api/media`.
    image: Option<content::Image>,
}

async fn create_post(
    State(web): State<Web>,
    headers: HeaderMap,
    new: Result<Json<NewPost>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = web.caller(&headers).await?;
    let new = body(new)?;
    if let Some(author) = &new.author
        && author != caller.user_id.as_str()
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            format!(
                "`author` is {author}, but you are logged in as {}: posts are always sent as yourself",
                caller.user_id
            ),
        ));
    }
    let image = new.image.map(content::Image::check).transpose()?;
    // An image may stand alone; text alone must say something.
    let text = match &image {
        Some(_) if new.text.trim().is_empty() => String::new(),
        _ => content::check_text(&new.text, web.settings.max_post_chars)?,
    };
    let limit = web.settings.max_post_chars;
    let html = new
        .html
        .as_deref()
        .map(|html| content::check_html(html, limit))
        .transpose()?;
    let me = caller.user_id.as_str();
    let (room, thread) = match &new.reply_to {
        Some(replied) => {
            let parent = web.post_or_404(me, replied).await?;
            let root = parent
                .thread_root
                .clone()
                .unwrap_or(parent.event_id.clone());
            let room = web.ensure_member(&caller, &parent.room_id).await?;
            (room, Some((root, parent.event_id)))
        }
        None => (web.own_room(&caller).await?, None),
    };
    let draft = Draft {
        text,
        html,
        thread,
        repost: None,
        image,
    };
    web.publish(&caller, &room, &content::post_content(&draft))
        .await
}

async fn repost(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = web.caller(&headers).await?;
    let me = caller.user_id.as_str();
    let original = web.post_or_404(me, &event_id).await?;
    let room = web.own_room(&caller).await?;
    let draft = Draft {
        text: original.text.clone(),
        html: original.html.clone(),
        thread: None,
        repost: Some((original.room_id.clone(), original.event_id.clone())),
        image: original.image.clone(),
    };
    let mut content = content::post_content(&draft);
    content["body"] = json!(format!("♻ {}: {}", original.author, original.text));
    web.publish(&caller, &room, &content).await
}

async fn thread(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult {
    web.ready().await?;
    let viewer = web.maybe_caller(&headers).await?;
    let viewer = viewer.as_ref().map(|c| c.user_id.as_str()).unwrap_or("");
    let thread = query::thread(web.db(), viewer, &event_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no post {event_id}")))?;
    Ok(Json(json!(thread)))
}

/// `POST` likes a post (once, however often asked), `DELETE` takes the like back.
async fn like(
    State(web): State<Web>,
    method: Method,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let me = caller.user_id.as_str();
    let post = web.post_or_404(me, &event_id).await?;
    let given = query::like_of(web.db(), me, &event_id).await?;
    match (method == Method::DELETE, given) {
        (false, None) => {
            let room = web.ensure_member(&caller, &post.room_id).await?;
            let content = json!({
                "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id, "key": LIKE_KEY }
            });
            web.send(&caller, &room, "m.reaction", &content).await?;
        }
        (true, Some(reaction)) => web.redact(&caller, &post.room_id, &reaction).await?,
        _ => {}
    }
    Ok(Json(json!(web.post_or_404(me, &event_id).await?)))
}

/// Deletes (redacts) a post: its author may, and so may the owner of the timeline it is in.
async fn delete_post(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let me = caller.user_id.as_str();
    let post = web.post_or_404(me, &event_id).await?;
    let owner = index::room_owner(web.db(), &post.room_id).await?;
    if post.author != me && owner.as_deref() != Some(me) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "only a post's author, or the owner of the timeline it is in, may delete it",
        ));
    }
    web.redact(&caller, &post.room_id, &event_id).await?;
    Ok(Json(json!({ "deleted": event_id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    text: String,
    html: Option<String>,
}

/// Edits a post (an `m.replace` event): only its author may.
async fn edit_post(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    edit: Result<Json<Edit>, JsonRejection>,
) -> ApiResult {
    let caller = web.caller(&headers).await?;
    let edit = body(edit)?;
    let me = caller.user_id.as_str();
    let post = web.post_or_404(me, &event_id).await?;
    if post.author != me {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "only a post's author may edit it",
        ));
    }
    let draft = Draft {
        text: content::check_text(&edit.text, web.settings.max_post_chars)?,
        html: edit
            .html
            .as_deref()
            .map(|html| content::check_html(html, web.settings.max_post_chars))
            .transpose()?,
        // The image stays: an edit changes the words.
        image: post.image.clone(),
        ..Draft::default()
    };
    let room = OwnedRoomId::try_from(post.room_id.as_str()).map_err(trestle::Error::from)?;
    web.send(
        &caller,
        &room,
        POST_TYPE,
        &content::edit_content(&event_id, &draft),
    )
    .await?;
    Ok(Json(json!(web.post_or_404(me, &event_id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: String,
    before: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/search?q=…`: top-level posts matching the words, newest first, with a cursor;
/// the token is optional, as the timelines are world-readable.
async fn search(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(search): Query<SearchQuery>,
) -> ApiResult {
    web.ready().await?;
    let viewer = web.maybe_caller(&headers).await?;
    let viewer = viewer.as_ref().map(|c| c.user_id.as_str()).unwrap_or("");
    let length = search.q.chars().count();
    if length > crate::search::MAX_QUERY_CHARS {
        return Err(ApiError::bad(format!(
            "`q` has {length} characters; at most {} are allowed",
            crate::search::MAX_QUERY_CHARS
        )));
    }
    let before = super::users::cursor(search.before.as_deref())?;
    let matcher = crate::search::Matcher::of(web.app.store().backend());
    let page = crate::search::posts(
        web.db(),
        matcher,
        viewer,
        &search.q,
        before,
        web.limit(search.limit),
    )
    .await?;
    Ok(Json(json!(page)))
}
