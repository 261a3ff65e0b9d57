//! The tokio runtime an appservice's binary starts, shaped by what measured best on this
//! machine's kind (`docs/benchmarks.md`, "Threads on one core: the runtime's shape").

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// Builds a tokio runtime, I/O and timers on, whose tasks run on `threads` threads: `Some(1)`
/// the calling thread alone (a current-thread runtime), `Some(n)` a multi-thread runtime of `n`
/// workers; `Some(0)` is an `InvalidInput` error.
///
/// `None` is one worker per CPU this process may run on (its affinity and CPU quota, as
/// tokio counts them; `TOKIO_WORKER_THREADS` if set), except where that is one CPU: then the
/// calling thread alone. One worker thread has the same parallelism as the calling thread, and
/// pinned to one core it spent 15–20% more CPU per event at B=50 in the benchmark (the
/// multi-thread scheduler's own work per task), and answered no faster. Blocking work (SQLite's
/// connection threads, `spawn_blocking`) has threads of its own in every case.
pub fn build(threads: Option<usize>) -> std::io::Result<Runtime> {
    let threads = threads.or_else(|| {
        let one_cpu = std::thread::available_parallelism().map_or(1, NonZeroUsize::get) == 1;
        (one_cpu && std::env::var_os("TOKIO_WORKER_THREADS").is_none()).then_some(1)
    });
    let mut builder = match threads {
        // tokio's builder panics on no workers.
        Some(0) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a runtime needs at least one thread",
            ));
        }
        Some(1) => Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    /// No threads is an error for the caller to report, not tokio's panic.
    #[test]
    fn no_threads_is_an_error() {
        let error = super::build(Some(0)).err().map(|e| e.kind());
        assert_eq!(error, Some(std::io::ErrorKind::InvalidInput));
        assert!(super::build(Some(1)).is_ok());
    }
}
