//! The one token bucket: `rate` tokens per second sustained, up to `burst` at once.
//!
//! Two limiters use it: the STUN server's per-source request limit
//! ([`crate::stun_server::RateLimiter`], one token per request, 65,536 packed buckets) and the
//! switchboard's per-direction byte rate (one token per byte). Both refill the same way, so the
//! arithmetic lives here once.
//!
//! # Units
//! Time is an integer tick count since the limiter's own epoch (the caller converts its `Instant`
//! once), and tokens are counted in *token-ticks*: one whole token is `ticks_per_second` units.
//! With that scale a rate of `r` tokens per second is exactly `r` units per tick, so a refill is
//! one multiplication with no division and no rounding loss, however close together the calls
//! are. The STUN limiter ticks in milliseconds and counts in `u64` (16 bytes per bucket, which
//! keeps its table small and its hot path to a few instructions); the switchboard ticks in
//! nanoseconds and counts in `u128` (a burst of many gigabytes does not overflow).
//!
//! The bucket itself stores only its level and its last tick; rate and capacity are passed on
//! every call, so a table of buckets that share one configuration does not repeat it.
//!
//! ```
//! use shared::token_bucket::TokenBucket;
//! // 100 tokens/s, burst 10, ticking in milliseconds: one token is 1000 units.
//! const TOKEN: u64 = 1000;
//! let (rate, capacity) = (100, 10 * TOKEN);
//! let mut bucket = TokenBucket::full(capacity);
//! assert_eq!((0..50).filter(|_| bucket.take(TOKEN, 0, rate, capacity)).count(), 10);
//! assert!(!bucket.take(TOKEN, 9, rate, capacity)); // 0.9 tokens after 9 ms
//! assert!(bucket.take(TOKEN, 10, rate, capacity)); // one token after 10 ms
//! ```

/// An unsigned integer a bucket can count in (`u64` or `u128`).
pub trait Units: Copy + Ord + std::fmt::Debug {
    /// `self + other`, saturating.
    fn saturating_add(self, other: Self) -> Self;
    /// `self * other`, saturating.
    fn saturating_mul(self, other: Self) -> Self;
    /// `self - other`; only called when `self >= other`.
    fn sub(self, other: Self) -> Self;
    /// A tick count in this type.
    fn from_ticks(ticks: u64) -> Self;
}

macro_rules! units {
    ($t:ty) => {
        impl Units for $t {
            #[inline(always)]
            fn saturating_add(self, other: Self) -> Self {
                <$t>::saturating_add(self, other)
            }
            #[inline(always)]
            fn saturating_mul(self, other: Self) -> Self {
                <$t>::saturating_mul(self, other)
            }
            #[inline(always)]
            fn sub(self, other: Self) -> Self {
                self - other
            }
            #[inline(always)]
            fn from_ticks(ticks: u64) -> Self {
                <$t>::from(ticks)
            }
        }
    };
}
units!(u64);
units!(u128);

/// One bucket's state: its level in token-ticks and the tick it was last refilled at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket<T> {
    tokens: T,
    last_tick: u64,
}

impl<T: Units> TokenBucket<T> {
    /// A bucket holding `capacity`, last refilled at tick 0.
    pub const fn full(capacity: T) -> Self {
        Self {
            tokens: capacity,
            last_tick: 0,
        }
    }

    /// Refills for the ticks since the last call (`rate` units per tick, up to `capacity`), then
    /// takes `cost` units if the bucket holds that many; otherwise takes nothing.
    ///
    /// A tick earlier than the last one refills nothing and does not move the bucket's clock
    /// back, so a clock that steps backwards can neither mint tokens nor lose them.
    #[inline(always)]
    pub fn take(&mut self, cost: T, now_tick: u64, rate: T, capacity: T) -> bool {
        let elapsed = now_tick.saturating_sub(self.last_tick);
        self.tokens = self
            .tokens
            .saturating_add(T::from_ticks(elapsed).saturating_mul(rate))
            .min(capacity);
        self.last_tick = self.last_tick.max(now_tick);
        if self.tokens >= cost {
            self.tokens = self.tokens.sub(cost);
            true
        } else {
            false
        }
    }

    /// The level, in token-ticks.
    pub fn tokens(&self) -> T {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the sequence of calls, the level never exceeds the capacity, and a take
        /// succeeds exactly when the refilled level covers it.
        #[test]
        fn never_exceeds_its_burst(
            rate in 0u64..10_000,
            burst in 1u64..1_000,
            steps in proptest::collection::vec((0u64..5_000, 0u64..3_000), 1..200),
        ) {
            let capacity = burst * 1000;
            let mut bucket = TokenBucket::full(capacity);
            let mut now = 0u64;
            for (advance, cost) in steps {
                now += advance;
                let before = bucket.tokens();
                let expected = (before + advance * rate).min(capacity);
                let took = bucket.take(cost, now, rate, capacity);
                prop_assert!(bucket.tokens() <= capacity);
                prop_assert_eq!(took, expected >= cost);
                prop_assert_eq!(bucket.tokens(), if took { expected - cost } else { expected });
            }
        }

        /// Drained and then taken from greedily, a bucket grants exactly `rate * elapsed` units
        /// over any span (in whole costs), plus at most its burst: the long-run rate is the
        /// configured one, with no rounding drift however the span is cut into calls.
        #[test]
        fn refills_at_its_rate(
            rate in 1u64..10_000,
            burst in 1u64..100,
            gaps in proptest::collection::vec(1u64..50, 1..400),
        ) {
            let token = 1000u64;
            let capacity = burst * token;
            let mut bucket = TokenBucket::full(capacity);
            while bucket.take(token, 0, rate, capacity) {}
            let mut now = 0u64;
            let mut granted = 0u64;
            for gap in gaps {
                now += gap;
                while bucket.take(token, now, rate, capacity) {
                    granted += 1;
                }
            }
            // Never more than the refill allows ...
            prop_assert!(granted * token <= now * rate);
            // ... and the bucket is never full while tokens were due, so nothing was lost to the
            // cap unless it was reached: what is left plus what was granted is all the refill.
            if now * rate < capacity {
                prop_assert_eq!(granted * token + bucket.tokens(), now * rate);
            }
        }

        /// Ticks that go backwards neither add nor remove tokens.
        #[test]
        fn a_clock_going_back_mints_nothing(rate in 1u64..1000, back in 0u64..100) {
            let capacity = 10_000u64;
            let mut bucket = TokenBucket::full(capacity);
            prop_assert!(bucket.take(capacity, 100, rate, capacity));
            prop_assert!(!bucket.take(1, 100 - back, rate, capacity));
            prop_assert_eq!(bucket.tokens(), 0);
        }
    }

    #[test]
    fn u128_units_hold_a_large_burst() {
        const NANOS: u128 = 1_000_000_000;
        let capacity = u128::from(u64::MAX) * NANOS;
        let mut bucket = TokenBucket::full(capacity);
        assert!(bucket.take(capacity, 0, 1, capacity));
        assert!(!bucket.take(1, 0, 1, capacity));
    }
}
