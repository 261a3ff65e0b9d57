//! The connection against a scripted server: what ngircd cannot show (SASL, server-time) and
//! the exact moment a connection breaks with a line written but not yet confirmed.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::{
        TcpListener,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    time::timeout,
};

use base64::Engine;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

struct Peer {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let (read, write) = stream.into_split();
        Peer {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    /// The next line the client sends that starts with `start`.
    async fn expect(&mut self, start: &str) -> String {
        loop {
            let line = timeout(WAIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line starting with {start:?}"))
                .unwrap()
                .expect("the client hung up");
            if line.starts_with(start) {
                return line;
            }
        }
    }

    async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Registration without capabilities.
    async fn register(&mut self, nick: &str) {
        self.expect("CAP LS").await;
        self.expect("USER").await;
        self.send(":srv CAP * LS :").await;
        self.expect("CAP END").await;
        self.send(&format!(":srv 001 {nick} :Welcome")).await;
    }
}

async fn listener() -> (TcpListener, Config) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = Config::new("127.0.0.1", port, "bridge");
    config.reconnect_min = Duration::from_millis(50);
    (listener, config)
}

#[tokio::test]
async fn sasl_plain_and_server_time() {
    let (listener, mut config) = listener().await;
    config.sasl = Some(("acct".into(), "pw".into()));
    config.password = Some("serverpass".into());
    let (client, mut events) = Client::spawn(config);
    let mut server = Peer::accept(&listener).await;
    server.expect("CAP LS 302").await;
    assert_eq!(server.expect("PASS").await, "PASS serverpass");
    assert_eq!(server.expect("NICK").await, "NICK bridge");
    server.expect("USER").await;
    server
        .send(":srv CAP * LS * :multi-prefix server-time")
        .await;
    server
        .send(":srv CAP * LS :message-tags sasl=PLAIN,EXTERNAL")
        .await;
    assert_eq!(
        server.expect("CAP REQ").await,
        "CAP REQ :server-time message-tags multi-prefix sasl"
    );
    server
        .send(":srv CAP bridge ACK :server-time message-tags multi-prefix sasl")
        .await;
    server.expect("AUTHENTICATE PLAIN").await;
    server.send("AUTHENTICATE +").await;
    let payload = server.expect("AUTHENTICATE ").await;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(payload.trim_start_matches("AUTHENTICATE "))
        .unwrap();
    assert_eq!(decoded, b"acct\0acct\0pw");
    server
        .send(":srv 903 bridge :SASL authentication successful")
        .await;
    server.expect("CAP END").await;
    server.send(":srv 001 bridge :Welcome").await;
    assert_eq!(client.registered().await, "bridge");
    server
        .send("@time=2024-01-02T03:04:05.678Z;msgid=x :bob!b@h PRIVMSG #c :hi")
        .await;
    loop {
        let event = timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if let Event::Message { time, text, .. } = event {
            assert_eq!(text, "hi");
            assert_eq!(time.as_deref(), Some("2024-01-02T03:04:05.678Z"));
            break;
        }
    }
}

#[tokio::test]
async fn a_failed_sasl_login_is_reported_and_registration_goes_on() {
    let (listener, mut config) = listener().await;
    config.sasl = Some(("acct".into(), "wrong".into()));
    let (client, mut events) = Client::spawn(config);
    let mut server = Peer::accept(&listener).await;
    server.expect("USER").await;
    server.send(":srv CAP * LS :sasl").await;
    assert_eq!(server.expect("CAP REQ").await, "CAP REQ sasl");
    server.send(":srv CAP bridge ACK :sasl").await;
    server.expect("AUTHENTICATE PLAIN").await;
    server.send("AUTHENTICATE +").await;
    server.expect("AUTHENTICATE ").await;
    server
        .send(":srv 904 bridge :SASL authentication failed")
        .await;
    server.expect("CAP END").await;
    let event = timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(
        matches!(&event, Event::Error { message } if message.contains("SASL failed")),
        "{event:?}"
    );
    server.send(":srv 001 bridge :Welcome").await;
    client.registered().await;
}

#[tokio::test]
async fn a_line_written_but_unconfirmed_is_sent_again_after_a_break() {
    let (listener, config) = listener().await;
    let (client, _events) = Client::spawn(config);
    let mut first = Peer::accept(&listener).await;
    first.register("bridge").await;
    client.registered().await;
    client.send("#c", Kind::Privmsg, "one");
    assert_eq!(first.expect("PRIVMSG").await, "PRIVMSG #c one");
    let ping = first.expect("PING").await;
    assert_eq!(ping, "PING trestle-1");
    // The server goes away before answering: "one" may never have been handled.
    drop(first);

    let mut second = Peer::accept(&listener).await;
    second.register("bridge").await;
    assert_eq!(second.expect("PRIVMSG").await, "PRIVMSG #c one");
    let ping = second.expect("PING").await;
    let token = ping.trim_start_matches("PING ");
    second.send(&format!(":srv PONG srv :{token}")).await;
    client.send("#c", Kind::Privmsg, "two");
    // Confirmed lines are not repeated: the next message is "two".
    assert_eq!(second.expect("PRIVMSG").await, "PRIVMSG #c two");
}

#[tokio::test]
async fn a_message_is_confirmed_by_the_pong_after_it() {
    let (listener, config) = listener().await;
    let (client, _events) = Client::spawn(config);
    let mut server = Peer::accept(&listener).await;
    server.register("bridge").await;
    let sent = client.send("#c", Kind::Privmsg, "one");
    let confirmed = tokio::spawn(sent.confirmed());
    assert_eq!(server.expect("PRIVMSG").await, "PRIVMSG #c one");
    let ping = server.expect("PING").await;
    assert!(!confirmed.is_finished(), "confirmed before the PONG");
    let token = ping.trim_start_matches("PING ");
    server.send(&format!(":srv PONG srv :{token}")).await;
    let outcome = timeout(WAIT, confirmed).await.unwrap().unwrap();
    assert_eq!(outcome, Ok(()));
}

#[tokio::test]
async fn a_message_on_a_refused_connection_says_why_and_waits_for_the_next() {
    let (listener, config) = listener().await;
    let (client, _events) = Client::spawn(config);
    // The server lets the connection in, reads its greeting and closes it.
    let mut first = Peer::accept(&listener).await;
    first.expect("USER").await;
    drop(first);
    let refused = timeout(WAIT, client.send("#c", Kind::Privmsg, "one").confirmed())
        .await
        .unwrap();
    assert_eq!(refused, Err("the server closed the connection".to_owned()));
    // Still queued: the next connection sends it.
    let mut second = Peer::accept(&listener).await;
    second.register("bridge").await;
    assert_eq!(second.expect("PRIVMSG").await, "PRIVMSG #c one");
}

#[test]
fn a_ca_file_without_certificates_is_refused_with_its_name() {
    let dir = std::env::temp_dir().join(format!("trestle-irc-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let error = tls_config(Some(&empty)).expect_err("refused").to_string();
    assert!(
        error.contains("empty.pem") && error.contains("no certificate"),
        "{error}"
    );
    assert!(tls_config(Some(&dir.join("missing.pem"))).is_err());
    assert!(tls_config(None).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
