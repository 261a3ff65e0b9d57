//! Following someone whose timeline the index does not know yet: a user of another homeserver,
//! found by their Matrix id alone. Their timeline room is found by its alias on their server,
//! joined with the follower's own token (over federation), and the bot joins it after them: a
//! timeline room is public, and once the follower is in, this homeserver is in the room too.
//! The bot then reads the room's history (backfilled from the owner's server) into the index,
//! and the homeserver pushes every later post to it like any other.

use super::*;
use trestle::ruma::{
    OwnedRoomAliasId, OwnedServerName,
    api::{AppserviceUserIdentity, client::membership::join_room_by_id_or_alias},
};

/// Finds `user`'s timeline room, joins the caller and the bot to it and indexes it; returns the
/// room. A 404 when no alias names a timeline of theirs.
pub(super) async fn discover(web: &Web, caller: &Caller, user: &UserId) -> ApiResult<String> {
    let aliases = aliases(&web.settings, user);
    let mut found = None;
    for alias in &aliases {
        match web.users.resolve_alias(&caller.token, alias).await {
            Ok(hit) => {
                found = Some((alias, hit));
                break;
            }
            Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    let Some((alias, (room, mut via))) = found else {
        let looked: Vec<&str> = aliases.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "{user} has no timeline yet: they have never posted (no room at {})",
            looked.join(" or ")
        )));
    };
    let home: OwnedServerName = user.server_name().to_owned();
    if !via.contains(&home) {
        via.push(home);
    }
    web.users
        .join_via(&caller.token, &room, via.clone())
        .await?;
    let bot = web.app.bot_user_id();
    if let Err(error) = bot_join_via(&web.app, &room, via).await {
        if error.status().is_none() {
            return Err(error.into());
        }
        tracing::warn!(%room, %error, "the bot may not join a followed timeline");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            format!(
                "you joined {user}'s timeline {room}, but {bot} may not join it to show its \
                 posts here ({error}): ask {user} to invite {bot}"
            ),
        ));
    }
    crate::reindex::room(&web.app, &room).await?;
    let owner = index::room_owner(web.db(), room.as_str()).await?;
    if owner.as_deref() != Some(user.as_str()) {
        // Whatever the alias names, the room's creator is whose timeline it is: never show
        // someone else's posts as the followed user's.
        tracing::info!(%alias, %room, ?owner, "an alias that names no timeline of its user");
        if let Err(error) = web.users.leave(&caller.token, &room).await {
            tracing::warn!(%room, %error, "could not leave again");
        }
        if owner.is_none()
            && let Err(error) = web.app.bot().leave(&room).await
        {
            tracing::warn!(%room, %error, "the bot could not leave again");
        }
        return Err(ApiError::not_found(format!(
            "{alias} names {room}, which is not {user}'s timeline"
        )));
    }
    index::add_member(web.db(), room.as_str(), caller.user_id.as_str(), None).await?;
    tracing::info!(follower = %caller.user_id, %user, %room, "followed a timeline found by its alias");
    Ok(room.to_string())
}

/// The bot joins through `via` too: until this homeserver has fetched the room's full state
/// (a fresh federated join has only part of it), Synapse joins its local users remotely, which
/// needs servers in the room. Sent as the bot directly, since the framework's joins name no
/// servers; the membership it records from the join event the homeserver pushes.
async fn bot_join_via(
    app: &Appservice,
    room: &OwnedRoomId,
    via: Vec<OwnedServerName>,
) -> trestle::Result<()> {
    let mut request = join_room_by_id_or_alias::v3::Request::new(room.clone().into());
    request.via = via;
    app.client()
        .send(request, AppserviceUserIdentity::default())
        .await?;
    Ok(())
}

/// Where `user`'s timeline may be: the alias this deployment gives timelines, on the user's own
/// server, and the default one, which another deployment most likely kept.
fn aliases(settings: &Settings, user: &UserId) -> Vec<OwnedRoomAliasId> {
    let server = user.server_name().as_str();
    let mut aliases: Vec<OwnedRoomAliasId> = settings
        .alias_for(user.localpart(), server)
        .into_iter()
        .collect();
    if let Some(default) = Settings::default().alias_for(user.localpart(), server)
        && !aliases.contains(&default)
    {
        aliases.push(default);
    }
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_timeline_is_looked_for_on_their_own_server() {
        let user = UserId::parse("@bob:other.example:8448").unwrap();
        let found = aliases(&Settings::default(), &user);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].as_str(), "#timeline_bob:other.example:8448");
        let custom = Settings {
            alias: "tl.{localpart}".into(),
            ..Settings::default()
        };
        let found: Vec<String> = aliases(&custom, &user)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "#tl.bob:other.example:8448",
                "#timeline_bob:other.example:8448"
            ]
        );
        let none = Settings {
            alias: String::new(),
            ..Settings::default()
        };
        assert_eq!(aliases(&none, &user).len(), 1);
    }
}
