//! A per-source token bucket in fixed memory.
//!
//! Sources hash into a fixed table of buckets instead of a map keyed by address: memory stays
//! constant under a flood of spoofed sources, there is nothing to evict, and a spoofed victim
//! address can never be pushed out of the table (which would lift its limit and let a reflection
//! attack through). Two sources that share a bucket share a budget; with 65,536 buckets and a
//! secret hash key that is rare and cannot be aimed at.

use std::hash::Hasher;
use std::net::IpAddr;
use std::time::Instant;

use siphasher::sip::SipHasher13;

use super::RateLimitConfig;
use crate::rng::SplitMix64;

const BUCKETS: usize = 1 << 16;
/// Tokens are counted in thousandths so a refill per millisecond is exact for any rate.
const MILLI: u64 = 1000;

#[derive(Clone, Copy)]
struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
}

/// Token buckets for source addresses.
pub struct RateLimiter {
    config: RateLimitConfig,
    epoch: Instant,
    hash_key: (u64, u64),
    buckets: Vec<Bucket>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter whose hash key comes from `seed` (give each server a random one) and whose
    /// clock starts at `now`.
    pub fn new(config: RateLimitConfig, seed: u64, now: Instant) -> Self {
        let mut keys = SplitMix64::new(seed);
        let hash_key = (keys.next_u64(), keys.next_u64());
        let full = Bucket {
            tokens_milli: u64::from(config.burst.max(1)) * MILLI,
            last_ms: 0,
        };
        let buckets = if config.per_second == 0 {
            Vec::new()
        } else {
            vec![full; BUCKETS]
        };
        Self {
            config,
            epoch: now,
            hash_key,
            buckets,
        }
    }

    /// Takes one token for `source` if it has one.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.config.per_second == 0 {
            return true;
        }
        let mut hasher = SipHasher13::new_with_keys(self.hash_key.0, self.hash_key.1);
        match source {
            IpAddr::V4(ip) => hasher.write(&ip.octets()),
            IpAddr::V6(ip) => hasher.write(&ip.octets()),
        }
        let index = (hasher.finish() as usize) & (BUCKETS - 1);
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let capacity = u64::from(self.config.burst.max(1)) * MILLI;
        let rate = u64::from(self.config.per_second);
        let bucket = &mut self.buckets[index];
        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        bucket.tokens_milli = bucket
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(capacity);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.tokens_milli >= MILLI {
            bucket.tokens_milli -= MILLI;
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
    fn burst_then_sustained_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(
            RateLimitConfig {
                per_second: 100,
                burst: 10,
            },
            1,
            start,
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..50).filter(|_| limiter.allow(ip, start)).count();
        assert_eq!(allowed, 10, "a fresh source gets exactly its burst");
        // 100/s refills one token every 10 ms.
        assert!(limiter.allow(ip, start + Duration::from_millis(10)));
        assert!(!limiter.allow(ip, start + Duration::from_millis(10)));
        // Another source is unaffected.
        assert!(limiter.allow("192.0.2.2".parse().unwrap(), start));
        // After a long pause the bucket is full again, but not fuller.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| limiter.allow(ip, later)).count(), 10);
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(
            RateLimitConfig {
                per_second: 0,
                burst: 0,
            },
            1,
            start,
        );
        let ip: IpAddr = "::1".parse().unwrap();
        assert!((0..10_000).all(|_| limiter.allow(ip, start)));
    }
}
