//! Counters an operator wants to see, served as Prometheus text at `/metrics`.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// The appservice's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    transactions: AtomicU64,
    items: AtomicU64,
    skipped: AtomicU64,
    handled: AtomicU64,
    handling_micros: AtomicU64,
}

impl Metrics {
    pub(crate) fn transaction(&self, items: usize, skipped: usize) {
        self.transactions.fetch_add(1, Relaxed);
        self.items.fetch_add(items as u64, Relaxed);
        self.skipped.fetch_add(skipped as u64, Relaxed);
    }

    pub(crate) fn handled(&self, took: Duration) {
        self.handled.fetch_add(1, Relaxed);
        self.handling_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition of the counters and the two queue depths.
    pub(crate) fn render(&self, appservice: &str, inbox_depth: i64, outbox_depth: i64) -> String {
        let mut out = String::new();
        let label = format!(
            "{{appservice=\"{}\"}}",
            appservice.replace(['"', '\\', '\n'], "_")
        );
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{label} {value}"
            );
        };
        metric(
            "trestle_transactions_total",
            "counter",
            "Transactions received (not counting resends).",
            self.transactions.load(Relaxed).to_string(),
        );
        metric(
            "trestle_events_received_total",
            "counter",
            "Items stored in the inbox.",
            self.items.load(Relaxed).to_string(),
        );
        metric(
            "trestle_events_malformed_total",
            "counter",
            "Items skipped as malformed.",
            self.skipped.load(Relaxed).to_string(),
        );
        metric(
            "trestle_events_handled_total",
            "counter",
            "Items handled.",
            self.handled.load(Relaxed).to_string(),
        );
        metric(
            "trestle_handling_seconds_total",
            "counter",
            "Time spent handling items.",
            format!("{:.6}", self.handling_micros.load(Relaxed) as f64 / 1e6),
        );
        metric(
            "trestle_inbox_depth",
            "gauge",
            "Items received and not yet handled.",
            inbox_depth.to_string(),
        );
        metric(
            "trestle_outbox_depth",
            "gauge",
            "Requests waiting to be sent to the homeserver.",
            outbox_depth.to_string(),
        );
        out
    }
}
