//! The bridge's part of `trestle check`: each configured network is reachable, and answers a
//! registration (`001`) the way the bridge's own connections register.

use std::{future::Future, path::Path, pin::Pin, time::Duration};

use tokio::time::timeout;
use trestle::plugin::{Finding, PluginSettings};

use crate::{
    hub::client_config,
    irc::connection::{Client, Event},
    settings::{NetworkSettings, Settings},
};

/// How long a network has to connect and register the check's connection.
const WAIT: Duration = Duration::from_secs(20);

/// Connects to every network of `settings` and registers under a nick of its own (the
/// bot's, with `-check`: the running bridge keeps its nick), then quits.
pub(crate) fn check(
    settings: &PluginSettings<'_>,
) -> Pin<Box<dyn Future<Output = Vec<Finding>> + Send>> {
    let config = settings.config_path().to_path_buf();
    let read = settings.read_for_check(|s: Settings| s.check().map(|c| c.settings));
    Box::pin(async move {
        let settings = match read {
            Ok(settings) => settings,
            Err(finding) => return vec![finding],
        };
        if settings.networks.is_empty() {
            return vec![Finding::Note(format!(
                "irc: no network to bridge: add one under `plugins.irc.settings.networks` in {} \
                 (docs/irc.md)",
                config.display()
            ))];
        }
        let mut findings = Vec::new();
        for (i, network) in settings.networks.iter().enumerate() {
            findings.push(check_network(&config, i, network).await);
        }
        findings
    })
}

async fn check_network(config: &Path, index: usize, network: &NetworkSettings) -> Finding {
    let place = format!(
        "irc: network `{}` ({}:{}{})",
        network.name,
        network.host,
        network.port,
        if network.tls { ", TLS" } else { "" }
    );
    let field = format!(
        "`plugins.irc.settings.networks[{index}]` in {}",
        config.display()
    );
    let mut client_settings = client_config(network, &format!("{}-check", network.nick));
    if let (Some(account), Some(password)) = (&network.sasl_account, &network.sasl_password) {
        client_settings.sasl = Some((account.clone(), password.clone()));
    }
    let (client, mut events) = Client::spawn(client_settings);
    let outcome = timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            match event {
                Event::Registered { nick } => return Ok(nick),
                // The first failure says why; the connection would only try again.
                Event::Disconnected { reason } => return Err(reason),
                _ => {}
            }
        }
        Err("the connection ended".to_owned())
    })
    .await;
    client.quit("trestle check");
    // Until the connection has said goodbye, so the server sees a quit, not a dropped socket.
    let _ = timeout(Duration::from_secs(2), async {
        while events.recv().await.is_some() {}
    })
    .await;
    match outcome {
        Ok(Ok(nick)) => Finding::Ok(format!(
            "{place}: reachable, and it registered the check's connection as {nick}"
        )),
        Ok(Err(reason)) => Finding::Fail(format!(
            "{place}: {reason}; check `host`, `port` and `tls` of {field}, and that the IRC \
             server runs and lets this machine in"
        )),
        Err(_) => Finding::Fail(format!(
            "{place}: no registration reply (001) within {} s; check `host`, `port`, `tls` and \
             `password` of {field}",
            WAIT.as_secs()
        )),
    }
}
