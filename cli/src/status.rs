//! `trestle status`: the processes sharing the PostgreSQL database, read from it: each one's
//! role, machine and last heartbeat, what it holds (rooms' queues, singleton services) and for
//! how long still, and the queues' depths (docs/scaling.md).

use trestle::{
    Plugin, Registration, Store,
    store::{Cluster, StoreOptions, now_ms},
};
use trestle_host::config::Config;

/// The report for the enabled `plugins`, a paragraph each.
pub(crate) async fn report(config: &Config, plugins: &[Plugin]) -> Result<String, String> {
    let mut out = String::new();
    for plugin in plugins {
        let path = config.registration_path(plugin.name);
        if !path.exists() {
            out.push_str(&format!("{}: not registered yet\n", plugin.name));
            continue;
        }
        let registration = Registration::from_file(&path).map_err(|e| e.to_string())?;
        let database = config
            .database_url(plugin.name)
            .map_err(|e| e.to_string())?;
        let store = Store::connect_with(&database, StoreOptions::default().scope(plugin.name))
            .await
            .map_err(|e| format!("plugin {}: database: {e}", plugin.name))?;
        let id = &registration.id;
        let inbox = store.inbox_backlog(id).await.map_err(|e| e.to_string())?;
        let outbox = store.outbox_backlog(id).await.map_err(|e| e.to_string())?;
        let now = now_ms();
        out.push_str(&format!(
            "{}: inbox {} waiting (oldest {} s), outbox {} waiting (oldest {} s)\n",
            plugin.name,
            inbox.depth,
            inbox.oldest_age(now).as_secs(),
            outbox.depth,
            outbox.oldest_age(now).as_secs()
        ));
        if store.backend() == trestle::store::Backend::Sqlite {
            out.push_str("  one process (SQLite): no leases\n");
            continue;
        }
        let cluster = store.cluster(id).await.map_err(|e| e.to_string())?;
        out.push_str(&describe(&cluster, now));
    }
    Ok(out)
}

/// The processes of `cluster` and their leases at `now`, then leases no listed process holds.
fn describe(cluster: &Cluster, now: i64) -> String {
    let secs = |ms: i64| ms / 1000;
    let mut out = String::new();
    if cluster.processes.is_empty() {
        out.push_str("  no process running\n");
    }
    for process in &cluster.processes {
        out.push_str(&format!(
            "  process {} role {} on {} pid {}: started {} s ago, heartbeat {} s ago\n",
            process.owner,
            process.role,
            process.host,
            process.pid,
            secs(now - process.started_at),
            secs(now - process.heartbeat_at)
        ));
        for lease in cluster.leases.iter().filter(|l| l.owner == process.owner) {
            out.push_str(&format!(
                "    holds {} {} (renewed, runs out in {} s)\n",
                lease.scope,
                lease.key,
                secs(lease.expires_at - now)
            ));
        }
    }
    for lease in &cluster.leases {
        if !cluster.processes.iter().any(|p| p.owner == lease.owner) {
            out.push_str(&format!(
                "  lease {} {} of a process gone ({}): {}\n",
                lease.scope,
                lease.key,
                lease.owner,
                if lease.expires_at < now {
                    "run out, free to take".to_owned()
                } else {
                    format!("runs out in {} s", secs(lease.expires_at - now))
                }
            ));
        }
    }
    out
}
