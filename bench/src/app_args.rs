//! What the two appservices under test share: their command line, where they listen, and
//! how they stop.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use trestle::Registration;

/// `BIN --registration FILE --homeserver URL [--handler-delay-ms MS]`.
#[derive(Debug, Parser)]
pub struct AppArgs {
    /// The registration file; the appservice listens at its `url`.
    #[arg(long)]
    pub registration: PathBuf,
    /// The homeserver's client-server API, e.g. `http://127.0.0.1:8008`.
    #[arg(long)]
    pub homeserver: String,
    /// Milliseconds each `!echo`/`!ghost` handler waits before it answers (the flood scenario).
    #[arg(long, default_value_t = 0)]
    pub handler_delay_ms: u64,
    /// bench-echo only, for analysis: the store's URL instead of a SQLite file in a temporary
    /// directory (e.g. `sqlite::memory:`). The benchmark's figures use the default.
    #[arg(long)]
    pub database: Option<String>,
    /// bench-echo only: the store's scope on a shared PostgreSQL database (its tables in the
    /// schema `trestle_<scope>`), so runs on one database keep apart (`bench-scale`).
    #[arg(long)]
    pub scope: Option<String>,
    /// bench-echo only: `os-cache` (the default) or `disk`, the store's durability (see
    /// `docs/durability.md`).
    #[arg(long, default_value = "os-cache", value_parser = ["os-cache", "disk"])]
    pub durability: String,
    /// bench-echo only: events handed to the handlers and not yet handled past which a
    /// transaction waits (`AppserviceBuilder::max_in_flight`); 0 for no bound. The framework's
    /// default unless given.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
}

/// Reads the registration and the `host:port` of its `url`.
pub fn load(args: &AppArgs) -> Result<(Registration, SocketAddr), String> {
    let registration = Registration::from_file(&args.registration)
        .map_err(|e| format!("{}: {e}", args.registration.display()))?;
    let url = registration
        .url
        .as_deref()
        .ok_or("the registration has no url to listen at")?;
    let addr = listen_addr(url)?;
    Ok((registration, addr))
}

/// The socket address of an `http://host:port` URL.
pub fn listen_addr(url: &str) -> Result<SocketAddr, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("url `{url}`: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or(format!("url `{url}` has no host"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or(format!("url `{url}` has no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    format!("{host}:{port}")
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| format!("url `{url}`: cannot resolve {host}:{port}"))
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `echo: <rest>` — what both appservices answer to `!echo <rest>` and `!ghost <rest>`.
pub fn echo_body(rest: &str) -> String {
    format!("echo: {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_come_from_the_url() {
        assert_eq!(
            listen_addr("http://127.0.0.1:29333").unwrap(),
            "127.0.0.1:29333".parse().unwrap()
        );
        assert_eq!(
            listen_addr("http://[::1]:80/").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(listen_addr("not a url").is_err());
    }
}
