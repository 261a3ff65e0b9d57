//! `trestle`: the host that runs Trestle's bundled plugins. Everything here is argument
//! handling; the work is in the `trestle` library (`config`, `host`).

mod check;
mod delivery;
mod status;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use trestle::Plugin;
use trestle_host::{
    EncryptionInstaller, Host,
    config::{Config, LogFormat, RuntimeConfig, default_config, write_config},
    enabled_plugins, ensure_registration,
};

/// Every plugin this binary can run.
const PLUGINS: &[Plugin] = &[
    trestle_echo::PLUGIN,
    trestle_ping::PLUGIN,
    trestle_timeline::PLUGIN,
    trestle_moderation::PLUGIN,
    trestle_notify::PLUGIN,
    trestle_irc::PLUGIN,
    trestle_xmpp::PLUGIN,
];

/// End-to-end encryption for the plugins configured with `encryption: true`.
const ENCRYPTION: Option<EncryptionInstaller> = Some(trestle_crypto::install_in_host);

#[derive(Parser)]
#[command(
    name = "trestle",
    version,
    about = "Runs Matrix application services built on Trestle"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "TRESTLE_CONFIG",
        default_value = "trestle.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a commented configuration to start from.
    Init {
        /// The homeserver's server name (the part after `:` in user ids).
        #[arg(long)]
        server_name: String,
        /// The homeserver's client-server API URL.
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        homeserver_url: String,
        /// Where the plugins listen.
        #[arg(long, default_value = "127.0.0.1:29300")]
        listen: SocketAddr,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Prints a plugin's registration, making it (with fresh tokens) the first time; later
    /// calls print the same tokens. Give the file it lives in to the homeserver.
    Registration {
        /// The plugin.
        plugin: String,
        /// Print the registration file's path instead of its contents.
        #[arg(long)]
        path: bool,
    },
    /// Checks the configuration, the homeserver, and each plugin's registration with it.
    Check,
    /// Runs the enabled plugins until Ctrl-C or SIGTERM.
    Run {
        /// What this process does where several share a PostgreSQL database: all, matrix
        /// (transactions and handlers) or connections (services); overrides `role` in the
        /// configuration (docs/scaling.md).
        #[arg(long)]
        role: Option<trestle::Role>,
    },
    /// Shows, from the database, the processes sharing it: each one's role and last heartbeat,
    /// what it holds and for how long, and the queues' depths (docs/scaling.md).
    Status,
    /// Lists the bundled plugins, one name per line.
    Plugins {
        /// Only those the configuration runs (turned on, or on by default and not turned off).
        #[arg(long)]
        enabled: bool,
    },
}

/// mimalloc rather than the C library's malloc: at fifty events a transaction, glibc's
/// malloc and free were 13% of an echo's CPU, and with mimalloc an event costs a tenth less
/// (`docs/benchmarks.md`, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match runtime_for(&cli) {
        Ok((runtime, config)) => runtime.block_on(run(cli, config)),
        Err(error) => Err(error),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("trestle: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime `run` asks for in the configuration (`runtime.threads`), which has to be read
/// before the runtime starts, with the configuration read, for `run` to use; the other
/// commands do little and take the default.
fn runtime_for(cli: &Cli) -> Result<(tokio::runtime::Runtime, Option<Config>), String> {
    let config = match cli.command {
        Command::Run { .. } => Some(Config::load(&cli.config).map_err(|e| e.to_string())?),
        _ => None,
    };
    let runtime = config
        .as_ref()
        .map_or(&RuntimeConfig::default(), |config| &config.runtime)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    Ok((runtime, config))
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = config.logging.level.as_deref().unwrap_or("info");
        tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.logging.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Carries out `cli`'s command; `loaded` is the configuration `run` was started with.
async fn run(cli: Cli, loaded: Option<Config>) -> Result<ExitCode, String> {
    match cli.command {
        Command::Plugins { enabled: false } => {
            for plugin in PLUGINS {
                println!("{}", plugin.name);
            }
        }
        Command::Plugins { enabled: true } => {
            let config = Config::load(&cli.config).map_err(|e| e.to_string())?;
            for plugin in enabled_plugins(&config, PLUGINS).map_err(|e| e.to_string())? {
                println!("{}", plugin.name);
            }
        }
        Command::Init {
            server_name,
            homeserver_url,
            listen,
            force,
        } => {
            if cli.config.exists() && !force {
                return Err(format!(
                    "{} exists; pass --force to replace it",
                    cli.config.display()
                ));
            }
            let text = default_config(&server_name, &homeserver_url, listen, PLUGINS);
            write_config(&cli.config, &text).map_err(|e| e.to_string())?;
            eprintln!("wrote {}", cli.config.display());
        }
        Command::Registration { plugin, path } => {
            let config = Config::load(&cli.config).map_err(|e| e.to_string())?;
            let plugin = find_plugin(&plugin)?;
            let registration = ensure_registration(&config, &plugin).map_err(|e| e.to_string())?;
            let file = config.registration_path(plugin.name);
            if path {
                println!("{}", file.display());
            } else {
                print!("{}", registration.to_yaml());
            }
        }
        Command::Check => return check::check(&cli.config, PLUGINS, ENCRYPTION).await,
        Command::Status => {
            let config = Config::load(&cli.config).map_err(|e| e.to_string())?;
            let plugins = enabled_plugins(&config, PLUGINS).map_err(|e| e.to_string())?;
            print!("{}", status::report(&config, &plugins).await?);
        }
        Command::Run { role } => {
            let mut config = match loaded {
                Some(config) => config,
                None => Config::load(&cli.config).map_err(|e| e.to_string())?,
            };
            if let Some(role) = role {
                config.role = role;
            }
            init_logging(&config);
            let host = Host::with_encryption(&config, PLUGINS, ENCRYPTION)
                .await
                .map_err(|e| e.to_string())?;
            let listener = TcpListener::bind(config.listen).await.map_err(|e| {
                format!(
                    "{}: field `listen`: cannot listen on {}: {e}",
                    config.path.display(),
                    config.listen
                )
            })?;
            host.run(listener, shutdown_signal())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
    tracing::info!("shutting down: finishing in-flight work");
}
