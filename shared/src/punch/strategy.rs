//! Which probing strategy a pair of NATs calls for, and the odds of the birthday method.

use crate::nat_classifier::PortAllocation;

use super::NatInfo;

/// How a puncher probes, chosen from both sides' NAT classifications. Both peers compute it
/// from the same introduction, so their choices always match (one listens while the other
/// probes random ports, for instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// Probe the peer's candidates, and every peer-reflexive address its probes come from.
    /// Enough whenever neither side is symmetric, and when the symmetric side faces a filter
    /// that lets its new mapping in (none, full cone, restricted cone): we learn that mapping
    /// from its first probe.
    Plain,
    /// The peer is symmetric with sequential allocation and we are not: also probe its
    /// server-reflexive port plus `step`, `2 * step`, ... (its next mappings).
    Predict {
        /// The distance between the peer NAT's consecutive allocations.
        step: i32,
    },
    /// Birthday method, the symmetric side (random or unknown allocation, facing a
    /// port-restricted filter): open many extra sockets, prime a mapping towards the peer's
    /// server-reflexive address from each, and answer whichever of them the peer's random
    /// probes find. No full probe leaves before one is found, so none can poison the peer's
    /// NAT.
    BirthdayListen,
    /// Birthday method, the port-restricted side: probe random ports of the symmetric peer's
    /// public address from the endpoint socket, at a bounded rate and count.
    BirthdayProbe,
    /// Both sides are symmetric: neither can learn or predict the other's mapping. Probes the
    /// candidates plainly (a shared LAN still works) and reports failure after the bounded
    /// rounds; the relay carries the chat.
    BothSymmetric,
}

impl Strategy {
    /// The strategy for our side, given our NAT and the peer's.
    pub fn choose(local: &NatInfo, peer: &NatInfo) -> Strategy {
        let sequential_step = |n: &NatInfo| match n.port_allocation {
            Some(PortAllocation::Sequential { step }) if step != 0 => Some(step),
            _ => None,
        };
        match (local.is_symmetric(), peer.is_symmetric()) {
            (true, true) => Strategy::BothSymmetric,
            (false, true) => match sequential_step(peer) {
                Some(step) => Strategy::Predict { step },
                None if local.filters_by_port() => Strategy::BirthdayProbe,
                None => Strategy::Plain,
            },
            (true, false) if peer.filters_by_port() && sequential_step(local).is_none() => {
                Strategy::BirthdayListen
            }
            _ => Strategy::Plain,
        }
    }
}

/// The probability that `probes` distinct random ports out of `range` ports hit at least one
/// of `mappings` open mappings placed uniformly in the same range: `1 - C(range - mappings,
/// probes) / C(range, probes)`. Loss is not included: with a fraction `d` of probes delivered,
/// use `mappings * d` as the effective count (a close approximation).
pub fn birthday_success_probability(range: u32, mappings: u32, probes: u32) -> f64 {
    if mappings == 0 || probes == 0 {
        return 0.0;
    }
    if u64::from(mappings) + u64::from(probes) > u64::from(range) {
        return 1.0;
    }
    // P(miss) = prod_{i < probes} (range - mappings - i) / (range - i).
    let (r, k) = (f64::from(range), f64::from(mappings));
    let miss: f64 = (0..probes)
        .map(|i| {
            let i = f64::from(i);
            (r - k - i) / (r - i)
        })
        .product();
    1.0 - miss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat_classifier::NatType;

    fn nat(t: NatType, a: Option<PortAllocation>) -> NatInfo {
        NatInfo::new(t, a)
    }

    #[test]
    fn strategies_for_the_classic_pairs() {
        let pr = nat(
            NatType::PortRestrictedCone,
            Some(PortAllocation::Preserving),
        );
        let rc = nat(NatType::RestrictedCone, Some(PortAllocation::Preserving));
        let random = nat(NatType::Symmetric, Some(PortAllocation::Random));
        let unknown_alloc = nat(NatType::Symmetric, None);
        let seq = nat(
            NatType::Symmetric,
            Some(PortAllocation::Sequential { step: 2 }),
        );
        assert_eq!(Strategy::choose(&pr, &pr), Strategy::Plain);
        assert_eq!(Strategy::choose(&rc, &random), Strategy::Plain);
        assert_eq!(Strategy::choose(&random, &rc), Strategy::Plain);
        assert_eq!(Strategy::choose(&pr, &seq), Strategy::Predict { step: 2 });
        assert_eq!(Strategy::choose(&rc, &seq), Strategy::Predict { step: 2 });
        assert_eq!(Strategy::choose(&seq, &pr), Strategy::Plain);
        assert_eq!(Strategy::choose(&pr, &random), Strategy::BirthdayProbe);
        assert_eq!(
            Strategy::choose(&pr, &unknown_alloc),
            Strategy::BirthdayProbe
        );
        assert_eq!(Strategy::choose(&random, &pr), Strategy::BirthdayListen);
        assert_eq!(
            Strategy::choose(&unknown_alloc, &pr),
            Strategy::BirthdayListen
        );
        assert_eq!(Strategy::choose(&random, &seq), Strategy::BothSymmetric);
        assert_eq!(Strategy::choose(&seq, &seq), Strategy::BothSymmetric);
        let unknown = NatInfo::default();
        assert_eq!(Strategy::choose(&unknown, &unknown), Strategy::Plain);
        // A side with a port mapping is reachable like a full cone: two symmetric sites, one
        // of them mapped, probe plainly on both sides (the mapped side learns the other's
        // address from its first probe).
        let mapped = NatInfo::reachable_by_mapping();
        assert_eq!(Strategy::choose(&mapped, &random), Strategy::Plain);
        assert_eq!(Strategy::choose(&random, &mapped), Strategy::Plain);
        assert_eq!(Strategy::choose(&mapped, &pr), Strategy::Plain);
    }

    #[test]
    fn birthday_odds_match_the_documented_numbers() {
        // 257 mappings (256 extra sockets + the endpoint), 2048 probes.
        let all_ports = birthday_success_probability(64512, 257, 2048);
        assert!(all_ports > 0.9997 && all_ports < 0.99980, "{all_ports}");
        let linux = birthday_success_probability(28232, 257, 2048);
        assert!(linux > 0.999_999_99, "{linux}");
        // 10 % loss on each of three hops: ~73 % of probes arrive.
        let lossy = birthday_success_probability(64512, 188, 2048);
        assert!(lossy > 0.997 && lossy < 0.9985, "{lossy}");
        assert_eq!(birthday_success_probability(100, 0, 50), 0.0);
        assert_eq!(birthday_success_probability(100, 60, 50), 1.0);
        // One mapping, half the ports probed: one half.
        let half = birthday_success_probability(100, 1, 50);
        assert!((half - 0.5).abs() < 1e-12, "{half}");
    }
}
