//! `trestle check`: says what works and what does not, in plain words, and what to change
//! (the file and the field): the configuration; for each enabled plugin its encryption mode,
//! its registration's flags and its own check (a bridge's network); the homeserver; and the
//! homeserver reaching each plugin with its registration.

use std::{path::Path, process::ExitCode};

use tokio::net::TcpListener;
use trestle::{Plugin, plugin::Finding};
use trestle_host::{
    EncryptionInstaller, Host, check::plugin_findings, config::Config, enabled_plugins,
};

use crate::delivery;

/// Runs every check on the configuration at `path` for the plugins of `available`; the exit
/// code says whether one failed.
pub async fn check(
    path: &Path,
    available: &[Plugin],
    encryption: Option<EncryptionInstaller>,
) -> Result<ExitCode, String> {
    let config = match Config::load(path) {
        Ok(config) => {
            println!("ok    configuration {} is valid", path.display());
            config
        }
        Err(error) => {
            println!("FAIL  configuration: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let plugins = enabled_plugins(&config, available).map_err(|e| e.to_string())?;
    let mut failed = false;
    // What needs no homeserver first: a homeserver that is down hides none of it.
    for plugin in &plugins {
        for finding in plugin_findings(&config, plugin).await {
            failed |= matches!(finding, Finding::Fail(_));
            println!("{}", line(&finding));
        }
    }
    let homeserver = match config.homeserver_url().await {
        Ok(url) => url,
        Err(error) => {
            println!("FAIL  homeserver: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match reqwest::get(format!("{homeserver}/_matrix/client/versions")).await {
        Ok(response) if response.status().is_success() => {
            println!("ok    homeserver {homeserver} answers")
        }
        Ok(response) => {
            println!(
                "FAIL  homeserver {homeserver} answered {} to /_matrix/client/versions",
                response.status()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => {
            println!("FAIL  homeserver {homeserver} is not reachable: {error}");
            return Ok(ExitCode::FAILURE);
        }
    }
    let host = match Host::with_encryption(&config, available, encryption).await {
        Ok(host) => host,
        Err(error) => {
            println!("FAIL  {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The homeserver pings the plugins at their URL: serve them for the check, unless a
    // running `trestle run` already does.
    let serving = match TcpListener::bind(config.listen).await {
        Ok(listener) => {
            let router = host.router();
            Some(tokio::spawn(
                async move { axum_serve(listener, router).await },
            ))
        }
        Err(_) => {
            println!(
                "note  {} is in use (a running trestle?); checking through it",
                config.listen
            );
            None
        }
    };
    for (name, outcome) in host.check().await {
        match outcome {
            Ok(rtt) => println!(
                "ok    {name}: the homeserver reached the plugin in {} ms",
                rtt.as_millis()
            ),
            Err(reason) => {
                failed = true;
                println!("FAIL  {reason}");
            }
        }
    }
    if let Some(task) = serving {
        task.abort();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for plugin in &plugins {
        if config
            .plugins
            .get(plugin.name)
            .is_some_and(|s| s.encryption())
        {
            let line = delivery::line(plugin.name, &config.crypto_dir(plugin.name), now);
            failed |= line.starts_with("FAIL");
            println!("{line}");
        }
    }
    if plugins.is_empty() {
        println!("note  no plugin is enabled");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A finding as a line of the report.
fn line(finding: &Finding) -> String {
    match finding {
        Finding::Ok(text) => format!("ok    {text}"),
        Finding::Note(text) => format!("note  {text}"),
        Finding::Fail(text) => format!("FAIL  {text}"),
    }
}

async fn axum_serve(listener: TcpListener, router: axum::Router) {
    let _ = axum::serve(listener, router).await;
}
