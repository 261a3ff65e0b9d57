//! Avatars both ways, through vCards ([XEP-0054](https://xmpp.org/extensions/xep-0054.html)):
//! a vCard request to `bob@<domain>` is answered with `@bob`'s display name and avatar, read
//! from their Matrix profile, so XMPP clients show them; and an occupant whose presence names
//! a new avatar ([XEP-0153](https://xmpp.org/extensions/xep-0153.html)'s hash) has their vCard
//! asked for, and its photo becomes their ghost's avatar.

use tokio_xmpp::{
    jid::{BareJid, Jid},
    minidom::Element,
    parsers::{
        iq::Iq,
        presence::Presence,
        stanza_error::{DefinedCondition, ErrorType, StanzaError},
        vcard::{Binval, Photo, Type, VCard},
        vcard_update::VCardUpdate,
    },
};
use trestle::ruma::{
    OwnedMxcUri, OwnedUserId,
    api::{AppserviceUserIdentity, client::profile::get_profile},
};
use trestle_bridge::{BridgeError, NetworkResult, UserInfo};

use crate::{
    hub::{Hub, Kit},
    ids::{self, UserId},
};

/// The vCard namespace.
const VCARD: &str = "vcard-temp";

/// The largest avatar put in a vCard, in bytes: the vCard travels as one stanza, base64 and
/// all, and servers refuse large stanzas (Prosody's limit for clients is 256 KiB).
const LARGEST: usize = 128 * 1024;

/// A request for the vCard of one of the component's JIDs: answered aside (reading the Matrix
/// profile and avatar takes requests to the homeserver). Answers whether it was one.
pub fn vcard_request(bridge: &Kit, iq: &Iq) -> bool {
    let Iq::Get {
        from: Some(from),
        to: Some(to),
        id,
        payload,
    } = iq
    else {
        return false;
    };
    if !payload.is("vCard", VCARD) {
        return false;
    }
    let (bridge, from, to, id) = (bridge.clone(), from.clone(), to.clone(), id.clone());
    tokio::spawn(async move {
        let answer = match vcard_of(&bridge, &to.to_bare()).await {
            Ok(Some(vcard)) => Iq::Result {
                from: Some(to),
                to: Some(from),
                id,
                payload: Some(vcard.into()),
            },
            Ok(None) => refusal(to, from, id, DefinedCondition::ItemNotFound),
            Err(error) => {
                tracing::warn!(%to, %error, "a Matrix user's vCard could not be made");
                refusal(to, from, id, DefinedCondition::InternalServerError)
            }
        };
        bridge.network().send(answer);
    });
    true
}

/// An error answer to the request `id`.
fn refusal(from: Jid, to: Jid, id: String, condition: DefinedCondition) -> Iq {
    let error = StanzaError::new(ErrorType::Cancel, condition, "en", "no such Matrix user");
    Iq::Error {
        from: Some(from),
        to: Some(to),
        id,
        error,
        payload: None,
    }
}

/// The vCard of a JID of the component: the bridge's own (its name), or a Matrix user's (their
/// profile's display name and avatar). `None` for a JID that is no Matrix user.
async fn vcard_of(bridge: &Kit, jid: &BareJid) -> NetworkResult<Option<VCard>> {
    let hub = bridge.network();
    if jid.node().is_none() {
        return Ok(Some(card(&hub.cfg.settings.bot_nick, None)));
    }
    let Some(user) =
        ids::matrix_user(jid, hub.server_name()?).and_then(|user| OwnedUserId::try_from(user).ok())
    else {
        return Ok(None);
    };
    let app = bridge.app()?;
    let request = get_profile::v3::Request::new(user.clone());
    let profile = match app
        .client()
        .send(request, AppserviceUserIdentity::default())
        .await
    {
        Ok(profile) => profile,
        Err(error) if error.kind().is_some() => {
            // The homeserver's "no such user" (or a profile it will not show).
            tracing::debug!(%user, %error, "no profile for a vCard");
            return Ok(None);
        }
        Err(error) => return Err(BridgeError::from(error)),
    };
    let name = profile
        .get("displayname")
        .and_then(|n| n.as_str())
        .unwrap_or(user.localpart())
        .to_owned();
    let avatar = profile
        .get("avatar_url")
        .and_then(|u| u.as_str())
        .map(OwnedMxcUri::from);
    let photo = match avatar {
        Some(mxc) => photo(bridge, &mxc).await,
        None => None,
    };
    Ok(Some(card(&name, photo)))
}

/// The avatar's bytes as a vCard photo, unless it cannot be read or is too large for one.
async fn photo(bridge: &Kit, mxc: &OwnedMxcUri) -> Option<Photo> {
    let app = bridge.app().ok()?;
    let media = app.media().with_limit(LARGEST as u64);
    match media.download_bytes(mxc).await {
        Ok((bytes, content_type)) if bytes.len() <= LARGEST => Some(Photo {
            type_: Type {
                data: content_type.unwrap_or_else(|| "image/png".to_owned()),
            },
            binval: Binval { data: bytes },
        }),
        Ok(_) => None,
        Err(error) => {
            tracing::info!(%mxc, %error, "an avatar left out of a vCard");
            None
        }
    }
}

/// A vCard with a full name (`FN`, and `NICKNAME` for clients that show that) and a photo.
fn card(name: &str, photo: Option<Photo>) -> VCard {
    let text = |tag: &str| Element::builder(tag, VCARD).append(name).build();
    VCard {
        photo,
        payloads: vec![text("FN"), text("NICKNAME")],
    }
}

/// The avatar hash (XEP-0153, hex) a presence names, if it names one.
pub fn photo_hash(presence: &Presence) -> Option<String> {
    let update = presence
        .payloads
        .iter()
        .find_map(|p| VCardUpdate::try_from(p.clone()).ok())?;
    let hash = update.photo?.data?;
    Some(hash.iter().map(|b| format!("{b:02x}")).collect())
}

/// An occupant's presence: when it names an avatar the bridge has not given their ghost yet,
/// their vCard is asked for (by their real JID when the room shows it, else through the room,
/// which passes it on to their account) and its photo becomes the ghost's avatar. Done aside.
pub fn occupant(bridge: &Kit, user: &UserId, presence: &Presence) {
    let hub = bridge.network();
    let Some(hash) = photo_hash(presence) else {
        return;
    };
    if !hub.new_avatar(user, &hash) {
        return;
    }
    let to = match user {
        UserId::Jid(jid) => Jid::from(jid.clone()),
        UserId::Occupant(occupant) => Jid::from(occupant.clone()),
    };
    let (bridge, user) = (bridge.clone(), user.clone());
    tokio::spawn(async move {
        let hub = bridge.network();
        let from = Jid::from(hub.bot_jid().clone());
        let query = Element::builder("vCard", VCARD).build();
        let photo = match hub.ask(from, to, query).await {
            Ok(Some(payload)) => VCard::try_from(payload).ok().and_then(|card| card.photo),
            Ok(None) | Err(_) => None,
        };
        let Some(photo) = photo else {
            tracing::info!(%user, "an avatar named in a presence could not be read");
            return;
        };
        if let Err(error) = set_avatar(&bridge, &user, photo).await {
            tracing::warn!(%user, %error, "a ghost's avatar could not be set");
        }
    });
}

/// Uploads a vCard's photo and makes it the ghost's avatar.
async fn set_avatar(bridge: &Kit, user: &UserId, photo: Photo) -> NetworkResult<()> {
    let app = bridge.app()?;
    let content_type = match photo.type_.data.trim() {
        "" => "image/png".to_owned(),
        given => given.to_owned(),
    };
    let mxc = app
        .media()
        .upload_bytes(photo.binval.data, &content_type, None)
        .await?;
    let mut info = UserInfo::default();
    info.avatar_url = Some(mxc);
    bridge.remote_profile(user, &info).await
}

impl Hub {
    /// Records that `user`'s avatar is the one `hash` names; answers whether it is new.
    fn new_avatar(&self, user: &UserId, hash: &str) -> bool {
        let mut avatars = self.avatars_lock();
        avatars.insert(user.to_string(), hash.to_owned()).as_deref() != Some(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vcard_carries_the_name_and_the_photo() {
        let photo = Photo {
            type_: Type {
                data: "image/png".into(),
            },
            binval: Binval {
                data: vec![0, 1, 2, 255],
            },
        };
        let element = Element::from(card("Bob", Some(photo)));
        let read = VCard::try_from(element.clone()).unwrap();
        assert_eq!(read.photo.unwrap().binval.data, vec![0, 1, 2, 255]);
        assert_eq!(element.get_child("FN", VCARD).unwrap().text(), "Bob");
    }

    #[test]
    fn presences_name_their_avatar_by_its_hash() {
        let presence = |x: &str| {
            let xml = format!(
                "<presence xmlns='jabber:client' from='room@conf.example/alice'>{x}</presence>"
            );
            Presence::try_from(xml.parse::<Element>().unwrap()).unwrap()
        };
        let hash = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let named = presence(&format!(
            "<x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x>"
        ));
        assert_eq!(photo_hash(&named).as_deref(), Some(hash));
        let none = presence("<x xmlns='vcard-temp:x:update'><photo/></x>");
        assert_eq!(photo_hash(&none), None);
        assert_eq!(photo_hash(&presence("")), None);
    }
}
