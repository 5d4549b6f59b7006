//! A byte-rate token bucket for one direction of one session.

use std::time::Instant;

use crate::token_bucket;

/// Tokens are counted in byte-nanoseconds, so the refill is exact for any rate and any spacing
/// of calls (no rounding loss when frames arrive microseconds apart).
const NANOS: u128 = 1_000_000_000;

/// A token bucket: `rate` bytes per second sustained, up to `burst` bytes at once. The workspace's
/// one [`token_bucket::TokenBucket`], ticking in nanoseconds since its first use.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    /// Bytes per second (= byte-nanoseconds per nanosecond); 0 means unlimited.
    rate: u64,
    /// Capacity, in byte-nanoseconds.
    capacity: u128,
    bucket: token_bucket::TokenBucket<u128>,
    /// Tick 0: the first use (the bucket starts full); `None` until then.
    epoch: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u64, burst: u64) -> TokenBucket {
        let capacity = u128::from(burst) * NANOS;
        TokenBucket {
            rate,
            capacity,
            bucket: token_bucket::TokenBucket::full(capacity),
            epoch: None,
        }
    }

    /// Takes `bytes` tokens if the bucket holds that many; otherwise takes nothing.
    pub(crate) fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let epoch = *self.epoch.get_or_insert(now);
        // u64 nanoseconds last 584 years.
        let tick =
            u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
        let cost = (bytes as u128) * NANOS;
        self.bucket
            .take(cost, tick, u128::from(self.rate), self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_exact_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 500);
        assert!(bucket.take(500, start));
        assert!(!bucket.take(1, start));
        // 1000 bytes/s is one byte per millisecond, even in microsecond steps.
        let mut t = start;
        let mut taken = 0;
        for _ in 0..10_000 {
            t += Duration::from_micros(1);
            if bucket.take(1, t) {
                taken += 1;
            }
        }
        assert_eq!(taken, 10, "10 ms at 1000 B/s");
        // A long pause fills the bucket to its burst, not beyond.
        let later = t + Duration::from_secs(60);
        assert!(bucket.take(500, later));
        assert!(!bucket.take(1, later));
        // Time going backwards takes nothing back and gives nothing.
        assert!(!bucket.take(1, start));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0, 0);
        assert!((0..1000).all(|_| bucket.take(65_000, now)));
    }
}
