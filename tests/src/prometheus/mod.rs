//! Reading what `stun-server --metrics` serves: a parser of the Prometheus text format (the
//! subset an exporter writes) and the connectivity telemetry series per NAT pair
//! ([`PairTelemetry`], [`link_telemetry`]), with the median time to direct estimated from the
//! histogram the way Prometheus's `histogram_quantile` does.

use std::collections::BTreeMap;

pub use text::{ParseError, Series, parse};

pub mod text;

/// The telemetry of one NAT pair (summed over punching methods), as a scrape shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairTelemetry {
    /// Introductions that ended direct.
    pub direct: u64,
    /// Introductions that ended on the relay.
    pub relayed: u64,
    /// Introductions that failed.
    pub failed: u64,
    /// The punching methods that have series.
    pub methods: Vec<String>,
    /// The time-to-direct histogram: cumulative counts by upper bound (seconds), sorted.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the times to direct, in seconds.
    pub time_sum: f64,
}

impl PairTelemetry {
    /// All introductions counted.
    pub fn attempts(&self) -> u64 {
        self.direct + self.relayed + self.failed
    }

    /// The share that went direct (`None` without attempts).
    pub fn direct_ratio(&self) -> Option<f64> {
        let n = self.attempts();
        (n > 0).then(|| self.direct as f64 / n as f64)
    }

    /// The `q` quantile of the time to direct, in seconds, interpolated within its bucket
    /// like Prometheus's `histogram_quantile` (`None` without direct introductions).
    pub fn time_quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, count) in &self.buckets {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    // As Prometheus does: the upper bound of the last finite bucket.
                    return Some(lower.0);
                }
                let in_bucket = (count - lower.1) as f64;
                let into = if in_bucket > 0.0 {
                    (rank - lower.1 as f64) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * into);
            }
            lower = (bound, count);
        }
        None
    }

    /// The mean time to direct in seconds (exact: the histogram's sum over its count).
    pub fn time_mean(&self) -> Option<f64> {
        let count = self.buckets.last()?.1;
        (count > 0).then(|| self.time_sum / count as f64)
    }
}

/// The connectivity telemetry series of a scrape, per NAT pair label (`a/b`).
pub fn link_telemetry(samples: &BTreeMap<Series, f64>) -> BTreeMap<String, PairTelemetry> {
    let mut pairs: BTreeMap<String, PairTelemetry> = BTreeMap::new();
    let mut buckets: BTreeMap<String, BTreeMap<u64, (f64, u64)>> = BTreeMap::new();
    for ((name, labels), value) in samples {
        let Some(pair) = labels.get("pair") else {
            continue;
        };
        let n = *value as u64;
        match name.as_str() {
            "p2p_link_attempts_total" => {
                let entry = pairs.entry(pair.clone()).or_default();
                match labels.get("outcome").map(String::as_str) {
                    Some("direct") => entry.direct += n,
                    Some("relayed") => entry.relayed += n,
                    Some("failed") => entry.failed += n,
                    _ => {}
                }
                if let Some(method) = labels.get("method")
                    && !entry.methods.contains(method)
                {
                    entry.methods.push(method.clone());
                }
            }
            "p2p_link_time_to_direct_seconds_bucket" => {
                let bound: f64 = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::NAN),
                    None => continue,
                };
                // Summed over methods; keyed by the bound's bits to sort and merge.
                let key = if bound.is_infinite() {
                    u64::MAX
                } else {
                    (bound * 1e6) as u64
                };
                let slot = buckets.entry(pair.clone()).or_default();
                slot.entry(key).or_insert((bound, 0)).1 += n;
            }
            "p2p_link_time_to_direct_seconds_sum" => {
                pairs.entry(pair.clone()).or_default().time_sum += value;
            }
            _ => {}
        }
    }
    for (pair, b) in buckets {
        pairs.entry(pair).or_default().buckets = b.into_values().collect();
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP p2p_link_attempts_total Introductions
# TYPE p2p_link_attempts_total counter
p2p_link_attempts_total{pair=\"a/b\",method=\"plain\",outcome=\"direct\"} 3
p2p_link_attempts_total{pair=\"a/b\",method=\"plain\",outcome=\"relayed\"} 1
p2p_link_attempts_total{pair=\"a/b\",method=\"plain\",outcome=\"failed\"} 0
# TYPE p2p_link_time_to_direct_seconds histogram
p2p_link_time_to_direct_seconds_bucket{pair=\"a/b\",method=\"plain\",le=\"0.5\"} 1
p2p_link_time_to_direct_seconds_bucket{pair=\"a/b\",method=\"plain\",le=\"1\"} 3
p2p_link_time_to_direct_seconds_bucket{pair=\"a/b\",method=\"plain\",le=\"+Inf\"} 3
p2p_link_time_to_direct_seconds_sum{pair=\"a/b\",method=\"plain\"} 2.1
p2p_link_time_to_direct_seconds_count{pair=\"a/b\",method=\"plain\"} 3
";

    #[test]
    fn a_scrape_gives_counts_ratio_and_quantiles_per_pair() {
        let samples = parse(SCRAPE).unwrap();
        let pairs = link_telemetry(&samples);
        let ab = &pairs["a/b"];
        assert_eq!((ab.direct, ab.relayed, ab.failed), (3, 1, 0));
        assert_eq!(ab.direct_ratio(), Some(0.75));
        // Rank 1.5 of 3: half-way from the first bucket's 1 to the second's 3, of 0.5..1 s.
        assert_eq!(ab.time_quantile(0.5), Some(0.625));
        assert!((ab.time_mean().unwrap() - 0.7).abs() < 1e-9);
    }

    #[test]
    fn malformed_scrapes_are_refused() {
        assert!(parse("x_total 1\n").is_err(), "no TYPE");
        let twice = "# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n";
        assert!(parse(twice).is_err());
        assert!(parse("# TYPE x counter\nx{a=1} 1\n").is_err());
        assert!(parse("# TYPE x counter\nx one\n").is_err());
    }
}
