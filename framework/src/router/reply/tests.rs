use serde_json::json;
use trestle_registration::Registration;

use super::Reply;
use crate::{
    Appservice, Router,
    router::Command,
    testing::{MockHomeserver, deliver, text},
};

async fn hello(_: Command, reply: Reply) -> crate::Result<()> {
    reply.text("hello").await?;
    Ok(())
}

#[tokio::test]
async fn replies_go_to_the_event_room_and_stay_in_its_thread() {
    let hs = MockHomeserver::start(json!({}), json!({})).await;
    let registration = Registration::generate("test", None, "bot", "t_", "x");
    let app = Appservice::builder(registration, hs.url.clone(), "x")
        .router(Router::new().command("hi", hello))
        .build()
        .await
        .unwrap();
    let mut threaded = text("$2", "!r:x", "@v:x", "!hi");
    threaded["content"]["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": "$root",
        "is_falling_back": true, "m.in_reply_to": {"event_id": "$1"}});
    // A reply outside a thread is answered outside it too.
    let mut replying = text("$3", "!r:x", "@u:x", "!hi");
    replying["content"]["m.relates_to"] = json!({"m.in_reply_to": {"event_id": "$1"}});
    deliver(
        &app,
        vec![text("$1", "!r:x", "@u:x", "!hi"), threaded, replying],
    )
    .await;

    let sent = std::mem::take(&mut *hs.sent.lock().unwrap());
    let paths = std::mem::take(&mut *hs.sent_paths.lock().unwrap());
    assert_eq!(sent.len(), 3, "{sent:?}");
    for path in &paths {
        let room = path.split('/').nth(5).unwrap();
        assert_eq!(
            room.replace("%21", "!").replace("%3A", ":"),
            "!r:x",
            "{path}"
        );
    }
    assert_eq!(sent[0]["body"], "hello");
    assert_eq!(
        sent[0]["m.relates_to"],
        json!({"m.in_reply_to": {"event_id": "$1"}})
    );
    assert_eq!(sent[0]["m.mentions"], json!({"user_ids": ["@u:x"]}));
    // In the thread, and a genuine reply there: no `is_falling_back: true`, which would mark
    // the `m.in_reply_to` as the fallback a plain thread message carries.
    assert_eq!(
        sent[1]["m.relates_to"],
        json!({"rel_type": "m.thread", "event_id": "$root", "m.in_reply_to": {"event_id": "$2"}})
    );
    assert_eq!(sent[1]["m.mentions"], json!({"user_ids": ["@v:x"]}));
    assert_eq!(
        sent[2]["m.relates_to"],
        json!({"m.in_reply_to": {"event_id": "$3"}})
    );
}
