//! `runtime`: the shape of the tokio runtime `trestle run` starts, read before it starts.

use serde::Deserialize;

/// The tokio runtime the plugins run on (`runtime:` in the configuration; `docs/benchmarks.md`,
/// "Threads on one core", has the measurements behind it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// The threads that run the plugins' tasks. `1` runs them all on the main thread (a
    /// current-thread runtime): on a single core this spends less CPU per event than one worker
    /// thread, the multi-thread scheduler's own work per task saved (the context switches per
    /// event were the same). `N` above 1 is a multi-thread runtime with N workers. Unset, one
    /// worker per CPU the process may run on, or the main thread alone where that is one CPU
    /// ([`trestle::runtime::build`]). Blocking work (SQLite's connection threads, file reads)
    /// has threads of its own in every case.
    #[serde(default)]
    pub threads: Option<usize>,
}

impl RuntimeConfig {
    /// Builds the runtime this describes, with its I/O and timers on.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        trestle::runtime::build(self.threads)
    }
}
