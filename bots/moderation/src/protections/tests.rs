use serde_json::json;

use super::*;

fn text(body: &str) -> Message<'_> {
    Message {
        body,
        ..Message::default()
    }
}

fn obj(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

#[test]
fn settings_layer_defaults_rooms_and_overrides() {
    let all = obj(json!({"enabled": true, "max_messages": 3}));
    let room = obj(json!({"max_messages": 5}));
    let flood: Flood = effective(&[&all, &room]).unwrap();
    assert!(flood.enabled);
    assert_eq!(flood.max_messages, 5);
    assert_eq!(flood.seconds, 10, "a default");
    let bad = obj(json!({"max_messages": "many"}));
    assert!(effective::<Flood>(&[&bad]).is_err());
    let unknown = obj(json!({"max_messagse": 3}));
    assert!(validate(Flood::NAME, &[&unknown]).is_err());
    assert!(validate("nope", &[]).is_err());
}

#[test]
fn set_key_reads_numbers_lists_and_refuses_bad_values() {
    let mut settings = Map::new();
    set_key(
        Flood::NAME,
        &[],
        &mut settings,
        "max_messages",
        parse_value("4"),
    )
    .unwrap();
    assert_eq!(settings["max_messages"], 4);
    let mut words = Map::new();
    set_key(
        WordFilter::NAME,
        &[],
        &mut words,
        "words",
        parse_value("spam, scam"),
    )
    .unwrap();
    assert_eq!(words["words"], json!(["spam", "scam"]));
    let error = set_key(
        Flood::NAME,
        &[],
        &mut settings,
        "seconds",
        parse_value("soon"),
    );
    assert!(error.is_err());
    assert_eq!(settings.get("seconds"), None, "a refused value is not kept");
    let error = set_key(
        WordFilter::NAME,
        &[],
        &mut words,
        "patterns",
        parse_value("(unclosed"),
    );
    assert!(error.unwrap_err().contains("(unclosed"));
}

#[test]
fn the_word_filter_matches_whole_words_and_patterns() {
    let filter = WordFilter {
        enabled: true,
        words: vec!["scam".into()],
        patterns: vec![r"free\s+crypto".into()],
        kick: false,
    };
    assert!(filtered(&filter, "this is a SCAM!").is_some());
    assert!(filtered(&filter, "scam").is_some());
    assert!(filtered(&filter, "scampi for dinner").is_none());
    assert_eq!(
        filtered(&filter, "get free   crypto now").as_deref(),
        Some(r"pattern `free\s+crypto`")
    );
    assert!(filtered(&filter, "hello").is_none());
}

#[test]
fn flood_fires_above_the_limit_within_the_window() {
    let mut config = RoomProtections {
        flood: Flood {
            enabled: true,
            max_messages: 3,
            seconds: 10,
            ban: false,
        },
        ..RoomProtections::default()
    };
    let mut tracker = Tracker::default();
    for t in 0..3 {
        assert!(
            tracker
                .message("!r", "@u", t * 1000, &text("hi"), &config)
                .is_empty()
        );
    }
    // Spread out, no flood: the window forgets the old ones.
    assert!(
        tracker
            .message("!r", "@u", 20_000, &text("hi"), &config)
            .is_empty()
    );
    for t in 0..2 {
        assert!(
            tracker
                .message("!r", "@u", 20_100 + t, &text("hi"), &config)
                .is_empty()
        );
    }
    let verdicts = tracker.message("!r", "@u", 20_200, &text("hi"), &config);
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].protection, Flood::NAME);
    assert!(verdicts[0].kick && !verdicts[0].ban && !verdicts[0].redact);
    // Another user, another room: counted apart.
    assert!(
        tracker
            .message("!r", "@v", 20_300, &text("hi"), &config)
            .is_empty()
    );
    assert!(
        tracker
            .message("!s", "@u", 20_300, &text("hi"), &config)
            .is_empty()
    );
    // Off: never fires.
    config.flood.enabled = false;
    for t in 0..10 {
        assert!(
            tracker
                .message("!r", "@w", t, &text("hi"), &config)
                .is_empty()
        );
    }
}

#[test]
fn mention_spam_counts_distinct_users_from_mentions_and_text() {
    let mentioned = vec!["@a:hs".to_owned(), "@b:hs".to_owned()];
    let message = Message {
        body: "hey @a:hs @c:hs @c:hs",
        formatted_body: Some(r#"<a href="https://matrix.to/#/@d%3Ahs">d</a>"#),
        mentioned: &mentioned,
    };
    assert_eq!(mentions(&message), 4);
    let mut config = RoomProtections {
        mention_spam: MentionSpam {
            enabled: true,
            max_mentions: 3,
            kick: false,
        },
        ..RoomProtections::default()
    };
    let verdicts = Tracker::default().message("!r", "@u", 0, &message, &config);
    assert_eq!(verdicts.len(), 1);
    assert!(verdicts[0].redact && !verdicts[0].kick);
    config.mention_spam.max_mentions = 4;
    assert!(
        Tracker::default()
            .message("!r", "@u", 0, &message, &config)
            .is_empty()
    );
}

#[test]
fn link_spam_looks_only_at_a_new_users_first_message() {
    let config = RoomProtections {
        link_spam: LinkSpam {
            enabled: true,
            new_user_seconds: 60,
            kick: true,
        },
        ..RoomProtections::default()
    };
    let link = text("buy at https://spam.example/x");
    let mut tracker = Tracker::default();
    // Never seen joining: not new.
    assert!(tracker.message("!r", "@old", 0, &link, &config).is_empty());
    // First message with a link, soon after the join.
    tracker.joined("!r", "@new", 0, &JoinFlood::default());
    let verdicts = tracker.message("!r", "@new", 5_000, &link, &config);
    assert_eq!(verdicts[0].protection, LinkSpam::NAME);
    assert!(verdicts[0].redact && verdicts[0].kick);
    // A second message is not the first.
    assert!(
        tracker
            .message("!r", "@new", 6_000, &link, &config)
            .is_empty()
    );
    // A first message without a link, then one with: fine.
    tracker.joined("!r", "@nice", 0, &JoinFlood::default());
    assert!(
        tracker
            .message("!r", "@nice", 1_000, &text("hello"), &config)
            .is_empty()
    );
    assert!(
        tracker
            .message("!r", "@nice", 2_000, &link, &config)
            .is_empty()
    );
    // Joined too long ago.
    tracker.joined("!r", "@slow", 0, &JoinFlood::default());
    assert!(
        tracker
            .message("!r", "@slow", 61_000, &link, &config)
            .is_empty()
    );
    assert!(has_link(&text("see www.example.org")));
    assert!(!has_link(&text("no links here: http")));
}

#[test]
fn join_flood_locks_the_room_once_over_the_limit() {
    let config = JoinFlood {
        enabled: true,
        max_joins: 3,
        seconds: 10,
    };
    let mut tracker = Tracker::default();
    for (i, user) in ["@a", "@b", "@c"].iter().enumerate() {
        assert_eq!(tracker.joined("!r", user, i as i64, &config), None);
    }
    let verdict = tracker.joined("!r", "@d", 4, &config).unwrap();
    assert!(verdict.lock_room);
    assert_eq!(verdict.protection, JoinFlood::NAME);
    // Joins long after do not count with the old ones.
    let mut tracker = Tracker::default();
    for t in 0..10 {
        assert_eq!(tracker.joined("!r", "@x", t * 5_000, &config), None);
    }
}

#[test]
fn invite_flood_counts_one_inviter_across_rooms_and_withdraws_the_window() {
    let mut tracker = Tracker::default();
    let config = InviteFlood {
        enabled: true,
        max_invites: 2,
        seconds: 10,
        ban: false,
    };
    assert!(tracker.invited("!a", "@s", "@x", 0, &config).is_none());
    // Outside the window: forgotten.
    assert!(tracker.invited("!a", "@s", "@y", 20_000, &config).is_none());
    assert!(tracker.invited("!b", "@s", "@z", 21_000, &config).is_none());
    assert!(
        tracker.invited("!a", "@t", "@z", 21_500, &config).is_none(),
        "another inviter counts apart"
    );
    let verdict = tracker.invited("!b", "@s", "@w", 22_000, &config).unwrap();
    assert_eq!(verdict.protection, InviteFlood::NAME);
    assert!(verdict.kick && !verdict.ban);
    assert_eq!(verdict.detail, "3 invites in 2 rooms within 10 s");
    assert_eq!(
        verdict.withdraw,
        vec![
            ("!a".to_owned(), "@y".to_owned()),
            ("!b".to_owned(), "@z".to_owned()),
            ("!b".to_owned(), "@w".to_owned())
        ]
    );
    let off = InviteFlood::default();
    for i in 0..10 {
        assert!(
            tracker
                .invited("!a", "@u", &format!("@{i}"), i, &off)
                .is_none()
        );
    }
}
