//! Today's spam against a real Synapse: a hashed rule (MSC4205) bans the user whose ID it
//! hashes, a room rule makes the bot leave a protected room and refuse it, an invite from a
//! banned user is rejected, a takedown (MSC4204) bans and redacts — and each is lifted when
//! its rule goes.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

mod support {
    // Shared with the other test files, each of which uses only part of it.
    #[allow(dead_code)]
    #[path = "matrix.rs"]
    pub mod matrix;
}

use serde_json::json;
use support::matrix::*;
use trestle_policy::{PolicyLists, sha256_base64};
use trestle_tests::appservice::WAIT;

#[tokio::test]
async fn hashed_room_invite_and_takedown_rules_act_and_lift() {
    let lists = PolicyLists::new(["#spamlist:localhost"]);
    let (h, admin, management, protected) = admin_with_rooms(&lists).await;
    let synapse = &h.synapse;
    let hasher = synapse.register_user("hasher", "password-1234").await;
    let inviter = synapse.register_user("inviter", "password-1234").await;
    let taker = synapse.register_user("taker", "password-1234").await;
    hasher.join(&protected).await;
    let list = admin
        .create_room(json!({
            "name": "spam list",
            "preset": "public_chat",
            "room_alias_name": "spamlist",
            "room_version": "12",
        }))
        .await;
    admin.invite(&list, BOT).await;
    command(
        &admin,
        &management,
        &format!("!lists watch {list}"),
        "Following",
    )
    .await;

    // A rule that names its user by hash only bans the user whose ID hashes to it.
    let hash = sha256_base64("@hasher:localhost");
    admin
        .send_state(
            &list,
            "m.policy.rule.user",
            "hashed-1",
            json!({"hashes": {"sha256": hash}, "recommendation": "m.ban", "reason": "hashed spam"}),
        )
        .await;
    let ban = bot_sets_membership(&admin, &protected, &hasher.user_id, "ban").await;
    assert_eq!(ban["content"]["reason"], "hashed spam");
    bot_says(
        &admin,
        &management,
        &format!("banned @hasher:localhost from {protected}: rule sha256:{hash}"),
    )
    .await;
    check_becomes(&h, &lists, "@hasher:localhost", true).await;
    check_becomes(&h, &lists, "@inviter:localhost", false).await;
    admin
        .send_state(&list, "m.policy.rule.user", "hashed-1", json!({}))
        .await;
    bot_sets_membership(&admin, &protected, &hasher.user_id, "leave").await;
    bot_says(&admin, &management, "unbanned @hasher:localhost").await;
    check_becomes(&h, &lists, "@hasher:localhost", false).await;

    // An invite from a banned user is rejected and reported; once the rule goes, the same
    // user's invite stands and the room can be protected.
    admin
        .send_state(
            &list,
            "m.policy.rule.user",
            "inviter",
            json!({"entity": "@inviter:localhost", "recommendation": "m.ban", "reason": "invite spam"}),
        )
        .await;
    check_becomes(&h, &lists, "@inviter:localhost", true).await;
    let spam_room = inviter
        .create_room(json!({"name": "free crypto", "preset": "private_chat"}))
        .await;
    inviter.invite(&spam_room, BOT).await;
    bot_sets_membership(&inviter, &spam_room, BOT, "leave").await;
    bot_says(
        &admin,
        &management,
        &format!("invite to {spam_room} from @inviter:localhost: the inviter is banned"),
    )
    .await;
    admin
        .send_state(&list, "m.policy.rule.user", "inviter", json!({}))
        .await;
    check_becomes(&h, &lists, "@inviter:localhost", false).await;
    let fine_room = inviter
        .create_room(json!({
            "name": "a fine room",
            "preset": "private_chat",
            "power_level_content_override": {"users": {BOT: 100}},
        }))
        .await;
    inviter.invite(&fine_room, BOT).await;
    command(
        &admin,
        &management,
        &format!("!rooms add {fine_room}"),
        &format!("Protecting {fine_room}"),
    )
    .await;

    // A room rule: the bot leaves the protected room it bans, refuses to protect it and
    // rejects invites to it; when the rule goes, it may be protected again.
    let raided = protected_room(&admin, &management).await;
    admin
        .send_state(
            &list,
            "m.policy.rule.room",
            "raided",
            json!({"entity": raided, "recommendation": "m.ban", "reason": "raid room"}),
        )
        .await;
    bot_sets_membership(&admin, &raided, BOT, "leave").await;
    bot_says(
        &admin,
        &management,
        &format!("{raided} is banned by rule {raided}"),
    )
    .await;
    assert!(
        lists
            .check_room(&h.app, &raided)
            .await
            .unwrap()
            .is_some_and(|rule| rule.reason == "raid room")
    );
    command(
        &admin,
        &management,
        &format!("!rooms add {raided}"),
        "I will not protect it",
    )
    .await;
    admin.invite(&raided, BOT).await;
    bot_says(
        &admin,
        &management,
        &format!("invite to {raided} from @admin:localhost: the room is banned"),
    )
    .await;
    let status = command(&admin, &management, "!rooms list", "Protected rooms").await;
    assert!(
        !status["content"]["body"]
            .as_str()
            .unwrap()
            .contains(&raided),
        "{status}"
    );
    admin
        .send_state(&list, "m.policy.rule.room", "raided", json!({}))
        .await;
    bot_says(&admin, &management, "may be protected again").await;
    admin.invite(&raided, BOT).await;
    admin
        .send_text(&management, &format!("!rooms add {raided}"))
        .await;
    bot_says_again(&admin, &management, &format!("Protecting {raided}"), 2).await;

    // Mass invites: past max_invites within the window the inviter is kicked and their
    // pending invites withdrawn; an invite already accepted stays.
    let mass = synapse.register_user("mass", "password-1234").await;
    let early = synapse.register_user("early", "password-1234").await;
    mass.join(&protected).await;
    // Members without power may invite here.
    let mut levels = admin
        .call_ok(
            reqwest::Method::GET,
            &state_path(&protected, "m.room.power_levels"),
            None,
        )
        .await;
    levels["invite"] = json!(0);
    admin
        .send_state(&protected, "m.room.power_levels", "", levels)
        .await;
    command(
        &admin,
        &management,
        &format!("!protections enable invite-flood {protected}"),
        "invite-flood",
    )
    .await;
    command(
        &admin,
        &management,
        &format!("!protections set invite-flood max_invites 2 {protected}"),
        "max_invites",
    )
    .await;
    mass.invite(&protected, &early.user_id).await;
    early.join(&protected).await;
    let mut invited = Vec::new();
    for name in ["victim1", "victim2"] {
        let victim = synapse.register_user(name, "password-1234").await;
        mass.invite(&protected, &victim.user_id).await;
        invited.push(victim.user_id.clone());
    }
    bot_sets_membership(&admin, &protected, &mass.user_id, "leave").await;
    for victim in &invited {
        bot_sets_membership(&admin, &protected, victim, "leave").await;
    }
    bot_says(&admin, &management, "invite-flood fired in").await;
    let report = bot_says(&admin, &management, "withdrew 2 invites").await;
    assert!(
        report["content"]["body"]
            .as_str()
            .unwrap()
            .contains("3 invites in 1 rooms"),
        "{report}"
    );
    assert!(
        admin
            .joined_members(&protected)
            .await
            .contains(&early.user_id.to_string()),
        "an accepted invite stays"
    );

    // A takedown bans without repeating its reason in the room, and redacts the user's
    // messages; removing it lifts the ban.
    taker.join(&protected).await;
    let message = taker.send_text(&protected, "buy my stuff").await;
    admin
        .send_state(
            &list,
            "m.policy.rule.user",
            "takedown",
            json!({"entity": "@taker:localhost", "recommendation": "org.matrix.msc4204.takedown", "reason": "not for the room"}),
        )
        .await;
    let ban = bot_sets_membership(&admin, &protected, &taker.user_id, "ban").await;
    assert_eq!(ban["content"]["reason"], "taken down by a policy list");
    let redaction = admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.redaction"
                && e["sender"] == BOT
                && (e["redacts"] == message || e["content"]["redacts"] == message)
        })
        .await;
    assert_eq!(
        redaction["content"]["reason"],
        "taken down by a policy list"
    );
    bot_says(&admin, &management, "takedown: redacted 1 of their events").await;
    admin
        .send_state(&list, "m.policy.rule.user", "takedown", json!({}))
        .await;
    bot_sets_membership(&admin, &protected, &taker.user_id, "leave").await;
    bot_says(&admin, &management, "unbanned @taker:localhost").await;
}

/// Waits until the bot said `text` in `room` at least `times` times: for an answer the bot gave
/// before too.
async fn bot_says_again(
    user: &trestle_tests::synapse::UserClient,
    room: &str,
    text: &str,
    times: usize,
) {
    let started = std::time::Instant::now();
    loop {
        let said = user
            .messages(room)
            .await
            .iter()
            .filter(|e| {
                e["sender"] == BOT
                    && e["content"]["body"]
                        .as_str()
                        .is_some_and(|b| b.contains(text))
            })
            .count();
        if said >= times {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the bot said {text:?} {said} times, expected {times}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
