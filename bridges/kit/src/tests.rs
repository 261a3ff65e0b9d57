//! Unit tests of the kit's pure parts; the whole kit is tested end to end against Synapse in
//! `tests/tests/bridge_toy.rs`.

use ruma::{events::room::message::MessageType, mxc_uri};

use super::{
    ConnectionState, MessageContent, MessageKind,
    login::state_notice,
    matrix::{message_content, strip_reply_fallback},
    remote::matrix_content,
};

#[test]
fn content_round_trips_between_the_kit_and_matrix() {
    let cases = [
        MessageContent::text("plain"),
        MessageContent::text("*loud*").html("<b>loud</b>"),
        MessageContent::text("waves").kind(MessageKind::Emote),
        MessageContent::text("fyi").kind(MessageKind::Notice),
        MessageContent::media(
            "cat.png",
            mxc_uri!("mxc://localhost/cat").to_owned(),
            Some("image/png".into()),
        ),
        MessageContent::media("notes.txt", mxc_uri!("mxc://localhost/n").to_owned(), None),
    ];
    for content in cases {
        assert_eq!(message_content(&matrix_content(&content)), content);
    }
}

#[test]
fn media_types_follow_the_mime_type() {
    let url = mxc_uri!("mxc://localhost/f").to_owned();
    let kinds = [
        ("image/jpeg", "m.image"),
        ("video/mp4", "m.video"),
        ("audio/ogg", "m.audio"),
        ("application/pdf", "m.file"),
    ];
    for (mime, msgtype) in kinds {
        let content = MessageContent::media("f", url.clone(), Some(mime.into()));
        assert_eq!(matrix_content(&content).msgtype(), msgtype, "{mime}");
    }
    let image = matrix_content(&MessageContent::media("f", url, Some("image/png".into())));
    assert!(matches!(image.msgtype, MessageType::Image(_)));
}

#[test]
fn reply_fallbacks_are_dropped() {
    assert_eq!(
        strip_reply_fallback("> <@bob:hs> hi\n> there\n\nhello"),
        "hello"
    );
    assert_eq!(strip_reply_fallback("no quote"), "no quote");
    assert_eq!(strip_reply_fallback(">not a quote"), ">not a quote");
}

#[test]
fn users_hear_of_drops_and_recoveries_but_not_of_routine() {
    let lost = ConnectionState::TransientDisconnect("timeout".into());
    assert_eq!(
        state_notice("net", "CONNECTED", &lost).as_deref(),
        Some("net: connection lost (timeout); reconnecting.")
    );
    // A second failed attempt while down says nothing new.
    assert_eq!(state_notice("net", "TRANSIENT_DISCONNECT", &lost), None);
    assert_eq!(
        state_notice("net", "TRANSIENT_DISCONNECT", &ConnectionState::Connected).as_deref(),
        Some("net: connected again.")
    );
    let bad = ConnectionState::BadCredentials("banned".into());
    assert!(
        state_notice("net", "CONNECTED", &bad)
            .unwrap()
            .contains("Log in again")
    );
    assert_eq!(
        state_notice("net", "CONNECTED", &ConnectionState::Connecting),
        None
    );
}

#[test]
fn a_network_builds_its_own_login_requests() {
    let user = ruma::owned_user_id!("@alice:localhost");
    let asked = super::LoginRequest::new(user.clone()).field("nick", "alice");
    assert!(!asked.automatic);
    assert_eq!(asked.fields.get("nick").map(String::as_str), Some("alice"));
    let made = asked.field("nick", "ally").automatic();
    assert!(made.automatic);
    assert_eq!(made.user, user);
    assert_eq!(
        made.fields.len(),
        1,
        "a field given twice keeps the last value"
    );
    assert_eq!(made.fields["nick"], "ally");
}

/// Settings reach logs through `{:?}`: the secrets in them must not.
#[test]
fn the_settings_debug_output_hides_every_secret() {
    let config: crate::BridgeConfig = serde_json::from_value(serde_json::json!({
        "provisioning_secret": "prov-s3cret",
        "double_puppet": {"example.org": "as_token:dp-s3cret"},
        "media_links": {"key": "media-s3cret"},
    }))
    .unwrap();
    let text = format!("{config:?}");
    for secret in ["prov-s3cret", "dp-s3cret", "media-s3cret"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("example.org"), "{text}");
    assert!(text.contains("<hidden>"), "{text}");
}
