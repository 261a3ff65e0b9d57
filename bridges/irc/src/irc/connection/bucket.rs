//! Flood control: a token bucket per connection.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `burst` lines at once, then `rate` per second.
pub(super) struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(burst: u32, rate: f64) -> Self {
        let burst = f64::from(burst.max(1));
        Bucket {
            tokens: burst,
            burst,
            rate: rate.max(0.01),
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    pub(super) fn ready_at(&mut self) -> Instant {
        self.refill();
        if self.tokens >= 1.0 {
            Instant::now()
        } else {
            Instant::now() + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    pub(super) fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_rate() {
        let mut bucket = Bucket::new(3, 2.0);
        for _ in 0..3 {
            assert!(bucket.ready_at() <= Instant::now());
            bucket.take();
        }
        let wait = bucket.ready_at() - Instant::now();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        bucket.refill();
        assert_eq!(bucket.tokens, 3.0, "never more than the burst");
    }
}
