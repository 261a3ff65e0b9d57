//! Matrix users on XMPP: each has a JID on the component, held as an automatic login of the
//! kit's made when they first join a portal, and joins the rooms of their portals as an
//! occupant named after their display name.

use trestle::ruma::{RoomId, UserId as MatrixUserId};
use trestle_bridge::{ConnectionState, LoginHandle, LoginRequest, NetworkResult};

use crate::{
    hub::{Hub, Kit, Puppet},
    ids::ChatId,
};

/// The id of every Matrix user's one login: their JID on the component.
pub const LOGIN_ID: &str = "xmpp";

/// A Matrix user joined a portal: their JID is made now if they have none (an automatic
/// login, registered with the kit before this returns, so that what they send next goes out
/// as them). Failures are logged: they are then not bridged, and the kit tells them so.
pub async fn ensure_login(bridge: &Kit, user: &MatrixUserId) {
    if bridge.connection(user, LOGIN_ID).is_some() {
        return;
    }
    match bridge.logins(user).await {
        Ok(logins) if logins.iter().any(|l| l.id == LOGIN_ID) => return,
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%user, %error, "logins unreadable; no JID made");
            return;
        }
    }
    let request = LoginRequest::new(user.to_owned()).automatic();
    match bridge.login(request).await {
        Ok(login) => tracing::info!(%user, jid = %login.remote_name, "a Matrix user is on XMPP"),
        Err(error) => tracing::warn!(%user, %error, "could not give a Matrix user a JID"),
    }
}

/// The nick of a Matrix user in the room of `room_id`: their display name there.
pub async fn nick(bridge: &Kit, room_id: &RoomId, user: &MatrixUserId) -> String {
    let name = bridge.display_name(room_id, user).await;
    let name = name.trim();
    if name.is_empty() {
        user.localpart().to_owned()
    } else {
        name.to_owned()
    }
}

/// A login (new, or restored at start) connects: the user joins the rooms of the portals they
/// are in, and their state is connected (the component's stream carries them; while it is
/// down, what they send waits in its queue).
pub async fn connected(handle: &LoginHandle<Hub>, puppet: &Puppet) -> NetworkResult<()> {
    for portal in handle.portals().await? {
        let ChatId::Muc(room) = &portal.chat else {
            continue;
        };
        let joined = handle
            .member_content(&portal.room_id, &puppet.user)
            .await
            .is_some_and(|c| c["membership"] == "join");
        if joined {
            let nick = nick(handle, &portal.room_id, &puppet.user).await;
            handle.network().user_join(room, puppet, &nick);
        }
    }
    let handle = handle.clone();
    // Reported once the kit holds the connection, which it does when `connect` returns.
    tokio::spawn(async move {
        if let Err(error) = handle.set_state(ConnectionState::Connected).await {
            tracing::warn!(%error, "could not report a JID connected");
        }
    });
    Ok(())
}
