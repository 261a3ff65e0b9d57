//! Counters an operator wants to see, served as Prometheus text at `/metrics`, labelled by
//! plugin (appservice).

use crate::sync::MutexExt;
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::{
    Appservice,
    store::{Backlog, now_ms},
};

/// One appservice's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    transactions: AtomicU64,
    reused_ids: AtomicU64,
    repeated_events: AtomicU64,
    skipped: AtomicU64,
    handled: AtomicU64,
    handling_micros: AtomicU64,
    handler_failures: AtomicU64,
    handler_panics: AtomicU64,
    events_by_type: Mutex<HashMap<String, u64>>,
    homeserver_errors: Mutex<HashMap<String, u64>>,
    journal_commit_failures: AtomicU64,
    journal_stalled: AtomicBool,
    delayed_answers: AtomicU64,
    delayed_micros: AtomicU64,
    /// Where processes share the store: the leases this one holds, and those it took over
    /// from processes that died, as of its last heartbeat.
    leases_held: AtomicU64,
    lease_takeovers: AtomicU64,
    /// Gauges a plugin sets itself (`Appservice::set_gauge`), by name and extra labels.
    gauges: Mutex<BTreeMap<GaugeKey, (&'static str, f64)>>,
}

/// A plugin's gauge: its name and extra labels.
type GaugeKey = (&'static str, Vec<(String, String)>);

impl Metrics {
    pub(crate) fn transaction(&self, skipped: usize) {
        self.transactions.fetch_add(1, Relaxed);
        self.skipped.fetch_add(skipped as u64, Relaxed);
    }

    /// A transaction id the homeserver used again for other contents.
    pub(crate) fn reused_id(&self) {
        self.reused_ids.fetch_add(1, Relaxed);
    }

    /// Events not handled again, having come before in another transaction.
    pub(crate) fn repeated_events(&self, count: usize) {
        self.repeated_events.fetch_add(count as u64, Relaxed);
    }

    pub(crate) fn handled(&self, event_type: Option<&str>, took: Duration) {
        self.handled.fetch_add(1, Relaxed);
        self.handling_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        let mut types = self.events_by_type.lock_unpoisoned();
        // A type counted before (nearly every event) is found once, and not copied.
        if let Some(count) = event_type.and_then(|t| types.get_mut(t)) {
            *count += 1;
            return;
        }
        // Event types are chosen by remote users; cap the label set so they cannot blow it up.
        let key = match event_type {
            Some(t) if types.contains_key(t) || types.len() < 200 => t.to_owned(),
            Some(_) => "other".to_owned(),
            None => "none".to_owned(),
        };
        *types.entry(key).or_default() += 1;
    }

    pub(crate) fn handler_failed(&self) {
        self.handler_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn handler_panicked(&self) {
        self.handler_panics.fetch_add(1, Relaxed);
    }

    /// A commit of the inbox journal failed (or its file could not be emptied).
    pub(crate) fn journal_commit_failed(&self) {
        self.journal_commit_failures.fetch_add(1, Relaxed);
    }

    /// Whether received transactions are refused because the journal cannot be committed.
    pub(crate) fn journal_stalled(&self, stalled: bool) {
        self.journal_stalled.store(stalled, Relaxed);
    }

    /// A transaction that waited for the handlers to catch up (`queues/admission.rs`).
    pub(crate) fn answer_delayed(&self, waited: Duration) {
        self.delayed_answers.fetch_add(1, Relaxed);
        self.delayed_micros
            .fetch_add(waited.as_micros() as u64, Relaxed);
    }

    /// What this process holds among those sharing the store, at its heartbeat.
    pub(crate) fn leases(&self, held: u64, takeovers: u64) {
        self.leases_held.store(held, Relaxed);
        self.lease_takeovers.store(takeovers, Relaxed);
    }

    /// Sets a plugin's own gauge.
    pub(crate) fn set_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.gauges
            .lock_unpoisoned()
            .insert((name, labels), (help, value));
    }

    pub(crate) fn homeserver_error(&self, errcode: &str) {
        let mut errors = self.homeserver_errors.lock_unpoisoned();
        *errors.entry(errcode.to_owned()).or_default() += 1;
    }

    /// Adds this appservice's samples to `families`.
    pub(crate) fn collect(
        &self,
        appservice: &str,
        inbox: Option<Backlog>,
        outbox: Option<Backlog>,
        in_flight: usize,
        families: &mut Families,
    ) {
        let now = now_ms();
        // -1 says the store could not tell, which an alert on depth or age must not read as 0.
        let depth = |b: Option<Backlog>| b.map_or(-1.0, |b| b.depth as f64);
        let age = |b: Option<Backlog>| b.map_or(-1.0, |b| b.oldest_age(now).as_secs_f64());
        let l = |extra: &[(&str, &str)]| {
            let mut labels = vec![("appservice".to_owned(), appservice.to_owned())];
            labels.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            labels
        };
        let mut add =
            |name: &'static str, kind: &'static str, help: &'static str, labels, value: f64| {
                families.add(name, kind, help, labels, value);
            };
        add(
            "trestle_transactions_total",
            "counter",
            "Transactions received from the homeserver (resends not counted).",
            l(&[]),
            self.transactions.load(Relaxed) as f64,
        );
        add(
            "trestle_transaction_ids_reused_total",
            "counter",
            "Transactions whose id the homeserver had used before for other contents (stored and \
             handled as new: Synapse on SQLite reuses ids after a restart).",
            l(&[]),
            self.reused_ids.load(Relaxed) as f64,
        );
        add(
            "trestle_events_repeated_total",
            "counter",
            "Events that came again in another transaction and were not handled again.",
            l(&[]),
            self.repeated_events.load(Relaxed) as f64,
        );
        add(
            "trestle_events_malformed_total",
            "counter",
            "Events skipped because they did not parse.",
            l(&[]),
            self.skipped.load(Relaxed) as f64,
        );
        add(
            "trestle_events_handled_total",
            "counter",
            "Events handled, all types.",
            l(&[]),
            self.handled.load(Relaxed) as f64,
        );
        for (event_type, count) in self.events_by_type.lock_unpoisoned().iter() {
            add(
                "trestle_events_handled_by_type_total",
                "counter",
                "Events handled, by event type.",
                l(&[("type", event_type)]),
                *count as f64,
            );
        }
        add(
            "trestle_handling_seconds_total",
            "counter",
            "Time spent handling events.",
            l(&[]),
            self.handling_micros.load(Relaxed) as f64 / 1e6,
        );
        add(
            "trestle_handler_failures_total",
            "counter",
            "Handler calls that returned an error.",
            l(&[]),
            self.handler_failures.load(Relaxed) as f64,
        );
        add(
            "trestle_handler_panics_total",
            "counter",
            "Handler calls that panicked (contained).",
            l(&[]),
            self.handler_panics.load(Relaxed) as f64,
        );
        for (errcode, count) in self.homeserver_errors.lock_unpoisoned().iter() {
            add(
                "trestle_homeserver_errors_total",
                "counter",
                "Errors answered by the homeserver, by errcode.",
                l(&[("errcode", errcode)]),
                *count as f64,
            );
        }
        add(
            "trestle_journal_commit_failures_total",
            "counter",
            "Failed attempts to commit the inbox journal to the database, or to empty its file.",
            l(&[]),
            self.journal_commit_failures.load(Relaxed) as f64,
        );
        add(
            "trestle_journal_stalled",
            "gauge",
            "1 while received transactions are refused because the inbox journal cannot be \
             committed (see /health/ready for why).",
            l(&[]),
            u8::from(self.journal_stalled.load(Relaxed)) as f64,
        );
        add(
            "trestle_events_in_flight",
            "gauge",
            "Events handed to the handlers and not yet handled, in this process; past the bound \
             (max_in_flight) the next transaction waits.",
            l(&[]),
            in_flight as f64,
        );
        add(
            "trestle_transactions_delayed_total",
            "counter",
            "Transactions that waited for the handlers to catch up before they were taken.",
            l(&[]),
            self.delayed_answers.load(Relaxed) as f64,
        );
        add(
            "trestle_transactions_delayed_seconds_total",
            "counter",
            "Time transactions waited for the handlers to catch up.",
            l(&[]),
            self.delayed_micros.load(Relaxed) as f64 / 1e6,
        );
        add(
            "trestle_leases_held",
            "gauge",
            "Rooms' queues and singleton services this process holds, where processes share \
             a PostgreSQL store (docs/scaling.md).",
            l(&[]),
            self.leases_held.load(Relaxed) as f64,
        );
        add(
            "trestle_lease_takeovers_total",
            "counter",
            "Leases this process took over from a process that let them run out (died or \
             stalled).",
            l(&[]),
            self.lease_takeovers.load(Relaxed) as f64,
        );
        for ((name, extra), (help, value)) in self.gauges.lock_unpoisoned().iter() {
            let extra: Vec<(&str, &str)> = extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            add(name, "gauge", help, l(&extra), *value);
        }
        add(
            "trestle_inbox_depth",
            "gauge",
            "Events received and not yet handled.",
            l(&[]),
            depth(inbox),
        );
        add(
            "trestle_inbox_oldest_age_seconds",
            "gauge",
            "How long the oldest event not yet handled has waited (0 when none waits).",
            l(&[]),
            age(inbox),
        );
        add(
            "trestle_outbox_depth",
            "gauge",
            "Requests waiting to be sent to the homeserver.",
            l(&[]),
            depth(outbox),
        );
        add(
            "trestle_outbox_oldest_age_seconds",
            "gauge",
            "How long the oldest request not yet sent has waited (0 when none waits).",
            l(&[]),
            age(outbox),
        );
    }
}

/// A metric's kind, help text, and samples (labels and value).
type Family = (
    &'static str,
    &'static str,
    Vec<(Vec<(String, String)>, f64)>,
);

/// The Prometheus text exposition of several appservices served together, each sample labelled
/// with its `appservice` name: one family per metric, so the text stays valid. A queue depth
/// the store cannot tell is -1. Public for a host of several plugins (crate `trestle-host`);
/// an appservice alone serves its own at `/metrics`.
pub async fn exposition<'a>(apps: impl IntoIterator<Item = (&'a str, &'a Appservice)>) -> String {
    let mut families = Families::default();
    for (name, app) in apps {
        let inbox = app.inbox_backlog().await.ok();
        let outbox = app.outbox_backlog().await.ok();
        app.metrics()
            .collect(name, inbox, outbox, app.events_in_flight(), &mut families);
    }
    families.render()
}

/// Samples grouped by metric, so several appservices render as one valid exposition.
#[derive(Debug, Default)]
pub(crate) struct Families {
    families: BTreeMap<&'static str, Family>,
}

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: Vec<(String, String)>,
        value: f64,
    ) {
        self.families
            .entry(name)
            .or_insert((kind, help, Vec::new()))
            .2
            .push((labels, value));
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (name, (kind, help, samples)) in &self.families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}=\"{}\"",
                            v.replace('\\', "\\\\")
                                .replace('"', "\\\"")
                                .replace('\n', "\\n")
                        )
                    })
                    .collect();
                let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_appservices_render_one_family_each() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.transaction(1);
        a.handled(Some("m.room.message"), Duration::from_millis(2));
        b.homeserver_error("M_FORBIDDEN");
        b.handler_panicked();
        b.journal_commit_failed();
        b.journal_stalled(true);
        b.set_gauge("plugin_things", "Things.", &[("kind", "x")], 3.0);
        b.set_gauge("plugin_things", "Things.", &[("kind", "x")], 2.0);
        let mut families = Families::default();
        let waiting = |depth, waited_ms| Backlog {
            depth,
            oldest_ms: Some(now_ms() - waited_ms),
        };
        a.collect(
            "echo",
            Some(Backlog::default()),
            Some(waiting(1, 5_000)),
            0,
            &mut families,
        );
        b.collect("ping", Some(waiting(2, 90_000)), None, 0, &mut families);
        let text = families.render();
        assert_eq!(
            text.matches("# TYPE trestle_transactions_total counter")
                .count(),
            1
        );
        assert!(text.contains("trestle_transactions_total{appservice=\"echo\"} 1\n"));
        assert!(text.contains("trestle_transactions_total{appservice=\"ping\"} 0\n"));
        assert!(text.contains(
            "trestle_events_handled_by_type_total{appservice=\"echo\",type=\"m.room.message\"} 1\n"
        ));
        assert!(text.contains(
            "trestle_homeserver_errors_total{appservice=\"ping\",errcode=\"M_FORBIDDEN\"} 1\n"
        ));
        assert!(text.contains("trestle_handler_panics_total{appservice=\"ping\"} 1\n"));
        assert!(text.contains("trestle_inbox_depth{appservice=\"ping\"} 2\n"));
        assert!(text.contains("trestle_journal_commit_failures_total{appservice=\"ping\"} 1\n"));
        assert!(text.contains("trestle_journal_stalled{appservice=\"ping\"} 1\n"));
        assert!(text.contains("trestle_journal_stalled{appservice=\"echo\"} 0\n"));
        let sample = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(
            sample("trestle_inbox_oldest_age_seconds{appservice=\"echo\"}"),
            0.0
        );
        let echo_outbox = sample("trestle_outbox_oldest_age_seconds{appservice=\"echo\"}");
        assert!((5.0..6.0).contains(&echo_outbox), "{echo_outbox}");
        let ping_inbox = sample("trestle_inbox_oldest_age_seconds{appservice=\"ping\"}");
        assert!((90.0..91.0).contains(&ping_inbox), "{ping_inbox}");
        // A store that cannot tell is not an empty queue.
        assert_eq!(sample("trestle_outbox_depth{appservice=\"ping\"}"), -1.0);
        assert_eq!(
            sample("trestle_outbox_oldest_age_seconds{appservice=\"ping\"}"),
            -1.0
        );
        assert!(text.contains("# TYPE plugin_things gauge\n"));
        assert!(text.contains("plugin_things{appservice=\"ping\",kind=\"x\"} 2\n"));
    }

    /// The Grafana dashboard and the alert rules in `contrib/` name only metrics that exist:
    /// a renamed metric would otherwise leave an empty panel and an alert that never fires.
    #[test]
    fn contrib_names_only_metrics_that_exist() {
        let metrics = Metrics::default();
        metrics.transaction(1);
        metrics.handled(Some("m.room.message"), Duration::from_millis(1));
        metrics.homeserver_error("M_FORBIDDEN");
        let mut families = Families::default();
        metrics.collect("echo", None, None, 0, &mut families);
        let text = families.render();
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let root = repo.join("contrib");
        // The bridge kit's own gauges (`Appservice::set_gauge`), named in its sources.
        let kit: String = std::fs::read_dir(repo.join("bridges/kit/src"))
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
            .collect();
        let mut named = 0;
        for file in ["grafana/trestle.json", "prometheus/trestle-alerts.yml"] {
            let contents = std::fs::read_to_string(root.join(file)).unwrap();
            for (at, _) in contents.match_indices("trestle_") {
                let name: String = contents[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let exists = if name.starts_with("trestle_bridge_") {
                    kit.contains(&format!("\"{name}\""))
                } else {
                    text.contains(&format!("# TYPE {name} "))
                };
                assert!(
                    exists,
                    "{file} names `{name}`, which /metrics does not have"
                );
                named += 1;
            }
        }
        assert!(named > 20, "only {named} metric names found in contrib/");
    }
}
