use super::*;

fn body(json: serde_json::Value) -> TransactionBody {
    serde_json::from_value(json).unwrap()
}

fn message(id: &str, room: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "m.room.message", "room_id": room, "sender": "@u:x", "event_id": id,
        "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "hi"}
    })
}

#[test]
fn a_malformed_event_is_skipped_and_the_rest_kept() {
    let parsed = body(serde_json::json!({"events": [
        message("$1", "!a:x"),
        {"type": "m.room.message", "content": {}},
        42,
        message("$2", "!a:x"),
    ]}))
    .into_items("t1");
    assert_eq!(parsed.skipped, 2);
    let ids: Vec<_> = parsed
        .items
        .iter()
        .map(|i| match i {
            Incoming::Timeline(e) => e.event_id.to_string(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(ids, ["$1", "$2"]);
}

fn timeline(parsed: &Parsed, i: usize) -> &TimelineEvent {
    match &parsed.items[i] {
        Incoming::Timeline(e) => e,
        other => panic!("not a timeline event: {other:?}"),
    }
}

/// The content's place is found wherever the content stands in the event, with escapes
/// and nested values, and is none where there is no content to find.
#[test]
fn an_events_content_is_found_where_it_is() {
    let head = r#""type": "m.room.message", "room_id": "!a:x", "sender": "@u:x""#;
    let events = [
        format!(
            r#"{{"content": {{"body": "first \"q\" \u00e9", "n": [1, {{"a": {{}}}}]}}, {head}, "event_id": "$1"}}"#
        ),
        format!(
            r#"{{{head}, "event_id": "$2", "unsigned": {{"content": 1}}, "content":{{"body":"last"}}}}"#
        ),
        format!(r#"{{{head}, "event_id": "$3", "content": {{}}, "origin_server_ts": 1}}"#),
        format!(r#"{{{head}, "event_id": "$4"}}"#),
        format!(r#"{{{head}, "event_id": "$5", "content": null}}"#),
    ];
    let text = format!(r#"{{"events": [{}]}}"#, events.join(", "));
    let parsed = serde_json::from_str::<TransactionBody>(&text)
        .unwrap()
        .into_items("t");
    assert_eq!(parsed.skipped, 0);
    for (i, event) in events.iter().enumerate() {
        let whole: serde_json::Value = serde_json::from_str(event).unwrap();
        let found = timeline(&parsed, i).content_json();
        match whole.get("content").filter(|c| !c.is_null()) {
            Some(content) => {
                let found: serde_json::Value = serde_json::from_str(found.unwrap()).unwrap();
                assert_eq!(&found, content, "event {i}");
            }
            None => assert_eq!(found, None, "event {i}"),
        }
    }
    assert_eq!(
        timeline(&parsed, 1).content_json(),
        Some(r#"{"body":"last"}"#)
    );
}

/// An event with two `content` keys is taken as it was before its content's place was
/// looked for (its content is then read from the whole event, which refuses it), and an
/// event whose JSON was replaced does not use the place found in the old one.
#[test]
fn an_event_with_two_contents_is_taken_and_a_replaced_json_is_not_misread() {
    let text = r#"{"events": [{"type": "m.room.message", "room_id": "!a:x", "sender": "@u:x",
        "event_id": "$1", "content": {"body": "a"}, "content": {"body": "b"}}]}"#;
    let parsed = serde_json::from_str::<TransactionBody>(text)
        .unwrap()
        .into_items("t");
    assert_eq!((parsed.skipped, parsed.items.len()), (0, 1));
    assert_eq!(timeline(&parsed, 0).content_json(), None);

    let parsed = body(serde_json::json!({"events": [message("$2", "!a:x")]})).into_items("t");
    let mut event = timeline(&parsed, 0).clone();
    assert!(event.content_json().is_some());
    // Longer than the old JSON, so that the old place would still be inside it.
    let other = format!(
        r#"{{"content": {{"body": "other"}}, "pad": "{}"}}"#,
        "x".repeat(400)
    );
    event.json = Arc::from(RawValue::from_string(other).unwrap());
    assert_eq!(event.content_json(), None);
}

#[test]
fn room_ids_without_a_server_part_are_read() {
    let parsed = body(serde_json::json!({"events": [
        message("$1", "!bP6x3Cs50YAMPSbeJDb-tilOHGXfOnyCZ_VcW152qhE"),
    ]}))
    .into_items("t");
    assert_eq!(parsed.skipped, 0);
    assert_eq!(parsed.items.len(), 1);
}

#[test]
fn stable_ephemeral_key_wins_and_unstable_is_the_fallback() {
    let typing = |room: &str| serde_json::json!({"type": "m.typing", "room_id": room, "content": {"user_ids": []}});
    let both = body(serde_json::json!({
        "ephemeral": [typing("!stable:x")],
        "de.sorunome.msc2409.ephemeral": [typing("!unstable:x")],
    }))
    .into_items("t");
    assert_eq!(both.items.len(), 1);
    assert_eq!(both.items[0].queue_key().unwrap().as_str(), "!stable:x");

    let unstable = body(serde_json::json!({
        "de.sorunome.msc2409.ephemeral": [typing("!unstable:x")],
    }))
    .into_items("t");
    assert_eq!(
        unstable.items[0].queue_key().unwrap().as_str(),
        "!unstable:x"
    );
}

#[test]
fn to_device_and_msc3202_are_offered() {
    let parsed = body(serde_json::json!({
        "de.sorunome.msc2409.to_device": [{
            "type": "m.room_key_request", "sender": "@a:x", "to_user_id": "@b:x",
            "to_device_id": "DEV", "content": {}
        }, {"type": "broken"}],
        "org.matrix.msc3202.device_lists": {"changed": ["@a:x"], "left": []},
        "org.matrix.msc3202.device_one_time_keys_count": {"@b:x": {"DEV": {"signed_curve25519": 50}}},
        "org.matrix.msc3202.device_unused_fallback_key_types": {"@b:x": {"DEV": ["signed_curve25519"]}},
    }))
    .into_items("t");
    assert_eq!(parsed.skipped, 1);
    assert_eq!(parsed.items.len(), 2);
    let Incoming::ToDevice(td) = &parsed.items[0] else {
        panic!()
    };
    assert_eq!(td.to_device_id.as_str(), "DEV");
    let Incoming::DeviceLists(dl) = &parsed.items[1] else {
        panic!()
    };
    assert_eq!(dl.device_lists.changed[0].as_str(), "@a:x");
    let b: OwnedUserId = "@b:x".try_into().unwrap();
    let dev: OwnedDeviceId = "DEV".into();
    assert_eq!(dl.one_time_keys_count[&b][&dev]["signed_curve25519"], 50);
    assert_eq!(
        dl.unused_fallback_key_types[&b][&dev],
        ["signed_curve25519"]
    );
}

/// The inbox knows an event by its id and `origin_server_ts`: the integer where it is one, 0
/// for anything else, which never refuses the event. A stored event's JSON gives the same
/// value again (`stored_origin_ts`, what a start reads from the journal).
#[test]
fn the_origin_timestamp_is_the_integer_or_zero_and_never_refuses_the_event() {
    let head = r#""type": "m.room.message", "room_id": "!a:x", "sender": "@u:x", "content": {}"#;
    let cases = [
        (r#""origin_server_ts": 1700000000000"#, 1_700_000_000_000),
        (r#""origin_server_ts": -5"#, -5),
        (r#""origin_server_ts": 1.5"#, 0),
        (r#""origin_server_ts": 18446744073709551615"#, 0),
        (r#""origin_server_ts": "1700000000000""#, 0),
        (r#""origin_server_ts": {"a": [1, {"b": null}]}"#, 0),
        (r#""origin_server_ts": [1, 2]"#, 0),
        (r#""origin_server_ts": null"#, 0),
        (r#""origin_server_ts": true"#, 0),
        (r#""unsigned": {"origin_server_ts": 7}"#, 0),
        // Twice: the first read refuses the key, the fallback takes the event without it.
        (r#""origin_server_ts": 7, "origin_server_ts": 7"#, 0),
    ];
    let events: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (ts, _))| format!(r#"{{{head}, "event_id": "${i}", {ts}}}"#))
        .collect();
    let text = format!(r#"{{"events": [{}]}}"#, events.join(", "));
    let parsed = serde_json::from_str::<TransactionBody>(&text)
        .unwrap()
        .into_items("t");
    assert_eq!(parsed.skipped, 0, "no event is refused for its timestamp");
    for (i, (ts, expected)) in cases.iter().enumerate() {
        let event = timeline(&parsed, i);
        assert_eq!(event.event_id.as_str(), format!("${i}"));
        assert_eq!(event.origin_ts, *expected, "{ts}");
        assert_eq!(
            stored_origin_ts(event.json.get()),
            *expected,
            "{ts}, stored"
        );
    }
}
