//! Failed logins per source address: the brake on online password guessing
//! (docs/PROTOCOL.md section 5, docs/SECURITY.md section 6).
//!
//! Closing a connection after [`max_login_failures`](super::RendezvousConfig::max_login_failures)
//! wrong proofs costs a guesser only a reconnect. So each source address also has a
//! [`TokenBucket`]: every failed proof takes one failure's worth, the bucket refills one failure
//! per [`login_failure_refill`](super::RendezvousConfig::login_failure_refill), and holds at most
//! [`login_failure_burst`](super::RendezvousConfig::login_failure_burst). While it cannot pay for
//! one more failure, a new login (`USR ... I`) from that address is refused with `800` before
//! any SCRAM work. With the defaults (20, then one per 6 s) a source gets 20 guesses at once
//! and 600 a hour after that, while a user who mistypes a few times never notices.
//!
//! The bucket is per source, not per user, on purpose: a per-user brake would let anyone lock
//! a user out by failing logins in their name. IPv6 sources are counted per /64, the block a
//! single host usually holds. The table is bounded ([`MAX_SOURCES`]); buckets that have
//! refilled are dropped at each sweep, and a new source while the table is full is not tracked
//! (the brake fails open rather than refusing honest users).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::token_bucket::TokenBucket;

/// The most source addresses tracked at once.
pub const MAX_SOURCES: usize = 65_536;

/// The failed-login buckets of all sources. Ticks are milliseconds since the first use; one
/// failure costs `refill` in milliseconds and the bucket refills one unit per millisecond.
#[derive(Debug, Default)]
pub(super) struct LoginThrottle {
    epoch: Option<Instant>,
    sources: HashMap<IpAddr, TokenBucket<u64>>,
}

/// A throttle's settings, from the server's config.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Failures a source may have at once.
    pub burst: u32,
    /// The time one failure takes to be forgiven.
    pub refill: Duration,
}

impl Limits {
    fn cost(self) -> u64 {
        u64::try_from(self.refill.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn capacity(self) -> u64 {
        self.cost().saturating_mul(u64::from(self.burst))
    }
}

/// The unit a source is counted in: its IPv4 address, or its IPv6 /64 (an IPv4-mapped IPv6
/// address counts as the IPv4 one).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

impl LoginThrottle {
    fn tick(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `ip` may start a login now: its bucket can pay for one more failure.
    pub(super) fn may_try(&mut self, now: Instant, ip: IpAddr, limits: Limits) -> bool {
        let tick = self.tick(now);
        match self.sources.get_mut(&source_key(ip)) {
            None => true,
            Some(bucket) => {
                bucket.take(0, tick, 1, limits.capacity());
                bucket.tokens() >= limits.cost()
            }
        }
    }

    /// Counts a failed login from `ip`.
    pub(super) fn failed(&mut self, now: Instant, ip: IpAddr, limits: Limits) {
        let tick = self.tick(now);
        let full = self.sources.len() >= MAX_SOURCES;
        let capacity = limits.capacity();
        let bucket = match self.sources.entry(source_key(ip)) {
            Entry::Occupied(bucket) => bucket.into_mut(),
            Entry::Vacant(_) if full => return,
            Entry::Vacant(slot) => {
                let mut bucket = TokenBucket::full(capacity);
                // Start the new bucket's clock now, not at the epoch.
                bucket.take(0, tick, 1, capacity);
                slot.insert(bucket)
            }
        };
        bucket.take(limits.cost(), tick, 1, capacity);
    }

    /// Drops the buckets that have refilled: they hold no memory of anything.
    pub(super) fn sweep(&mut self, now: Instant, limits: Limits) {
        if self.sources.is_empty() {
            return;
        }
        let tick = self.tick(now);
        let capacity = limits.capacity();
        self.sources.retain(|_, bucket| {
            bucket.take(0, tick, 1, capacity);
            bucket.tokens() < capacity
        });
    }

    /// Sources with a failure not yet forgiven (tests).
    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        burst: 3,
        refill: Duration::from_secs(6),
    };

    #[test]
    fn a_source_gets_its_burst_then_one_try_per_refill() {
        let mut t = LoginThrottle::default();
        let start = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.may_try(start, ip, LIMITS));
            t.failed(start, ip, LIMITS);
        }
        assert!(!t.may_try(start, ip, LIMITS));
        assert!(!t.may_try(start + Duration::from_millis(5_999), ip, LIMITS));
        let later = start + Duration::from_secs(6);
        assert!(t.may_try(later, ip, LIMITS));
        t.failed(later, ip, LIMITS);
        assert!(!t.may_try(later, ip, LIMITS));
        // Another source is not affected.
        assert!(t.may_try(later, "192.0.2.2".parse().unwrap(), LIMITS));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..3 {
            let ip: IpAddr = format!("2001:db8:1:2::{i}").parse().unwrap();
            t.failed(now, ip, LIMITS);
        }
        assert!(!t.may_try(now, "2001:db8:1:2:ffff::9".parse().unwrap(), LIMITS));
        assert!(t.may_try(now, "2001:db8:1:3::1".parse().unwrap(), LIMITS));
        for _ in 0..3 {
            t.failed(now, "::ffff:192.0.2.7".parse().unwrap(), LIMITS);
        }
        assert!(!t.may_try(now, "192.0.2.7".parse().unwrap(), LIMITS));
    }

    #[test]
    fn refilled_buckets_are_forgotten_and_the_table_is_bounded() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.failed(now, ip, LIMITS);
        t.sweep(now + Duration::from_secs(5), LIMITS);
        assert_eq!(t.tracked(), 1);
        t.sweep(now + Duration::from_secs(6), LIMITS);
        assert_eq!(t.tracked(), 0);
        for i in 0..MAX_SOURCES as u32 + 10 {
            t.failed(now, IpAddr::V4(i.into()), LIMITS);
        }
        assert_eq!(t.tracked(), MAX_SOURCES);
    }
}
