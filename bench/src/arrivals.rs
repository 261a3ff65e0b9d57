//! When each echo reached the homeserver, keyed by the number in its body (`echo: <i>`).
//!
//! Written by the mock homeserver from many connections at once, so it is lock-free: one
//! atomic per expected echo holding the nanoseconds since `base` (plus one, so that zero means
//! "not yet").

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// Arrival times of the echoes `0..n` of one phase.
#[derive(Debug)]
pub struct Arrivals {
    base: Instant,
    at: Vec<AtomicU64>,
    arrived: AtomicUsize,
    duplicates: AtomicUsize,
    strays: AtomicUsize,
}

impl Arrivals {
    /// Expects the echoes `0..n`, timed from `base`.
    pub fn new(n: usize, base: Instant) -> Self {
        Arrivals {
            base,
            at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            arrived: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            strays: AtomicUsize::new(0),
        }
    }

    /// Nothing expected: every echo is a stray.
    pub fn none() -> Self {
        Self::new(0, Instant::now())
    }

    /// Records an arrival now of the message with `body`.
    pub fn record(&self, body: &str) {
        let now = self.base.elapsed().as_nanos() as u64 + 1;
        let Some(i) = echo_number(body).filter(|&i| i < self.at.len()) else {
            self.strays.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match self.at[i].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                self.arrived.fetch_add(1, Ordering::Release);
            }
            Err(_) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many of the expected echoes arrived.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::Acquire)
    }

    /// How many were expected.
    pub fn expected(&self) -> usize {
        self.at.len()
    }

    /// Echoes that arrived a second time.
    pub fn duplicates(&self) -> usize {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Messages that were no expected echo.
    pub fn strays(&self) -> usize {
        self.strays.load(Ordering::Relaxed)
    }

    /// When echo `i` arrived, if it did.
    pub fn at(&self, i: usize) -> Option<Instant> {
        match self.at.get(i)?.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.base + Duration::from_nanos(ns - 1)),
        }
    }

    /// When the last echo arrived.
    pub fn last(&self) -> Option<Instant> {
        let max = self.at.iter().map(|a| a.load(Ordering::Relaxed)).max()?;
        (max > 0).then(|| self.base + Duration::from_nanos(max - 1))
    }
}

/// The `<i>` of `echo: <i>`.
pub fn echo_number(body: &str) -> Option<usize> {
    body.strip_prefix("echo: ")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_recorded_once_by_number() {
        let base = Instant::now();
        let arrivals = Arrivals::new(3, base);
        arrivals.record("echo: 2");
        arrivals.record("echo: 2");
        arrivals.record("echo: 7");
        arrivals.record("hello");
        assert_eq!(arrivals.arrived(), 1);
        assert_eq!(arrivals.duplicates(), 1);
        assert_eq!(arrivals.strays(), 2);
        assert!(arrivals.at(2).is_some_and(|t| t >= base));
        assert_eq!(arrivals.at(0), None);
        assert_eq!(arrivals.last(), arrivals.at(2));
    }

    #[test]
    fn echo_numbers_parse() {
        assert_eq!(echo_number("echo: 42"), Some(42));
        assert_eq!(echo_number("echo: x"), None);
        assert_eq!(echo_number("!echo 42"), None);
    }
}
