//! Matrix power levels as standing in a room the bridge made (its bot owns it), end to end: a
//! real Synapse, a real Prosody and an XMPP client written in the test. A Matrix user raised to
//! 75, 50, 0 and 90 in the portal becomes an admin, a moderator, a participant again and an
//! owner of the room, as another occupant sees; the bridge writes no power levels back.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use serde_json::{Value, json};
use support::{
    client::XmppClient,
    prosody::{MUC, Prosody},
    room::{bot_sets_level, message_from, power_levels, start},
};
use tokio_xmpp::parsers::{
    message::MessageType,
    muc::user::{Affiliation, MucUser, Role},
    presence::Presence,
};
use trestle_tests::{appservice::WAIT, synapse::UserClient};

/// The affiliation and role a room's presence gives its occupant.
fn standing(presence: &Presence) -> Option<(Affiliation, Role)> {
    let user = presence
        .payloads
        .iter()
        .find_map(|p| MucUser::try_from(p.clone()).ok())?;
    let item = user.items.into_iter().next()?;
    Some((item.affiliation, item.role))
}

/// `user` sets `member`'s power level in the portal to `level`.
async fn set_level(user: &UserClient, room: &str, member: &str, level: i64) {
    let mut content = power_levels(user, room).await;
    content["users"][member] = json!(level);
    user.send_state(room, "m.room.power_levels", "", content)
        .await;
}

/// Waits until alice sees bob's occupant with `affiliation` and `role`.
async fn wait_standing(
    alice: &mut XmppClient,
    occupant: &str,
    affiliation: Affiliation,
    role: Role,
) {
    let what = format!("bob as {affiliation:?} and {role:?}");
    let wanted = (affiliation, role);
    alice
        .expect_presence(&what, |p| {
            p.from.as_ref().is_some_and(|f| f.to_string() == occupant)
                && standing(p).as_ref() == Some(&wanted)
        })
        .await;
}

#[tokio::test]
async fn power_levels_become_standing_where_the_bridge_owns_the_room() {
    let server = Prosody::start(&["alice"]).await;
    let setup = start(&server).await;
    let room = format!("made@{MUC}");
    let alias = format!("#xmpp_made_{MUC}:localhost");

    // bob's join makes the room: the bot creates it, so it owns it.
    let bob = setup.synapse.register_user("bob", "password-1234").await;
    let portal = bob.join(&alias).await;
    let carol = setup.synapse.register_user("carol", "password-1234").await;
    carol.join(&alias).await;
    let mut alice = XmppClient::connect(&server, "alice").await;
    let bob_occupant = format!("{room}/bob");
    alice.join(&room, "alice").await;

    // carol runs the portal: the bot gives her the power to (its own write, not read back).
    bot_sets_level(&setup, &bob, &portal, "@carol:localhost", 100).await;
    let first_own = power_levels(&bob, &portal).await;
    assert_eq!(first_own["users"]["@carol:localhost"], 100);

    // Each level, and the presences in which alice sees bob's standing change (lowering an
    // admin to a moderator makes him a member first).
    let steps = [
        (75, &[(Affiliation::Admin, Role::Moderator)][..]),
        (
            50,
            &[
                (Affiliation::Member, Role::Participant),
                (Affiliation::Member, Role::Moderator),
            ],
        ),
        (0, &[(Affiliation::Member, Role::Participant)]),
        (90, &[(Affiliation::Owner, Role::Moderator)]),
    ];
    for (level, seen) in steps {
        set_level(&carol, &portal, "@bob:localhost", level).await;
        for (affiliation, role) in seen {
            wait_standing(&mut alice, &bob_occupant, affiliation.clone(), role.clone()).await;
        }
    }

    // Nothing came back: after a message through the room, the last power levels are still
    // carol's, and the bot wrote none since she began.
    alice
        .say(MessageType::Groupchat, &room, "after", "all done")
        .await;
    // The bot owns the room, so it sees real JIDs: alice's ghost is her JID's.
    let alice_ghost = "@xmpp_alice=40localhost:localhost";
    bob.wait_for_event(&portal, WAIT, message_from(alice_ghost, "all done"))
        .await;
    let events = bob.messages(&portal).await;
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "m.room.power_levels")
        .collect();
    let carols = changes
        .iter()
        .position(|e| e["sender"] == "@carol:localhost")
        .unwrap();
    let since: Vec<&&Value> = changes[carols..].iter().collect();
    assert!(
        since.iter().all(|e| e["sender"] == "@carol:localhost"),
        "the bridge wrote power levels back: {since:#?}"
    );
    assert_eq!(since.len(), 4, "{since:#?}");
    assert_eq!(
        power_levels(&bob, &portal).await["users"]["@bob:localhost"],
        90
    );
}
