//! One client connection to an IRC server that survives network trouble.
//!
//! A [`Client`] is a handle to an actor task that owns the socket. Lines to send go into the
//! actor's queue and leave it at the pace of a token bucket. A line counts as delivered only
//! once the server has answered a `PING` sent after it (servers handle a client's lines in
//! order), so lines in flight when a connection breaks are sent again on the next one: at
//! least once, never lost. The actor reconnects with exponential back-off, registers again
//! (SASL included), rejoins its channels and then sends what was queued meanwhile.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep_until, timeout},
};

mod bucket;
mod incoming;
#[cfg(test)]
mod tests;

use bucket::Bucket;

use super::{
    message::{Command, Message, make_action},
    naming::{irc_lowercase, nick_candidates},
    split::{split_lines, text_budget},
};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server's host name (also the name its TLS certificate must carry).
    pub host: String,
    /// The server's port, commonly 6667 in plain text and 6697 over TLS.
    pub port: u16,
    /// Whether to speak TLS to the server.
    pub tls: bool,
    /// A PEM file of certificates to trust besides the system's roots (a self-signed
    /// server's, or a private CA's).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The server password (`PASS`).
    pub password: Option<String>,
    /// SASL PLAIN account and password.
    pub sasl: Option<(String, String)>,
    /// The nick to register with; when it is taken, variants of it are tried.
    pub nick: String,
    /// The user name of `USER` (the `user` of `nick!user@host`).
    pub username: String,
    /// The "real name" of `USER`, shown by `WHOIS`.
    pub realname: String,
    /// Lines that may be sent at once before the steady rate applies.
    pub flood_burst: u32,
    /// Lines per second after the burst.
    pub flood_rate: f64,
    /// The first wait before reconnecting; it doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// The longest wait between two attempts to reconnect.
    pub reconnect_max: Duration,
    /// Silence after which the server is pinged, and then considered gone.
    pub keepalive: Duration,
}

impl Config {
    /// A plain-text connection to `host:port` as `nick` with usual defaults.
    pub fn new(host: &str, port: u16, nick: &str) -> Self {
        Config {
            host: host.to_owned(),
            port,
            tls: false,
            tls_ca_file: None,
            password: None,
            sasl: None,
            nick: nick.to_owned(),
            username: "trestle".to_owned(),
            realname: nick.to_owned(),
            flood_burst: 5,
            flood_rate: 2.0,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(300),
            keepalive: Duration::from_secs(90),
        }
    }
}

/// How a message was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary message (`PRIVMSG`).
    Privmsg,
    /// A `NOTICE`, which by convention no bot answers automatically.
    Notice,
    /// A CTCP `ACTION`, the `/me` of IRC clients.
    Action,
}

/// What happens on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Registered (again) under `nick`; channels are being rejoined.
    Registered {
        /// The nick the server accepted, perhaps a variant of the configured one.
        nick: String,
    },
    /// The connection broke; it is being re-established.
    Disconnected {
        /// Why, in words: the socket's error, the server's `ERROR`, or its silence.
        reason: String,
    },
    /// The server refused a nick change (or SASL failed); in words.
    Error {
        /// What was refused and the server's reason.
        message: String,
    },
    /// A message from a user, to a channel or to this connection's nick.
    Message {
        /// The sender's nick.
        from: String,
        /// The channel it was sent to, or this connection's nick for a private message.
        target: String,
        /// How it was sent.
        kind: Kind,
        /// The text, without the CTCP framing of an action.
        text: String,
        /// The IRCv3 `server-time` tag, when the server sent one.
        time: Option<String>,
    },
    /// Someone (this connection included) joined a channel.
    Join {
        /// Who joined.
        nick: String,
        /// The channel joined.
        channel: String,
        /// `user@host` from the line's prefix (empty when the server gave none).
        mask: String,
    },
    /// The server refused to let this connection join a channel (banned, invite only, full,
    /// wrong key): the numeric's text.
    JoinRefused {
        /// The channel that could not be joined.
        channel: String,
        /// The server's explanation.
        reason: String,
    },
    /// Someone left a channel.
    Part {
        /// Who left.
        nick: String,
        /// The channel left.
        channel: String,
        /// The parting message (empty when none was given).
        reason: String,
    },
    /// Someone left the server, and so every channel shared with them.
    Quit {
        /// Who quit.
        nick: String,
        /// The quit message (empty when none was given).
        reason: String,
    },
    /// Someone was removed from a channel by an operator.
    Kick {
        /// The channel.
        channel: String,
        /// Who was kicked.
        nick: String,
        /// Who kicked them.
        by: String,
        /// The kick message (empty when none was given).
        reason: String,
    },
    /// Someone changed nick.
    Nick {
        /// The nick before the change.
        old: String,
        /// The nick after it.
        new: String,
    },
    /// A channel's topic, when it changes or on joining the channel.
    Topic {
        /// The channel.
        channel: String,
        /// The topic's text (empty when it was cleared).
        topic: String,
        /// Who set it: `None` for the topic sent on joining (`RPL_TOPIC`).
        by: Option<String>,
    },
    /// Channel modes changed.
    Mode {
        /// The channel.
        channel: String,
        /// The nick of who changed them (a server's name when a server did).
        by: String,
        /// Each change as `(adding, mode, argument)`: `+o alice` is `(true, 'o', Some("alice"))`.
        changes: Vec<(bool, char, Option<String>)>,
    },
    /// Who is in a channel (prefixes such as `@` removed), after joining it.
    Names {
        /// The channel.
        channel: String,
        /// Its members' nicks.
        nicks: Vec<String>,
        /// Each nick's channel modes from its prefixes (`o` for `@`, as the server's `PREFIX`
        /// says; several with `multi-prefix`), in the order of `nicks`.
        prefixes: Vec<String>,
    },
}

/// What the connection is like now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Whether the current connection is registered (false while reconnecting).
    pub registered: bool,
    /// The connection's nick: the one it is registering with, then the one it has.
    pub nick: String,
    /// How many times it registered; grows with each reconnect.
    pub sessions: u64,
    /// Why the connection is down, from the moment it broke (or an attempt to connect failed)
    /// until it is registered again; `None` while it is up or connecting for the first time.
    pub down: Option<String>,
}

/// What a handle asks of the actor.
enum Request {
    /// Lines to send, and who waits for the server to confirm the last of them.
    Lines(Vec<Message>, Option<oneshot::Sender<()>>),
    Join(String),
    Part(String, String),
    Nick(String),
    Quit(String),
}

/// A handle to a connection; cheap to clone. Dropping every handle closes the connection.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Request>,
    state: watch::Receiver<State>,
}

impl Client {
    /// Starts connecting. Events arrive on the receiver for as long as the connection lives.
    pub fn spawn(config: Config) -> (Client, mpsc::UnboundedReceiver<Event>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State {
            nick: config.nick.clone(),
            ..State::default()
        });
        let actor = Actor {
            wanted_nick: config.nick.clone(),
            config,
            commands: command_rx,
            events,
            state: state_tx,
            queue: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            channels: BTreeMap::new(),
            seq: 0,
            queued: 0,
            confirmed: 0,
            waiters: VecDeque::new(),
            stopping: None,
        };
        tokio::spawn(actor.run());
        (Client { commands, state }, event_rx)
    }

    /// The connection's state now.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Waits until the connection is registered (and returns its nick).
    pub async fn registered(&self) -> String {
        let mut state = self.state.clone();
        let ready = state.wait_for(|s| s.registered).await;
        ready.map(|s| s.nick.clone()).unwrap_or_default()
    }

    /// Sends text (several lines, IRC formatting codes allowed) to a channel or nick, split to
    /// fit. The returned [`Sent`] says when the server confirmed it; it may be dropped.
    pub fn send(&self, target: &str, kind: Kind, text: &str) -> Sent {
        let nick = self.state.borrow().nick.clone();
        let budget = text_budget(&nick, target, kind == Kind::Action);
        let lines = split_lines(text, budget)
            .into_iter()
            .map(|line| match kind {
                Kind::Privmsg => Message::new(Command::Privmsg, &[target, &line]),
                Kind::Notice => Message::new(Command::Notice, &[target, &line]),
                Kind::Action => Message::new(Command::Privmsg, &[target, &make_action(&line)]),
            })
            .collect::<Vec<_>>();
        let mut sent = Sent {
            confirmed: None,
            state: self.state.clone(),
        };
        if !lines.is_empty() {
            let (confirm, confirmed) = oneshot::channel();
            sent.confirmed = Some(confirmed);
            let _ = self.commands.send(Request::Lines(lines, Some(confirm)));
        }
        sent
    }

    /// Sends a raw message (through the queue and flood control).
    pub fn raw(&self, message: Message) {
        let _ = self.commands.send(Request::Lines(vec![message], None));
    }

    /// Joins a channel, now and after every reconnect.
    pub fn join(&self, channel: &str) {
        let _ = self.commands.send(Request::Join(channel.to_owned()));
    }

    /// Leaves a channel for good.
    pub fn part(&self, channel: &str, reason: &str) {
        let _ = self
            .commands
            .send(Request::Part(channel.to_owned(), reason.to_owned()));
    }

    /// Changes nick (now, and the nick used on reconnects).
    pub fn set_nick(&self, nick: &str) {
        let _ = self.commands.send(Request::Nick(nick.to_owned()));
    }

    /// Sends what is queued (when connected), says goodbye and ends the connection.
    pub fn quit(&self, reason: &str) {
        let _ = self.commands.send(Request::Quit(reason.to_owned()));
    }
}

/// A message handed to a connection, not confirmed yet.
pub struct Sent {
    confirmed: Option<oneshot::Receiver<()>>,
    state: watch::Receiver<State>,
}

impl Sent {
    /// Waits until the server confirmed the message (answered the `PING` written after it,
    /// servers handling a client's lines in order): `Ok`. `Err`, with why, as soon as the
    /// connection is down (it was when the message was handed over, or it broke before the
    /// confirmation): the message stays queued and goes out when the connection is back.
    pub async fn confirmed(self) -> Result<(), String> {
        let Sent {
            confirmed,
            mut state,
        } = self;
        let Some(mut confirmed) = confirmed else {
            return Ok(());
        };
        let closed = || "the connection was closed".to_owned();
        loop {
            let down = state.borrow_and_update().down.clone();
            if let Some(reason) = down {
                return match confirmed.try_recv() {
                    Ok(()) => Ok(()),
                    Err(_) => Err(reason),
                };
            }
            tokio::select! {
                biased;
                done = &mut confirmed => return done.map_err(|_| closed()),
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(closed());
                    }
                }
            }
        }
    }
}

type Stream = Box<dyn AsyncReadWrite>;
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

struct Actor {
    config: Config,
    wanted_nick: String,
    commands: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<Event>,
    state: watch::Sender<State>,
    /// Lines not yet written.
    queue: VecDeque<Message>,
    /// Lines written but not yet confirmed by a PONG, with the sequence number of the
    /// confirmation PING that covers them.
    unconfirmed: VecDeque<(u64, Message)>,
    /// Lines ever queued, and of those confirmed: lines are confirmed in the order they were
    /// queued (a line sent again after a break keeps its place), so a count says which.
    queued: u64,
    confirmed: u64,
    /// Who waits for the line numbered so (counted by `queued`) to be confirmed.
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Channels to be in, by lower-cased name.
    channels: BTreeMap<String, String>,
    seq: u64,
    /// Set once a quit was asked for: the reason.
    stopping: Option<String>,
}

/// How a session ended.
enum End {
    Quit,
    Broken(String),
}

impl Actor {
    async fn run(mut self) {
        let mut backoff = self.config.reconnect_min;
        loop {
            let (end, was_registered) = self.session().await;
            let down = match &end {
                End::Broken(reason) => Some(reason.clone()),
                End::Quit => None,
            };
            self.state.send_modify(|s| {
                s.registered = false;
                s.down = down;
            });
            // What was written but not confirmed goes out again first, in order.
            while let Some((_, line)) = self.unconfirmed.pop_back() {
                self.queue.push_front(line);
            }
            let reason = match end {
                End::Quit => return,
                End::Broken(reason) => reason,
            };
            if self.events.is_closed() && self.commands.is_closed() {
                return;
            }
            tracing::info!(host = %self.config.host, %reason, "IRC connection lost; reconnecting");
            let _ = self.events.send(Event::Disconnected { reason });
            if was_registered {
                backoff = self.config.reconnect_min;
            }
            // Keep taking commands while waiting: nothing asked for meanwhile is lost.
            let wake = Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = sleep_until(wake) => break,
                    command = self.commands.recv() => match command {
                        Some(command) => self.take(command),
                        None => return,
                    },
                }
                if self.stopping.is_some() {
                    return;
                }
            }
            backoff = (backoff * 2).min(self.config.reconnect_max);
        }
    }

    /// Takes a command while not connected (or before writing it).
    fn take(&mut self, command: Request) {
        match command {
            Request::Lines(lines, waiter) => {
                self.queued += lines.len() as u64;
                self.queue.extend(lines);
                if let Some(waiter) = waiter {
                    self.waiters.push_back((self.queued, waiter));
                }
            }
            Request::Join(channel) => {
                self.queued += 1;
                self.channels
                    .insert(irc_lowercase(&channel), channel.clone());
                self.queue
                    .push_back(Message::new(Command::Join, &[&channel]));
            }
            Request::Part(channel, reason) => {
                self.queued += 1;
                self.channels.remove(&irc_lowercase(&channel));
                self.queue
                    .push_back(Message::new(Command::Part, &[&channel, &reason]));
            }
            Request::Nick(nick) => {
                self.queued += 1;
                self.wanted_nick = nick.clone();
                self.queue.push_back(Message::new(Command::Nick, &[&nick]));
            }
            Request::Quit(reason) => self.stopping = Some(reason),
        }
    }

    async fn connect(&self) -> std::io::Result<Stream> {
        let address = (self.config.host.as_str(), self.config.port);
        let tcp = timeout(Duration::from_secs(30), TcpStream::connect(address))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        tcp.set_nodelay(true)?;
        if !self.config.tls {
            return Ok(Box::new(tcp));
        }
        let connector =
            tokio_rustls::TlsConnector::from(tls_config(self.config.tls_ca_file.as_deref())?);
        let name = rustls_pki_types::ServerName::try_from(self.config.host.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(connector.connect(name, tcp).await?))
    }

    /// One connection, from connect to break or quit. Also says whether it got registered.
    async fn session(&mut self) -> (End, bool) {
        let stream = match self.connect().await {
            Ok(stream) => stream,
            Err(e) => return (End::Broken(format!("could not connect: {e}")), false),
        };
        let (read, mut write) = tokio::io::split(stream);
        let mut session = Session::new(self.config.flood_burst, self.config.flood_rate);
        session.candidates = nick_candidates(&self.wanted_nick, LONG_NICK).collect();
        let first_nick = session.next_nick();
        self.state.send_modify(|s| s.nick = first_nick.clone());
        let mut hello = vec![Message::new(Command::Cap, &["LS", "302"])];
        if let Some(password) = &self.config.password {
            hello.push(Message::new(Command::Pass, &[password]));
        }
        hello.push(Message::new(Command::Nick, &[&first_nick]));
        hello.push(Message::new(
            Command::User,
            &[&self.config.username, "0", "*", &self.config.realname],
        ));
        if let Err(e) = write_lines(&mut write, &hello).await {
            return (End::Broken(e.to_string()), false);
        }
        let mut reader = BufReader::new(read);
        let mut buf = Vec::new();
        let mut last_heard = Instant::now();
        let mut keepalive_sent = false;
        loop {
            let send_at = session.next_send(self.queue.is_empty());
            let heard_deadline = last_heard + self.config.keepalive;
            let mut out: Vec<Message> = Vec::new();
            tokio::select! {
                read = reader.read_until(b'\n', &mut buf) => {
                    match read {
                        Ok(0) => return (End::Broken("the server closed the connection".into()), session.registered),
                        Err(e) => return (End::Broken(e.to_string()), session.registered),
                        Ok(_) => {}
                    }
                    last_heard = Instant::now();
                    keepalive_sent = false;
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    buf.clear();
                    let Ok(message) = Message::parse(&line) else { continue };
                    if message.command == Command::Error {
                        return (End::Broken(format!("server error: {}", message.param(0))), session.registered);
                    }
                    self.handle(message, &mut session, &mut out);
                }
                command = self.commands.recv(), if self.stopping.is_none() => match command {
                    Some(command) => self.take(command),
                    None => self.stopping = Some(String::new()),
                },
                _ = sleep_until(send_at.unwrap_or_else(far_future)), if send_at.is_some() && session.registered => {
                    if let Some(line) = self.queue.pop_front() {
                        session.bucket.take();
                        self.unconfirmed.push_back((self.seq + 1, line.clone()));
                        out.push(line);
                        if !session.confirming {
                            out.push(self.confirm_ping(&mut session));
                        }
                    }
                }
                _ = sleep_until(heard_deadline) => {
                    if keepalive_sent {
                        return (End::Broken("the server stopped answering".into()), session.registered);
                    }
                    keepalive_sent = true;
                    last_heard = Instant::now();
                    out.push(Message::new(Command::Ping, &["keepalive"]));
                }
            }
            if let Some(reason) = self.stopping.clone()
                && session.registered
                && self.queue.is_empty()
                && self.unconfirmed.is_empty()
            {
                let _ = write_lines(&mut write, &[Message::new(Command::Quit, &[&reason])]).await;
                return (End::Quit, true);
            }
            if self.stopping.is_some() && !session.registered {
                return (End::Quit, false);
            }
            if let Err(e) = write_lines(&mut write, &out).await {
                return (End::Broken(e.to_string()), session.registered);
            }
        }
    }

    /// A PING whose PONG confirms every line written before it.
    fn confirm_ping(&mut self, session: &mut Session) -> Message {
        self.seq += 1;
        session.confirming = true;
        Message::new(Command::Ping, &[&format!("trestle-{}", self.seq)])
    }
}

/// What lives as long as one connection.
struct Session {
    registered: bool,
    confirming: bool,
    bucket: Bucket,
    offered: Vec<String>,
    /// NAMES replies being gathered: nicks with their prefixes.
    names: BTreeMap<String, Vec<(String, String)>>,
    /// Nicks still to try while registering.
    candidates: VecDeque<String>,
    short_nicks: bool,
    /// The server's channel prefixes, symbol → mode (`ISUPPORT PREFIX`).
    prefixes: Vec<(char, char)>,
}

/// The prefixes a server that does not say uses: `~&@%+` for `qaohv`.
const DEFAULT_PREFIXES: [(char, char); 5] =
    [('~', 'q'), ('&', 'a'), ('@', 'o'), ('%', 'h'), ('+', 'v')];

/// The nick length servers commonly allow, and RFC 1459's minimum.
const LONG_NICK: usize = 30;
const SHORT_NICK: usize = 9;

impl Session {
    fn new(burst: u32, rate: f64) -> Self {
        Session {
            registered: false,
            confirming: false,
            bucket: Bucket::new(burst, rate),
            offered: Vec::new(),
            names: BTreeMap::new(),
            candidates: VecDeque::new(),
            short_nicks: false,
            prefixes: DEFAULT_PREFIXES.to_vec(),
        }
    }

    fn next_nick(&mut self) -> String {
        self.candidates
            .pop_front()
            .unwrap_or_else(|| format!("trestle{}", rand_suffix()))
    }

    /// When the next queued line may go, if any is queued.
    fn next_send(&mut self, queue_empty: bool) -> Option<Instant> {
        (!queue_empty).then(|| self.bucket.ready_at())
    }
}

/// A few digits that differ between calls, for a last-resort nick.
fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos % 100_000
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

async fn write_lines(
    write: &mut (impl AsyncWrite + Unpin),
    lines: &[Message],
) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut data = String::new();
    for line in lines {
        // A CR or LF inside a parameter would end the line early and inject another command.
        data.push_str(&line.to_string().replace(['\r', '\n'], " "));
        data.push_str("\r\n");
    }
    write.write_all(data.as_bytes()).await?;
    write.flush().await
}

/// The TLS settings: the system's root certificates, plus those of `ca_file`. A file that
/// cannot be read or holds no certificate fails the connection attempt, with the reason.
fn tls_config(ca_file: Option<&std::path::Path>) -> std::io::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let invalid = |e: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tls_ca_file {}: {e}", path.display()),
            )
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| invalid(e.to_string()))? {
            let cert = cert.map_err(|e| invalid(e.to_string()))?;
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid("no certificate in it".into()));
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
