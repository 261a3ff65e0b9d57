//! A plain IRC client for tests, written independently of the bridge's protocol code: it
//! registers, joins, sends raw lines and waits for lines matching a condition.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    time::timeout,
};

pub const WAIT: Duration = Duration::from_secs(30);

/// One received line, split the simple way: `:prefix COMMAND params... :trailing`.
#[derive(Debug, Clone)]
pub struct Line {
    pub raw: String,
    pub nick: String,
    pub command: String,
    pub params: Vec<String>,
}

impl Line {
    fn parse(raw: &str) -> Line {
        let mut rest = raw;
        if rest.starts_with('@') {
            rest = rest.split_once(' ').map_or("", |(_, r)| r);
        }
        let mut nick = String::new();
        if let Some(p) = rest.strip_prefix(':') {
            let (prefix, r) = p.split_once(' ').unwrap_or((p, ""));
            nick = prefix.split('!').next().unwrap_or("").to_owned();
            rest = r;
        }
        let (head, trailing) = match rest.split_once(" :") {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        let mut words = head.split(' ').filter(|w| !w.is_empty());
        let command = words.next().unwrap_or("").to_owned();
        let mut params: Vec<String> = words.map(str::to_owned).collect();
        if let Some(t) = trailing {
            params.push(t.to_owned());
        }
        Line {
            raw: raw.to_owned(),
            nick,
            command,
            params,
        }
    }

    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }
}

pub struct RawClient {
    pub nick: String,
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl RawClient {
    /// Connects and registers as `nick`.
    pub async fn connect(port: u16, nick: &str) -> RawClient {
        // Refused for a moment now and then just after ngircd (re)starts, though it answered the
        // readiness probe (seen once in CI): try again for up to two seconds.
        let mut attempts = 0;
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => break stream,
                Err(error) if attempts < 40 => {
                    attempts += 1;
                    eprintln!("connect to ngircd on port {port}: {error}; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(error) => panic!("connect to ngircd on port {port}: {error}"),
            }
        };
        let (read, write) = stream.into_split();
        let mut client = RawClient {
            nick: nick.to_owned(),
            lines: BufReader::new(read).lines(),
            write,
        };
        client.send(&format!("NICK {nick}")).await;
        client.send(&format!("USER {nick} 0 * :{nick}")).await;
        client.expect(|l| l.command == "001").await;
        client
    }

    pub async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to ngircd");
    }

    /// Joins and waits for the end of the names list.
    pub async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        self.expect(|l| l.command == "366").await;
    }

    pub async fn privmsg(&mut self, target: &str, text: &str) {
        self.send(&format!("PRIVMSG {target} :{text}")).await;
    }

    /// The next line that matches, answering PINGs meanwhile; panics after [`WAIT`].
    pub async fn expect(&mut self, mut matches: impl FnMut(&Line) -> bool) -> Line {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = timeout(
                deadline - tokio::time::Instant::now(),
                self.lines.next_line(),
            )
            .await
            .unwrap_or_else(|_| panic!("{}: no matching line within {WAIT:?}", self.nick))
            .expect("read from ngircd")
            .unwrap_or_else(|| panic!("{}: the server closed the connection", self.nick));
            let line = Line::parse(&next);
            if line.command == "PING" {
                let token = line.param(0).to_owned();
                self.send(&format!("PONG :{token}")).await;
                continue;
            }
            if matches(&line) {
                return line;
            }
        }
    }

    /// The next PRIVMSG to `target` (a channel, or this client).
    pub async fn expect_privmsg(&mut self, target: &str) -> Line {
        let target = target.to_owned();
        self.expect(move |l| l.command == "PRIVMSG" && l.param(0).eq_ignore_ascii_case(&target))
            .await
    }
}
