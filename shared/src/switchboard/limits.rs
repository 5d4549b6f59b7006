//! A byte-rate token bucket for one direction of one session.

use std::time::Instant;

/// Tokens are counted in byte-nanoseconds, so the refill is exact for any rate and any spacing
/// of calls (no rounding loss when frames arrive microseconds apart).
const NANOS: u128 = 1_000_000_000;

/// A token bucket: `rate` bytes per second sustained, up to `burst` bytes at once.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    /// Capacity, in byte-nanoseconds.
    capacity: u128,
    /// Available, in byte-nanoseconds.
    tokens: u128,
    /// When the bucket was last refilled; `None` until first used (it starts full).
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u64, burst: u64) -> TokenBucket {
        let capacity = u128::from(burst) * NANOS;
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: None,
        }
    }

    /// Takes `bytes` tokens if the bucket holds that many; otherwise takes nothing.
    pub(crate) fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let last = *self.last.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last).as_nanos();
        self.last = Some(last.max(now));
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(u128::from(self.rate)))
            .min(self.capacity);
        let cost = (bytes as u128) * NANOS;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
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
