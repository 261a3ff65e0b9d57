//! Shared pieces of Trestle's benchmarks.
//!
//! The benchmark of `docs/benchmarks.md` has three binaries: `bench` (the driver: it plays the
//! homeserver and pushes transactions), `bench-echo` (the echo appservice on Trestle) and
//! `null-appservice` (the least an appservice can do, the yardstick). The driver's parts live
//! here as modules so they can be tested without a socket. `bench-scale` uses them too, for
//! `bench-echo` as several processes on one PostgreSQL database (`docs/scaling.md`).

pub mod app_args;
pub mod arrivals;
pub mod child;
pub mod homeserver;
pub mod load;
pub mod report;
pub mod server;
pub mod stats;

/// The process's resident set size now and its high-water mark, in KiB, from `/proc`.
pub fn rss_kib() -> (u64, u64) {
    memory("self").map_or((0, 0), |m| (m.rss_kib, m.hwm_kib))
}

/// Another process's resident set size and high-water mark, in KiB; `None` once it is gone.
pub fn rss_kib_of(pid: u32) -> Option<(u64, u64)> {
    memory_of(pid).map(|m| (m.rss_kib, m.hwm_kib))
}

/// A process's memory, in KiB, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident set size (`VmRSS`).
    pub rss_kib: u64,
    /// Its high-water mark (`VmHWM`).
    pub hwm_kib: u64,
    /// The anonymous part (`RssAnon`): heap, stacks, relocated data.
    pub anon_kib: u64,
    /// The file-backed part (`RssFile`): mostly the executable's code, shared with the page cache.
    pub file_kib: u64,
}

/// Another process's memory; `None` once it is gone.
pub fn memory_of(pid: u32) -> Option<Memory> {
    memory(&pid.to_string())
}

fn memory(pid: &str) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
    })
}

/// CPU time (user + system, all threads) a process has used so far; `None` once it is gone.
pub fn cpu_time_of(pid: u32) -> Option<std::time::Duration> {
    let fields = stat_fields(pid)?;
    Some(ticks(fields.get(10)? + fields.get(11)?))
}

/// The numeric fields of `/proc/<pid>/stat` after the command name and the state: ppid,
/// pgrp, session, tty, tpgid, flags, minflt, cminflt, majflt, cmajflt, utime (10), stime,
/// cutime, cstime, …; `None` once the process is gone.
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

/// A duration in USER_HZ ticks, the unit of `/proc/<pid>/stat`'s times (100 on every Linux
/// architecture Rust targets).
pub(crate) fn ticks(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        let memory = memory_of(me).unwrap();
        assert!(memory.rss_kib > 0 && memory.hwm_kib >= memory.rss_kib);
        assert!(memory.anon_kib + memory.file_kib <= memory.rss_kib);
        assert!(cpu_time_of(me).is_some());
        assert!(memory_of(u32::MAX).is_none());
    }
}
