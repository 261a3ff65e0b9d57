//! Matrix users' profiles as the vCards of their JIDs ([XEP-0054](https://xmpp.org/extensions/xep-0054.html)):
//! a vCard request to `bob@<domain>` is answered with `@bob`'s display name and avatar, read
//! from their Matrix profile, so XMPP clients show them.

use tokio_xmpp::{
    jid::{BareJid, Jid},
    minidom::Element,
    parsers::{
        iq::Iq,
        stanza_error::{DefinedCondition, ErrorType, StanzaError},
        vcard::{Binval, Photo, Type, VCard},
    },
};
use trestle::ruma::{
    OwnedMxcUri, OwnedUserId,
    api::{AppserviceUserIdentity, client::profile::get_profile},
};
use trestle_bridge::{BridgeError, NetworkResult};

use crate::{hub::Kit, ids};

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
}
