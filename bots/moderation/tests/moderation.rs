//! The moderation bot against a real Synapse, with several real users: policy lists in other
//! rooms ban and unban users in protected rooms and set the server ACL, commands are refused
//! to people without power, protections act on floods, banned words, mention spam and link
//! spam — and nothing happens in rooms the bot does not protect.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

mod support {
    #[path = "matrix.rs"]
    pub mod matrix;
}

use serde_json::{Value, json};
use support::matrix::*;
use trestle_moderation::{PLUGIN, Settings};
use trestle_policy::PolicyLists;
use trestle_tests::appservice::{Harness, WAIT};

#[tokio::test]
async fn policy_lists_ban_unban_and_acl_only_in_protected_rooms() {
    let lists = PolicyLists::new(["#bans:localhost"]);
    let h = harness(
        Settings {
            admins: vec!["@admin:localhost".into()],
            management_room: Some("#moderators:localhost".into()),
            ..Settings::default()
        },
        &lists,
    )
    .await;
    let synapse = &h.synapse;
    let admin = synapse.register_user("admin", "password-1234").await;
    let helper = synapse.register_user("helper", "password-1234").await;
    let spammer = synapse.register_user("spammer", "password-1234").await;
    let alice = synapse.register_user("alice", "password-1234").await;

    // An invite from someone who is not an admin does not make a management room.
    let stray = helper
        .create_room(json!({"name": "not mine", "preset": "private_chat"}))
        .await;
    helper.invite(&stray, BOT).await;

    // The configured management room, by alias: the bot joins it when invited.
    let management = admin
        .create_room(json!({"name": "moderators", "preset": "private_chat", "room_alias_name": "moderators"}))
        .await;
    admin.invite(&management, BOT).await;
    admin
        .wait_for_event(&management, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == BOT
                && e["content"]["membership"] == "join"
        })
        .await;
    admin.invite(&management, &helper.user_id).await;
    helper.join(&management).await;
    let protected = protected_room(&admin, &management).await;
    spammer.join(&protected).await;
    alice.join(&protected).await;

    // The list lives in another room, which the bot follows but does not protect; the spammer
    // is in it too.
    let list = admin
        .create_room(json!({
            "name": "ban list",
            "preset": "public_chat",
            "room_alias_name": "bans",
            "room_version": "12",
            "power_level_content_override": {"users": {BOT: 50}},
        }))
        .await;
    spammer.join(&list).await;
    admin.invite(&list, BOT).await;
    command(
        &admin,
        &management,
        &format!("!lists watch {list}"),
        "Following",
    )
    .await;

    // A user rule with a glob bans the spammer from the protected room.
    admin
        .send_state(
            &list,
            "m.policy.rule.user",
            "rule-1",
            json!({"entity": "@spam*:localhost", "recommendation": "m.ban", "reason": "spamming"}),
        )
        .await;
    let ban = bot_sets_membership(&admin, &protected, &spammer.user_id, "ban").await;
    assert_eq!(ban["content"]["reason"], "spamming");
    bot_says(&admin, &management, "banned @spammer:localhost").await;
    // A user who joins later and matches is banned on joining.
    let spambot = synapse.register_user("spambot", "password-1234").await;
    spambot.join(&protected).await;
    bot_sets_membership(&admin, &protected, &spambot.user_id, "ban").await;
    // The check any plugin can make sees the same rule.
    check_becomes(&h, &lists, "@spambot:localhost", true).await;
    check_becomes(&h, &lists, "@alice:localhost", false).await;

    // Removing the rule lifts both bans.
    admin
        .send_state(&list, "m.policy.rule.user", "rule-1", json!({}))
        .await;
    bot_sets_membership(&admin, &protected, &spammer.user_id, "leave").await;
    bot_sets_membership(&admin, &protected, &spambot.user_id, "leave").await;
    bot_says(&admin, &management, "unbanned @spambot:localhost").await;
    check_becomes(&h, &lists, "@spambot:localhost", false).await;

    // Redacting a rule removes it too.
    spammer.join(&protected).await;
    let rule = admin
        .send_state(
            &list,
            "m.policy.rule.user",
            "rule-4",
            json!({"entity": "@spammer:localhost", "recommendation": "m.ban", "reason": "once more"}),
        )
        .await;
    bot_sets_membership(&admin, &protected, &spammer.user_id, "ban").await;
    admin
        .call_ok(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/redact-rule-4",
                trestle_tests::synapse::encode(&list),
                trestle_tests::synapse::encode(&rule)
            ),
            Some(&json!({})),
        )
        .await;
    admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["sender"] == BOT
                && e["state_key"] == spammer.user_id.as_str()
                && e["content"]["membership"] == "leave"
                && e["unsigned"]["prev_content"]["reason"] == "once more"
        })
        .await;

    // A server rule becomes the protected room's server ACL, and goes when the rule goes.
    admin
        .send_state(
            &list,
            "m.policy.rule.server",
            "rule-2",
            json!({"entity": "*.evil.example", "recommendation": "m.ban", "reason": "abuse"}),
        )
        .await;
    let acl = admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.server_acl" && e["content"]["deny"] == json!(["*.evil.example"])
        })
        .await;
    assert_eq!(acl["sender"], BOT);
    assert_eq!(acl["content"]["allow"], json!(["*"]));
    check_becomes(&h, &lists, "@anyone:matrix.evil.example", true).await;
    let server = lists
        .check_server(&h.app, "matrix.evil.example")
        .await
        .unwrap();
    assert_eq!(server.unwrap().reason, "abuse");
    assert!(
        lists
            .check_room(&h.app, "#fine:localhost")
            .await
            .unwrap()
            .is_none()
    );
    admin
        .send_state(&list, "m.policy.rule.server", "rule-2", json!({}))
        .await;
    admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.server_acl" && e["content"]["deny"] == json!([])
        })
        .await;

    // Someone without power in the management room is refused, with the reason.
    let refused = command(
        &helper,
        &management,
        "!ban @alice:localhost rude",
        "refused",
    )
    .await;
    assert!(
        refused["content"]["body"]
            .as_str()
            .unwrap()
            .contains("power level 50"),
        "{refused}"
    );

    // An admin's ban goes to the bot's own list and applies; unban lifts it.
    command(
        &admin,
        &management,
        "!ban @alice:localhost being rude",
        "Added a user ban rule",
    )
    .await;
    let ban = bot_sets_membership(&admin, &protected, &alice.user_id, "ban").await;
    assert_eq!(ban["content"]["reason"], "being rude");
    command(
        &admin,
        &management,
        "!unban @alice:localhost",
        "Removed the rule",
    )
    .await;
    bot_sets_membership(&admin, &protected, &alice.user_id, "leave").await;
    let status = command(&admin, &management, "!status", "Protected rooms (1)").await;
    let status = status["content"]["body"].as_str().unwrap();
    assert!(status.contains(&list), "{status}");
    assert!(status.contains("(own)"), "{status}");
    command(
        &admin,
        &management,
        "!frobnicate",
        "Unknown command frobnicate",
    )
    .await;
    command(&admin, &management, "!rooms", "usage: !rooms").await;

    // Rules can be written to, and removed from, a followed list named in the command.
    let raider = synapse.register_user("raider", "password-1234").await;
    raider.join(&protected).await;
    command(
        &admin,
        &management,
        "!ban #bans:localhost @raid*:localhost raid",
        "Added a user ban rule for @raid*:localhost to",
    )
    .await;
    let written = admin
        .wait_for_event(&list, WAIT, |e| {
            e["type"] == "m.policy.rule.user" && e["content"]["entity"] == "@raid*:localhost"
        })
        .await;
    assert_eq!(written["sender"], BOT);
    assert_eq!(written["content"]["recommendation"], "m.ban");
    bot_sets_membership(&admin, &protected, &raider.user_id, "ban").await;
    let answer = command(
        &admin,
        &management,
        "!unban @raid*:localhost",
        "name the list",
    )
    .await;
    assert!(answer["content"]["body"].as_str().unwrap().contains(&list));
    command(
        &admin,
        &management,
        &format!("!unban {list} @raid*:localhost"),
        "Removed the rule for @raid*:localhost",
    )
    .await;
    bot_sets_membership(&admin, &protected, &raider.user_id, "leave").await;

    // Nothing happened in the rooms the bot does not protect: the spammer is still in the
    // list room, which has no ACL, and the stray invite was never accepted.
    h.app.idle().await;
    assert!(admin.joined_members(&list).await.contains(&spammer.user_id));
    let (status, _) = admin
        .call(
            reqwest::Method::GET,
            &state_path(&list, "m.room.server_acl"),
            None,
        )
        .await;
    assert_eq!(status, 404, "the list room got no server ACL");
    assert!(
        !helper
            .joined_members(&stray)
            .await
            .contains(&BOT.to_owned())
    );
    let touched = admin
        .messages(&list)
        .await
        .into_iter()
        .filter(|e| {
            e["sender"] == BOT && e["type"] != "m.room.member" && e["type"] != "m.policy.rule.user"
        })
        .count();
    assert_eq!(
        touched, 0,
        "the bot sent nothing but rules to the list room"
    );

    // What the bot knows survives a restart: a rule removed while it was down lifts the ban
    // it made before, from its stored rooms, lists, rules and bans.
    alice.join(&protected).await;
    admin
        .send_state(
            &list,
            "m.policy.rule.user",
            "rule-3",
            json!({"entity": "@alice:localhost", "recommendation": "m.ban", "reason": "again"}),
        )
        .await;
    bot_sets_membership(&admin, &protected, &alice.user_id, "ban").await;
    h.app.idle().await;
    let mut h = h;
    h.stop().await;
    admin
        .send_state(&list, "m.policy.rule.user", "rule-3", json!({}))
        .await;
    h.restart(trestle_moderation::router(Settings {
        admins: vec!["@admin:localhost".into()],
        management_room: Some("#moderators:localhost".into()),
        ..Settings::default()
    }))
    .await;
    let unbanned = admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["sender"] == BOT
                && e["state_key"] == alice.user_id.as_str()
                && e["content"]["membership"] == "leave"
                && e["unsigned"]["prev_content"]["reason"] == "again"
        })
        .await;
    assert_eq!(unbanned["content"]["membership"], "leave");
    h.stop().await;
}

#[tokio::test]
async fn protections_redact_kick_and_report_in_protected_rooms_only() {
    // Default settings: no admins, so the first local user to invite the bot claims it.
    let h = Harness::start(
        PLUGIN.generate_registration(None, "localhost"),
        PLUGIN.router().unwrap(),
    )
    .await;
    let synapse = &h.synapse;
    let admin = synapse.register_user("admin", "password-1234").await;
    let management = management_room(&admin).await;
    let protected = protected_room(&admin, &management).await;

    // Each answer shows the protection's stored settings after the change.
    for (setup, answer) in [
        (
            "!protections enable flood",
            r#"flood in every protected room: {"enabled":true}"#,
        ),
        (
            "!protections set flood max_messages 3",
            r#"{"enabled":true,"max_messages":3}"#,
        ),
        (
            "!protections enable word-filter",
            r#"word-filter in every protected room: {"enabled":true}"#,
        ),
        // The value forms docs/moderation.md shows: a JSON list, typed with its quotes and a
        // space, and quoted text split at commas.
        (
            r#"!protections set word-filter words ["bad word", "worst"]"#,
            r#"{"enabled":true,"words":["bad word","worst"]}"#,
        ),
        (
            "!protections set word-filter words \"badword, worse\"",
            r#"{"enabled":true,"words":["badword","worse"]}"#,
        ),
        (
            "!protections enable mention-spam",
            r#"mention-spam in every protected room: {"enabled":true}"#,
        ),
        (
            "!protections set mention-spam max_mentions 2",
            r#"{"enabled":true,"max_mentions":2}"#,
        ),
    ] {
        command(&admin, &management, setup, answer).await;
    }
    command(
        &admin,
        &management,
        &format!("!protections enable link-spam {protected}"),
        &format!("link-spam in {protected}"),
    )
    .await;
    command(
        &admin,
        &management,
        "!protections set flood max_messages many",
        "Not changed",
    )
    .await;
    // A room where the bot may not act is protected with a warning.
    let weak = admin
        .create_room(json!({"name": "weak", "preset": "public_chat"}))
        .await;
    admin.invite(&weak, BOT).await;
    let answer = command(
        &admin,
        &management,
        &format!("!rooms add {weak}"),
        &format!("Protecting {weak}"),
    )
    .await;
    assert!(
        answer["content"]["body"]
            .as_str()
            .unwrap()
            .contains("I lack the power to ban, kick, redact"),
        "{answer}"
    );
    command(
        &admin,
        &management,
        &format!("!rooms remove {weak}"),
        "no longer protected",
    )
    .await;
    let help = command(&admin, &management, "!help", "Commands").await;
    let help = help["content"]["body"].as_str().unwrap();
    for part in ["!ban [list] <entity> [reason]", "!protections", "link-spam"] {
        assert!(help.contains(part), "{part} in {help}");
    }
    let list = command(
        &admin,
        &management,
        "!protections list",
        "Protections for every",
    )
    .await;
    assert!(
        list["content"]["body"]
            .as_str()
            .unwrap()
            .contains("\"max_messages\":3"),
        "{list}"
    );

    let chatty = synapse.register_user("chatty", "password-1234").await;
    chatty.join(&protected).await;
    chatty.send_text(&protected, "hello everyone").await;
    let bad = chatty.send_text(&protected, "what a BADWORD!").await;
    let redacted = |id: String| {
        move |e: &Value| {
            e["event_id"] == id.as_str() && e["unsigned"]["redacted_because"].is_object()
        }
    };
    admin
        .wait_for_event(&protected, WAIT, redacted(bad.clone()))
        .await;
    let report = bot_says(&admin, &management, "word-filter fired").await;
    let report = report["content"]["body"].as_str().unwrap();
    for part in [
        protected.as_str(),
        chatty.user_id.as_str(),
        bad.as_str(),
        "badword",
    ] {
        assert!(report.contains(part), "{part} in {report}");
    }

    let pings = chatty
        .send_text(
            &protected,
            "@a:localhost @b:localhost @c:localhost look at this",
        )
        .await;
    admin
        .wait_for_event(&protected, WAIT, redacted(pings))
        .await;
    bot_says(&admin, &management, "mention-spam fired").await;

    let linker = synapse.register_user("linker", "password-1234").await;
    linker.join(&protected).await;
    let link = linker
        .send_text(&protected, "cheap stuff at https://spam.example/buy")
        .await;
    admin.wait_for_event(&protected, WAIT, redacted(link)).await;
    bot_sets_membership(&admin, &protected, &linker.user_id, "leave").await;
    bot_says(&admin, &management, "link-spam fired").await;

    let flooder = synapse.register_user("flooder", "password-1234").await;
    flooder.join(&protected).await;
    for i in 0..5 {
        flooder.send_text(&protected, &format!("flood {i}")).await;
    }
    bot_sets_membership(&admin, &protected, &flooder.user_id, "leave").await;
    let report = bot_says(&admin, &management, "flood fired").await;
    assert!(
        report["content"]["body"]
            .as_str()
            .unwrap()
            .contains(&flooder.user_id)
    );

    // The same behaviour in a room the bot is in but does not protect (the management room)
    // does nothing.
    admin.invite(&management, &chatty.user_id).await;
    chatty.join(&management).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(chatty.send_text(&management, &format!("badword {i}")).await);
    }
    // A command from chatty, who has no power there, proves the bot read past those messages.
    command(&chatty, &management, "!status", "refused").await;
    h.app.idle().await;
    let timeline = admin.messages(&management).await;
    for id in &sent {
        let event = timeline
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .unwrap();
        assert!(
            event["unsigned"]["redacted_because"].is_null(),
            "not redacted: {event}"
        );
    }
    assert!(
        admin
            .joined_members(&management)
            .await
            .contains(&chatty.user_id)
    );

    // A moderator's kick and redact commands act across protected rooms.
    let talker = synapse.register_user("talker", "password-1234").await;
    talker.join(&protected).await;
    let said = talker.send_text(&protected, "a normal message").await;
    command(
        &admin,
        &management,
        &format!("!redact {} 10", talker.user_id),
        "Redacted 1 events",
    )
    .await;
    admin.wait_for_event(&protected, WAIT, redacted(said)).await;
    command(
        &admin,
        &management,
        &format!("!kick {} bye", talker.user_id),
        "Kicked",
    )
    .await;
    bot_sets_membership(&admin, &protected, &talker.user_id, "leave").await;

    // A wave of joins (the four above, all within the last minute, and one more) closes the
    // room.
    command(
        &admin,
        &management,
        "!protections set join-flood max_joins 4",
        r#"join-flood in every protected room: {"max_joins":4}"#,
    )
    .await;
    command(
        &admin,
        &management,
        "!protections enable join-flood",
        r#"join-flood in every protected room: {"enabled":true,"max_joins":4}"#,
    )
    .await;
    let raider = synapse.register_user("raider", "password-1234").await;
    raider.join(&protected).await;
    let rules = admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "invite"
        })
        .await;
    assert_eq!(rules["sender"], BOT);
    bot_says(&admin, &management, "join-flood fired").await;
}
