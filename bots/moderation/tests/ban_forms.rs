//! The forms of `!ban` against a real Synapse: `--hashed` writes a rule that names its user
//! by SHA-256 only (MSC4205) and replaces a plain rule of the same user, `--takedown` writes
//! an `org.matrix.msc4204.takedown` rule that bans and redacts; `!unban` removes either and
//! lifts what it did.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

mod support {
    // Shared with the other test files, each of which uses only part of it.
    #[allow(dead_code)]
    #[path = "matrix.rs"]
    pub mod matrix;
}

use serde_json::{Value, json};
use support::matrix::*;
use trestle_policy::{PolicyLists, sha256_base64};
use trestle_tests::{
    appservice::WAIT,
    synapse::{UserClient, encode},
};

/// The list a ban answer names: the room after " to ".
fn list_of(answer: &Value) -> String {
    let body = answer["content"]["body"].as_str().unwrap();
    let after = body.split(" to ").nth(1).unwrap();
    after.split(';').next().unwrap().to_owned()
}

/// The policy rule events in `list`'s current state.
async fn rules_in(admin: &UserClient, list: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/state", encode(list));
    let state = admin.call_ok(reqwest::Method::GET, &path, None).await;
    state
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("m.policy.rule."))
        })
        .cloned()
        .collect()
}

fn rule<'a>(rules: &'a [Value], state_key: &str) -> &'a Value {
    rules
        .iter()
        .find(|e| e["state_key"] == state_key)
        .unwrap_or_else(|| panic!("no rule {state_key} in {rules:#?}"))
}

#[tokio::test]
async fn ban_writes_hashed_rules_and_takedowns_and_unban_removes_them() {
    let lists = PolicyLists::new(["#bans:localhost"]);
    let (h, admin, management, protected) = admin_with_rooms(&lists).await;
    let synapse = &h.synapse;
    let spammer = synapse.register_user("spammer", "password-1234").await;
    let taker = synapse.register_user("taker", "password-1234").await;
    spammer.join(&protected).await;
    taker.join(&protected).await;

    // A plain ban first, then the same user hashed: the list stops naming them, and the ban
    // stands, owed to the hashed rule.
    let answer = command(
        &admin,
        &management,
        "!ban @spammer:localhost spam",
        "Added a user ban rule for @spammer:localhost",
    )
    .await;
    let list = list_of(&answer);
    bot_sets_membership(&admin, &protected, &spammer.user_id, "ban").await;
    admin.join(&list).await;
    let hash = sha256_base64("@spammer:localhost");
    let answer = command(
        &admin,
        &management,
        "!ban --hashed @spammer:localhost hashed spam",
        "Added a hashed user ban rule for @spammer:localhost",
    )
    .await;
    let body = answer["content"]["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("sha256:{hash}")) && body.contains("replaces the plain rule"),
        "{body}"
    );
    let rules = rules_in(&admin, &list).await;
    let hashed = rule(&rules, &format!("rule:sha256:{hash}"));
    assert_eq!(hashed["type"], "m.policy.rule.user");
    assert_eq!(
        hashed["content"],
        json!({"hashes": {"sha256": hash}, "recommendation": "m.ban", "reason": "hashed spam"})
    );
    assert_eq!(
        rule(&rules, "rule:@spammer:localhost")["content"],
        json!({})
    );
    // No rule in force names the user (the emptied plain rule's state key and history still
    // do: a room's past cannot be rewritten).
    let contents: Vec<&Value> = rules.iter().map(|e| &e["content"]).collect();
    assert!(
        !serde_json::to_string(&contents)
            .unwrap()
            .contains("spammer"),
        "the list names the user: {rules:#?}"
    );
    let members = admin
        .call_ok(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                encode(&protected),
                encode(&spammer.user_id)
            ),
            None,
        )
        .await;
    assert_eq!(members["membership"], "ban", "the ban stands");

    // A glob cannot be hashed: its hash would match nothing.
    command(
        &admin,
        &management,
        "!ban --hashed @spam*:localhost",
        "is a glob",
    )
    .await;

    // Unban by the user's ID finds the hashed rule, empties it and lifts the ban.
    command(
        &admin,
        &management,
        "!unban @spammer:localhost",
        "Removed the rule for @spammer:localhost",
    )
    .await;
    bot_sets_membership(&admin, &protected, &spammer.user_id, "leave").await;
    let rules = rules_in(&admin, &list).await;
    assert_eq!(
        rule(&rules, &format!("rule:sha256:{hash}"))["content"],
        json!({})
    );

    // A takedown: the rule recommends it, the room sees the neutral reason, the user's
    // message is redacted; unban lifts the ban.
    let message = taker.send_text(&protected, "buy my stuff").await;
    command(
        &admin,
        &management,
        "!ban --takedown @taker:localhost not for the room",
        "Added a user takedown rule for @taker:localhost",
    )
    .await;
    let rules = rules_in(&admin, &list).await;
    assert_eq!(
        rule(&rules, "rule:@taker:localhost")["content"],
        json!({"entity": "@taker:localhost", "recommendation": "org.matrix.msc4204.takedown",
               "reason": "not for the room"})
    );
    let ban = bot_sets_membership(&admin, &protected, &taker.user_id, "ban").await;
    assert_eq!(ban["content"]["reason"], "taken down by a policy list");
    admin
        .wait_for_event(&protected, WAIT, |e| {
            e["type"] == "m.room.redaction"
                && e["sender"] == BOT
                && (e["redacts"] == message || e["content"]["redacts"] == message)
        })
        .await;
    command(
        &admin,
        &management,
        "!unban @taker:localhost",
        "Removed the rule for @taker:localhost",
    )
    .await;
    bot_sets_membership(&admin, &protected, &taker.user_id, "leave").await;
}
