//! Presence both ways, turned on in the settings, end to end: a real Synapse (presence on, as
//! by default), a real Prosody and an XMPP client written in the test. alice's `dnd` with a
//! status is her ghost's `unavailable` with that status message; bob's `unavailable` with a
//! status message is his occupant's `away` with that status.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::{str::FromStr, time::Instant};

use reqwest::Method;
use support::{
    client::XmppClient,
    prosody::Prosody,
    room::{alice_in_room, bob_away_for_lunch, bob_joins, settings, start_with},
};
use tokio_xmpp::{
    jid::Jid,
    parsers::presence::{Presence, Show},
};
use trestle_tests::{
    appservice::WAIT,
    synapse::{UserClient, encode},
};

/// Waits until `user` reads `member`'s presence as `state` with the status message `status`.
async fn wait_presence(user: &UserClient, member: &str, state: &str, status: &str) {
    let path = format!("/_matrix/client/v3/presence/{}/status", encode(member));
    let started = Instant::now();
    loop {
        let (code, now) = user.call(Method::GET, &path, None).await;
        if code == 200 && now["presence"] == state && now["status_msg"] == status {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{member} never became {state} ({status}): {code} {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// alice tells the room she is `show`, saying `status`.
async fn set_show(alice: &mut XmppClient, occupant: &str, show: Show, status: &str) {
    let mut presence = Presence::available()
        .with_to(Jid::from_str(occupant).unwrap())
        .with_show(show);
    presence.set_status("", status);
    alice.send(presence).await;
}

#[tokio::test]
async fn presence_crosses_both_ways_where_enabled() {
    let server = Prosody::start(&["alice"]).await;
    let (room, mut alice) = alice_in_room(&server).await;
    let mut settings = settings(&server);
    settings.presence = true;
    let setup = start_with(settings).await;
    let (bob, _portal, bob_occupant) = bob_joins(&setup, &mut alice, &room).await;

    // XMPP → Matrix.
    let alice_ghost = "@xmpp_chat=40conference.localhost=2falice:localhost";
    set_show(&mut alice, &format!("{room}/alice"), Show::Dnd, "busy").await;
    wait_presence(&bob, alice_ghost, "unavailable", "busy").await;

    // Matrix → XMPP.
    bob_away_for_lunch(&bob, &mut alice, &bob_occupant).await;
}
