//! The generator's latency histogram: fixed buckets, allocated once, so recording in the hot
//! loop never allocates.

/// A fixed log-linear latency histogram in nanoseconds: 128 linear sub-buckets per power of
/// two (under 0.8 % relative error), allocated once.
pub(super) struct Histogram {
    pub(super) counts: Vec<u64>,
    pub(super) total: u64,
    pub(super) max: u64,
}

impl Histogram {
    pub(super) const SUB_BITS: u32 = 7;
    pub(super) const SUB: u64 = 1 << Self::SUB_BITS;
    pub(super) const BUCKETS: usize = (Self::SUB as usize) * (64 - Self::SUB_BITS as usize + 1);

    pub(super) fn new() -> Self {
        Self {
            counts: vec![0; Self::BUCKETS],
            total: 0,
            max: 0,
        }
    }

    pub(super) fn index(v: u64) -> usize {
        if v < Self::SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - Self::SUB_BITS;
        (((u64::from(shift) + 1) << Self::SUB_BITS) + ((v >> shift) - Self::SUB)) as usize
    }

    /// The lowest value of bucket `i` and the bucket's width.
    pub(super) fn bucket(i: usize) -> (u64, u64) {
        let i = i as u64;
        if i < Self::SUB {
            return (i, 1);
        }
        let shift = (i >> Self::SUB_BITS) - 1;
        ((Self::SUB + (i & (Self::SUB - 1))) << shift, 1 << shift)
    }

    pub(super) fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// The value at quantile `q` (0..=1): the midpoint of its bucket, never above the maximum.
    pub(super) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bucket(i);
                return (low + (width - 1) / 2).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_accurate() {
        let mut prev = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i < Histogram::BUCKETS);
            let (low, width) = Histogram::bucket(i);
            assert!(
                low <= v && v - low < width,
                "v {v} bucket {i} low {low} width {width}"
            );
            assert!(width == 1 || (width as f64) / (low as f64) <= 1.0 / 128.0 + 1e-12);
            if v < 5000 {
                assert!(i == prev || i == prev + 1 || v == 0);
                prev = i;
            }
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert!((h.quantile(0.999) as f64 - 999_000.0).abs() / 999_000.0 < 0.01);
    }
}
