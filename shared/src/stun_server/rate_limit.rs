//! A per-source token bucket in fixed memory.
//!
//! Sources hash into a fixed table of buckets instead of a map keyed by address: memory stays
//! constant under a flood of spoofed sources, there is nothing to evict, and a spoofed victim
//! address can never be pushed out of the table (which would lift its limit and let a reflection
//! attack through). Two sources that share a bucket share a budget; with 65,536 buckets and a
//! secret hash key that is rare and cannot be aimed at.
//!
//! Each entry is a [`TokenBucket<u64>`] ticking in milliseconds (16 bytes), so the refill is the
//! workspace's one token bucket arithmetic; rate and capacity are held once, here.

use std::hash::Hasher;
use std::net::IpAddr;
use std::time::Instant;

use siphasher::sip::SipHasher13;

use super::RateLimitConfig;
use crate::rng::SplitMix64;
use crate::token_bucket::TokenBucket;

const BUCKETS: usize = 1 << 16;
/// Tokens are counted in thousandths (token-milliseconds) so a refill per millisecond is exact
/// for any rate: `per_second` tokens per second is `per_second` units per millisecond.
const MILLI: u64 = 1000;

/// Token buckets for source addresses.
pub struct RateLimiter {
    config: RateLimitConfig,
    epoch: Instant,
    hash_key: (u64, u64),
    /// `burst` tokens, in thousandths.
    capacity: u64,
    buckets: Vec<TokenBucket<u64>>,
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
        let capacity = u64::from(config.burst.max(1)) * MILLI;
        let buckets = if config.per_second == 0 {
            Vec::new()
        } else {
            vec![TokenBucket::full(capacity); BUCKETS]
        };
        Self {
            config,
            epoch: now,
            hash_key,
            capacity,
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
        let rate = u64::from(self.config.per_second);
        self.buckets[index].take(MILLI, now_ms, rate, self.capacity)
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
