//! The IRC connection against a real ngircd: registration, channels, messages both ways,
//! nick collisions, flood-controlled multi-line sends, and recovery after the server restarts.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/ngircd.rs"]
mod ngircd;
#[allow(dead_code)]
#[path = "support/raw.rs"]
mod raw;

use std::time::Duration;

use ngircd::{Gate, Ngircd};
use raw::{RawClient, WAIT};
use tokio::sync::mpsc::UnboundedReceiver;
use trestle_irc::irc::connection::{Client, Config, Event, Kind};

fn config(port: u16, nick: &str) -> Config {
    let mut config = Config::new("127.0.0.1", port, nick);
    config.flood_burst = 10;
    config.flood_rate = 10.0;
    config.reconnect_min = Duration::from_millis(100);
    config.reconnect_max = Duration::from_millis(800);
    config
}

async fn next_event(
    events: &mut UnboundedReceiver<Event>,
    mut matches: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no matching event in time")
            .expect("the connection ended");
        if matches(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn messages_flow_both_ways_and_nicks_collide_cleanly() {
    let server = Ngircd::start().await;
    let mut alice = RawClient::connect(server.port, "alice").await;
    alice.join("#test").await;

    // `alice` is taken, so the bridge's connection registers under another nick.
    let (client, mut events) = Client::spawn(config(server.port, "alice"));
    let nick = client.registered().await;
    assert_eq!(nick, "alice_");
    client.join("#test");
    next_event(
        &mut events,
        |e| matches!(e, Event::Join { nick: n, channel, .. } if *n == nick && channel == "#test"),
    )
    .await;
    let names = next_event(&mut events, |e| matches!(e, Event::Names { .. })).await;
    let Event::Names {
        nicks, prefixes, ..
    } = names
    else {
        unreachable!()
    };
    assert!(
        nicks.contains(&"alice".to_owned()) && nicks.contains(&nick),
        "{nicks:?}"
    );
    // Prefixes become modes: alice opened the channel, so she is its operator.
    let modes: Vec<(&str, &str)> = nicks
        .iter()
        .map(String::as_str)
        .zip(prefixes.iter().map(String::as_str))
        .collect();
    assert!(modes.contains(&("alice", "o")), "{modes:?}");
    assert!(modes.contains(&(nick.as_str(), "")), "{modes:?}");
    alice
        .expect(|l| l.command == "JOIN" && l.nick == nick)
        .await;

    // IRC to the connection: message, action, notice, with formatting kept as codes.
    alice.privmsg("#test", "hello \x02there\x02").await;
    alice.send("PRIVMSG #test :\x01ACTION waves\x01").await;
    alice.send("NOTICE #test :a notice").await;
    alice.send("PRIVMSG #test :\x01VERSION\x01").await;
    alice.privmsg(&nick, "just you").await;
    for (kind, text, target) in [
        (Kind::Privmsg, "hello \x02there\x02", "#test"),
        (Kind::Action, "waves", "#test"),
        (Kind::Notice, "a notice", "#test"),
        (Kind::Privmsg, "just you", nick.as_str()),
    ] {
        let event = next_event(&mut events, |e| matches!(e, Event::Message { .. })).await;
        assert_eq!(
            event,
            Event::Message {
                from: "alice".into(),
                target: target.into(),
                kind,
                text: text.into(),
                time: None
            }
        );
    }

    // The connection to IRC: a 20-line message arrives whole and in order, then an action
    // and a line too long for one IRC message.
    let lines: Vec<String> = (1..=20).map(|i| format!("line {i} of twenty")).collect();
    client.send("#test", Kind::Privmsg, &lines.join("\n"));
    for expected in &lines {
        let got = alice.expect_privmsg("#test").await;
        assert_eq!(
            (got.nick.as_str(), got.param(1)),
            (nick.as_str(), expected.as_str())
        );
    }
    client.send("#test", Kind::Action, "dances");
    assert_eq!(
        alice.expect_privmsg("#test").await.param(1),
        "\x01ACTION dances\x01"
    );
    let long: String = (0..150)
        .map(|i| format!("w{i} "))
        .collect::<String>()
        .trim_end()
        .to_owned();
    client.send("#test", Kind::Privmsg, &long);
    let mut received: Vec<String> = Vec::new();
    while received.iter().map(|l| l.len() + 1).sum::<usize>() <= long.len() {
        let line = alice.expect_privmsg("#test").await;
        assert!(
            line.raw.len() + 2 <= 512,
            "{} bytes: {}",
            line.raw.len() + 2,
            line.raw
        );
        received.push(line.param(1).to_owned());
    }
    assert!(received.len() >= 2, "{received:?}");
    assert_eq!(
        received.join(" "),
        long,
        "a long line arrives in pieces with nothing lost"
    );

    // Membership and nick events.
    alice.send("TOPIC #test :new topic").await;
    next_event(&mut events, |e| {
        *e == Event::Topic {
            channel: "#test".into(),
            topic: "new topic".into(),
            by: Some("alice".into()),
        }
    })
    .await;
    alice.send("NICK alicia").await;
    next_event(&mut events, |e| {
        *e == Event::Nick {
            old: "alice".into(),
            new: "alicia".into(),
        }
    })
    .await;
    client.set_nick("bridgey");
    next_event(&mut events, |e| {
        *e == Event::Nick {
            old: nick.clone(),
            new: "bridgey".into(),
        }
    })
    .await;
    assert_eq!(client.state().nick, "bridgey");
    alice.send("PART #test :bye").await;
    next_event(&mut events, |e| {
        *e == Event::Part {
            nick: "alicia".into(),
            channel: "#test".into(),
            reason: "bye".into(),
        }
    })
    .await;
    alice.join("#test").await;
    next_event(
        &mut events,
        |e| matches!(e, Event::Join { nick, .. } if nick == "alicia"),
    )
    .await;
    alice.send("QUIT :gone").await;
    next_event(&mut events, |e| matches!(e, Event::Quit { nick, reason } if nick == "alicia" && reason.contains("gone"))).await;
    client.quit("done");
}

#[tokio::test]
async fn recovers_after_the_server_restarts_without_losing_messages() {
    let mut server = Ngircd::start().await;
    let gate = Gate::new(server.port).await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#ops").await;

    let (client, mut events) = Client::spawn(config(gate.port, "bridge"));
    client.registered().await;
    client.join("#ops");
    bob.expect(|l| l.command == "JOIN" && l.nick == "bridge")
        .await;
    client.send("#ops", Kind::Privmsg, "before");
    assert_eq!(bob.expect_privmsg("#ops").await.param(1), "before");

    // The server dies; the bridge is held off until the test's own client is back.
    gate.set_open(false);
    server.kill();
    next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(!client.state().registered);
    client.send("#ops", Kind::Privmsg, "during one\nduring two");
    server.restart().await;
    let mut bob = RawClient::connect(server.port, "bob").await;
    bob.join("#ops").await;
    gate.set_open(true);

    // It reconnects by itself, rejoins, and what was said meanwhile arrives, in order.
    next_event(&mut events, |e| matches!(e, Event::Registered { .. })).await;
    bob.expect(|l| l.command == "JOIN" && l.nick == "bridge")
        .await;
    assert_eq!(bob.expect_privmsg("#ops").await.param(1), "during one");
    assert_eq!(bob.expect_privmsg("#ops").await.param(1), "during two");
    assert!(client.state().sessions >= 2);
    client.send("#ops", Kind::Privmsg, "after");
    assert_eq!(bob.expect_privmsg("#ops").await.param(1), "after");
    bob.privmsg("#ops", "welcome back").await;
    next_event(
        &mut events,
        |e| matches!(e, Event::Message { text, .. } if text == "welcome back"),
    )
    .await;
    client.quit("done");
}
