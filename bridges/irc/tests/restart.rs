//! A Matrix user with a login, across restarts of Trestle, end to end (a real Synapse, a real
//! ngircd, a plain IRC client): what she sends as Trestle comes back, while her connection is
//! being restored, goes out through that connection, in order, never relayed by the bot.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[path = "support/all.rs"]
mod support;

use std::collections::BTreeSet;

use support::{matrix::login, ngircd::Ngircd, raw::RawClient};
use trestle_irc::Settings;
use trestle_tests::appservice::Harness;

/// Restarts in a row. Before the kit waited for her connection, her first line was relayed
/// (and arrived after the next ones) in about one restart of three.
const CYCLES: usize = 6;

/// Relay on (the default), so a message sent before her connection is back would come from
/// the bot; connections only through `login`.
fn settings(port: u16) -> Settings {
    support::network::settings_without_auto_connect(port)
}

#[tokio::test]
async fn a_logged_in_user_speaks_through_her_own_connection_across_restarts() {
    let server = Ngircd::start().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#chat").await;
    let registration = trestle_irc::PLUGIN.generate_registration(None, "localhost");
    let router = trestle_irc::router(settings(server.port)).unwrap();
    let mut setup = Harness::start(registration, router).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let carol = setup.synapse.register_user("carol", "password-1234").await;
    let room = carol.join("#irc_test_chat:localhost").await;
    // More portals, of channels she is not in: restoring her connection looks for her in
    // each, so it takes a little longer, as on a bridge with many portals.
    let dave = setup.synapse.register_user("dave", "password-1234").await;
    for channel in ["one", "two", "three", "four", "five", "six"] {
        dave.join(&format!("#irc_test_{channel}:localhost")).await;
    }
    login(&carol, "carol_m", "Logged in as carol_m").await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "carol_m")
        .await;

    for cycle in 1..=CYCLES {
        setup.stop().await;
        // The stopped bridge's connections are gone before the next one starts: their nicks
        // are free again.
        let mut quit = BTreeSet::new();
        while quit.len() < 2 {
            quit.insert(bob.expect(|l| l.command == "QUIT").await.nick);
        }
        assert_eq!(quit, BTreeSet::from(["carol_m".into(), "trestle".into()]));
        let router = trestle_irc::router(settings(server.port)).unwrap();
        setup.restart(router).await;
        // Sent as it comes back, while her connection is being restored. (Sent while it is
        // down, they would come only after the homeserver's next retry, two seconds later.)
        let lines: Vec<String> = (1..=4)
            .map(|i| format!("restart {cycle}, line {i}"))
            .collect();
        for line in &lines {
            carol.send_text(&room, line).await;
        }
        for expected in &lines {
            let got = bob.expect_privmsg("#chat").await;
            assert_eq!(
                (got.nick.as_str(), got.param(1)),
                ("carol_m", expected.as_str()),
                "restart {cycle}: every line from her own nick, in order"
            );
        }
    }
    setup.stop().await;
}
