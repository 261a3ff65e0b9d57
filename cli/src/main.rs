//! `trestle`: the host that runs Trestle's bundled plugins.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use trestle::{Appservice, Plugin, Registration, Store};

/// Every plugin this binary can run.
const PLUGINS: &[Plugin] = &[trestle_echo::PLUGIN];

#[derive(Parser)]
#[command(
    name = "trestle",
    version,
    about = "Runs Matrix application services built on Trestle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the bundled plugins, one name per line.
    Plugins,
    /// Writes a plugin's registration file. An existing file keeps its tokens.
    Registration {
        /// The plugin.
        #[arg(long)]
        plugin: String,
        /// Where the homeserver reaches the plugin, e.g. http://127.0.0.1:29300.
        #[arg(long)]
        url: String,
        /// The homeserver's server name (the part after `:` in user ids).
        #[arg(long)]
        server_name: String,
        /// The file to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Runs plugins until Ctrl-C or SIGTERM.
    Run {
        /// The homeserver's client-server API URL.
        #[arg(long)]
        homeserver: String,
        /// The homeserver's server name.
        #[arg(long)]
        server_name: String,
        /// Where each plugin's SQLite database lives (`<data-dir>/<plugin>.db`).
        #[arg(long)]
        data_dir: PathBuf,
        /// A PostgreSQL URL (postgres://user:password@host/db) to use instead of SQLite, shared
        /// by all plugins — and by several `trestle` processes, if you run more than one.
        #[arg(long)]
        database: Option<String>,
        /// A plugin and its registration file, as NAME=FILE. Repeat for several.
        #[arg(long = "plugin", value_name = "NAME=FILE", required = true)]
        plugins: Vec<String>,
    },
}

fn find_plugin(name: &str) -> Result<Plugin, String> {
    PLUGINS
        .iter()
        .copied()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = PLUGINS.iter().map(|p| p.name).collect();
            format!("unknown plugin `{name}`; known: {}", known.join(", "))
        })
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("trestle: {error}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Plugins => {
            for plugin in PLUGINS {
                println!("{}", plugin.name);
            }
            Ok(())
        }
        Command::Registration {
            plugin,
            url,
            server_name,
            output,
        } => {
            let plugin = find_plugin(&plugin)?;
            let registration = if output.exists() {
                // Tokens stay stable: the homeserver has the old file loaded.
                let mut existing = Registration::from_file(&output).map_err(|e| e.to_string())?;
                existing.url = Some(url);
                existing
            } else {
                plugin.generate_registration(Some(url), &server_name)
            };
            if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            registration.write_file(&output).map_err(|e| e.to_string())
        }
        Command::Run {
            homeserver,
            server_name,
            data_dir,
            database,
            plugins,
        } => {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("{}: {e}", data_dir.display()))?;
            let mut tasks = Vec::new();
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            for spec in plugins {
                let (name, file) = spec
                    .split_once('=')
                    .ok_or_else(|| format!("--plugin {spec}: expected NAME=FILE"))?;
                let plugin = find_plugin(name)?;
                let registration = Registration::from_file(file).map_err(|e| e.to_string())?;
                let addr = listen_addr(&registration, file)?;
                let url = match &database {
                    Some(url) => url.clone(),
                    None => format!("sqlite://{}", data_dir.join(format!("{name}.db")).display()),
                };
                let store = Store::connect(&url)
                    .await
                    .map_err(|e| format!("database {url}: {e}"))?;
                let app =
                    Appservice::builder(registration, homeserver.clone(), server_name.clone())
                        .router((plugin.router)())
                        .store(store)
                        .build()
                        .await
                        .map_err(|e| format!("{name}: {e}"))?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("{name}: bind {addr}: {e}"))?;
                let mut stop = stop_rx.clone();
                tasks.push(tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    if let Err(error) = app.run(listener, shutdown).await {
                        tracing::error!(plugin = plugin.name, %error, "plugin stopped");
                    }
                }));
            }
            shutdown_signal().await;
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
            for task in tasks {
                let _ = task.await;
            }
            Ok(())
        }
    }
}

fn listen_addr(registration: &Registration, file: &str) -> Result<SocketAddr, String> {
    let url = registration.url.as_deref().ok_or_else(|| {
        format!("{file}: field `url`: is null, so the homeserver cannot reach the plugin")
    })?;
    let parsed = url::Url::parse(url).map_err(|e| format!("{file}: field `url`: {e}"))?;
    let host = parsed
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']']);
    let port = parsed.port_or_known_default().unwrap_or(80);
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("0.0.0.0:{port}").parse())
        .map_err(|e| format!("{file}: field `url`: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
