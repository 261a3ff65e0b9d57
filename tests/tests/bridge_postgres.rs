//! The bridge kit's tables on PostgreSQL: a login made through the provisioning API is stored,
//! and a bridge started again on the same database connects it by itself; portals, the
//! message map, management rooms and the key of media links work there against a real
//! Synapse.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use trestle::{Appservice, Registration, Store};
use trestle_bridge::{Bridge, BridgeConfig};
use trestle_tests::{postgres::fresh_database, toy_network::ToyNetwork};

const SECRET: &str = "provisioning-secret-456";

/// One life of the bridge on `database`. No homeserver answers: the provisioning API and the
/// stored logins need none (notices to the user are given up, and logged).
struct Life {
    network: ToyNetwork,
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(database: &str) -> Life {
    let network = ToyNetwork::default();
    let bridge = Bridge::new(
        network.clone(),
        BridgeConfig::default().provisioning_secret(SECRET),
    );
    let registration = Registration::generate("toy", None, "toybot", "toy_", "localhost");
    let app = Appservice::builder(registration, "http://127.0.0.1:9", "localhost")
        .store(Store::connect(database).await.unwrap())
        .router(bridge.router())
        .build()
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run(listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Life {
        network,
        url,
        stop,
        task,
    }
}

impl Life {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(SECRET);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn logins_live_in_postgres_and_reconnect_after_a_restart() {
    use reqwest::Method;
    let database = fresh_database().await;
    let alice = "user_id=%40alice%3Alocalhost";

    let first = start(&database).await;
    let body = json!({"fields": {"name": "alice", "password": "secret"}});
    let (status, login) = first
        .call(
            Method::POST,
            &format!("/provision/v1/login?{alice}"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["state"], "CONNECTED");
    let (status, portals) = first.call(Method::GET, "/provision/v1/portals", None).await;
    assert_eq!((status, portals), (200, json!({"portals": []})));
    first.stop().await;

    // A new process: nobody logs in again, the stored login is connected by the bridge.
    let second = start(&database).await;
    let started = Instant::now();
    while second.network.world.handle("alice").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stored login was never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status_path = format!("/provision/v1/status?{alice}");
    let (status, logins) = second.call(Method::GET, &status_path, None).await;
    assert_eq!(status, 200, "{logins}");
    assert_eq!(logins["logins"][0]["id"], "toynet");
    assert_eq!(logins["logins"][0]["state"], "CONNECTED");
    let body = json!({"login_id": "toynet"});
    let (status, _) = second
        .call(
            Method::POST,
            &format!("/provision/v1/logout?{alice}"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200);
    let (_, logins) = second.call(Method::GET, &status_path, None).await;
    assert_eq!(logins, json!({"logins": []}));
    second.stop().await;
}

/// Portals, the message map and management rooms on PostgreSQL, against a real Synapse; a
/// portal upgraded moves there too.
#[tokio::test]
async fn portals_and_the_message_map_live_in_postgres() {
    use trestle_bridge::{MessageContent, RemoteMessage};
    use trestle_tests::{
        appservice::WAIT,
        bridge_checks::{command, logged_in_toy_user, set_power_level, upgrade_room},
        synapse::{Synapse, free_port},
        toy_network::Arrived,
    };

    let database = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut registration = Registration::generate("toy", None, "toybot", "toy_", "localhost");
    registration.url = Some(format!("http://127.0.0.1:{port}"));
    let path = dir.path().join("registration.yaml");
    registration.write_file(&path).unwrap();
    let synapse = Synapse::start(&[path]).await;
    let network = ToyNetwork::default();
    let world = network.world.clone();
    let bridge = Bridge::new(network, BridgeConfig::default());
    let handle = bridge.handle();
    let app = Appservice::builder(registration.clone(), synapse.base_url(), "localhost")
        .store(Store::connect(&database).await.unwrap())
        .router(bridge.router())
        .build()
        .await
        .unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.clone().run(listener, async {
        let _ = stopped.await;
    }));
    synapse
        .wait_for_appservice(&registration.id, &registration.as_token, WAIT)
        .await;

    let (alice, lobby, mgmt) = logged_in_toy_user(&synapse, "alice").await;
    let hi = RemoteMessage::new(
        "lobby".into(),
        "bob".into(),
        "r1".into(),
        MessageContent::text("hi"),
    );
    let hi = handle.remote_message(hi).await.unwrap().unwrap();
    alice
        .send_event(
            &lobby,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hello bob",
                   "m.relates_to": {"m.in_reply_to": {"event_id": hi.as_str()}}}),
        )
        .await;
    let reply = world
        .wait_for("the reply", |a| matches!(a, Arrived::Message { .. }))
        .await;
    assert!(
        matches!(&reply, Arrived::Message { reply_to: Some(r), body, .. } if r == "r1" && body == "hello bob"),
        "{reply:?}"
    );
    let list = command(&alice, &mgmt, "list", "Portals:").await;
    assert!(list.contains(&format!("lobby → {lobby}")), "{list}");

    // Media links: their key is made and kept in PostgreSQL.
    let mxc = app
        .media()
        .upload_bytes(b"kept in postgres".to_vec(), "text/plain", None)
        .await
        .unwrap();
    let served = reqwest::get(handle.media_link(&mxc).await.unwrap())
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.text().await.unwrap(), "kept in postgres");
    // Upgraded, the portal moves to the new room, and the message map still answers there.
    set_power_level(&app, &alice, &lobby, "@alice:localhost", 150).await;
    let new_lobby = upgrade_room(&alice, &lobby, json!({"new_version": "12"})).await;
    let started = Instant::now();
    let new_lobby_id = trestle::ruma::RoomId::parse(&new_lobby).unwrap();
    while handle
        .portal_for_room(&new_lobby_id)
        .await
        .unwrap()
        .is_none()
    {
        assert!(started.elapsed() < WAIT, "the portal never moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice
        .send_event(
            &new_lobby,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "still about hi",
                   "m.relates_to": {"m.in_reply_to": {"event_id": hi.as_str()}}}),
        )
        .await;
    let reply = world
        .wait_for(
            "the reply from the new room",
            |a| matches!(a, Arrived::Message { body, .. } if body == "still about hi"),
        )
        .await;
    assert!(
        matches!(&reply, Arrived::Message { reply_to: Some(r), .. } if r == "r1"),
        "{reply:?}"
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
