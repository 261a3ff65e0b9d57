//! A login made through the provisioning API of a process that does not hold the IRC bridge
//! (a `matrix`-role one beside an `all` one, on one PostgreSQL database, with a real Synapse
//! and a real ngircd): the holder connects it, once, and the API answers whether it worked;
//! the user's messages then reach IRC from their own nick.

// A failed unwrap in a test is the test failing, with the error in its message.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/irc_config.rs"]
mod irc_config;
#[allow(dead_code)]
#[path = "../../bridges/irc/tests/support/ngircd.rs"]
mod ngircd;
#[allow(dead_code)]
#[path = "support/processes.rs"]
mod processes;
#[allow(dead_code)]
#[path = "../../bridges/irc/tests/support/raw.rs"]
mod raw;
#[path = "support/registration.rs"]
mod registration;

use irc_config::{CONNECTION_WAIT_S, PROVISIONING_SECRET, write_config};
use ngircd::Ngircd;
use processes::{Process, balancer, start_holder, synapse_for};
use raw::RawClient;
use serde_json::{Value, json};
use trestle_tests::synapse::free_port;

const ALIAS: &str = "#irc_test_chat:localhost";

/// A provisioning request to the process on `port`: its status and JSON answer.
async fn provision(port: u16, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(PROVISIONING_SECRET)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_provisioning_login_on_the_matrix_process_connects_in_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let database = trestle_tests::postgres::fresh_database().await;
    let irc = Ngircd::start().await;
    let mut all = Process::new(dir.path(), "all", free_port());
    let mut matrix = Process::new(dir.path(), "matrix", free_port());
    let front = balancer(vec![matrix.port, all.port]).await;
    let (synapse, registration) = synapse_for(&[&all, &matrix], "irc", |config, url, port| {
        write_config(config, url, port, front, &database, irc.port)
    })
    .await;

    // The `all` process holds the bridge; kim is in the portal of #chat.
    let mut watcher = RawClient::connect(irc.port, "watcher").await;
    watcher.join("#chat").await;
    start_holder(&mut all, &synapse, &registration).await;
    watcher
        .expect(|l| l.command == "JOIN" && l.nick == "trestle")
        .await;
    let kim = synapse.register_user("kim", "password-1234").await;
    let room = kim.join(ALIAS).await;
    matrix.start();
    matrix.wait_live().await;

    // Her login, asked of the matrix process: the answer waits for the holder's connection.
    let (status, login) = provision(
        matrix.port,
        "/irc/provision/v1/login?user_id=@kim:localhost",
        json!({"fields": {"network": "test", "nick": "kimmy"}}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["state"], "CONNECTED", "{login}");
    assert_eq!(login["remote_name"], "kimmy", "{login}");

    // What she says reaches IRC from her nick, sent by the holder's connection: the one
    // connection of hers that joined the channel.
    kim.send_text(&room, "hello from kim").await;
    let mut joins = Vec::new();
    let said = watcher
        .expect(|l| {
            if l.command == "JOIN" {
                joins.push(l.nick.clone());
            }
            l.command == "PRIVMSG" && l.param(1) == "hello from kim"
        })
        .await;
    assert_eq!(said.nick, "kimmy");
    let kims: Vec<&String> = joins.iter().filter(|n| n.starts_with("kim")).collect();
    assert_eq!(kims, ["kimmy"], "her nick joined once: {joins:?}");

    // The matrix process handed the login over rather than connecting it.
    let logs: String = (1..=2)
        .filter_map(|n| std::fs::read_to_string(dir.path().join(format!("matrix.{n}.log"))).ok())
        .collect();
    assert!(
        logs.contains("login handed to the process that holds the logins"),
        "{logs}"
    );
    // Nobody holds the bridge: a login asked of the matrix process is answered, after the
    // kit's connection wait, with a 503 saying so. It stays asked: the next holder connects it.
    all.stop().await;
    let lee = synapse.register_user("lee", "password-1234").await;
    lee.join(ALIAS).await;
    let (status, answer) = provision(
        matrix.port,
        "/irc/provision/v1/login?user_id=@lee:localhost",
        json!({"fields": {"network": "test", "nick": "leeroy"}}),
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "did not connect the login within {CONNECTION_WAIT_S} s"
        )),
        "{answer}"
    );
    all.start();
    watcher
        .expect(|l| l.command == "JOIN" && l.nick == "leeroy")
        .await;

    let bad = provision(
        matrix.port,
        "/irc/provision/v1/login?user_id=@kim:localhost",
        json!({"fields": {"network": "nowhere", "nick": "kimmy"}}),
    )
    .await;
    assert_eq!(
        bad.0, 400,
        "an unknown network is refused at once: {}",
        bad.1
    );
}
