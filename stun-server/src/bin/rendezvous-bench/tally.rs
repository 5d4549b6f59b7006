//! Matching the pushes to the presence changes that caused them, and the percentiles.

use std::collections::HashMap;
use std::time::Duration;

/// One change in flight: when its client wrote it (once that report is in) and when each
/// contact saw it. In the cluster mode the two come from different worker processes, so a
/// push may be read before the report of the write.
#[derive(Default)]
struct Pending {
    sent: Option<u64>,
    seen: Vec<(u64, bool)>,
}

/// The changes in flight and the finished measurements.
pub struct Tally {
    contacts: usize,
    pending: HashMap<(u32, [u8; 3]), Pending>,
    /// Until the last contact had it, per change.
    pub to_all: Vec<Duration>,
    /// Per delivery, to a contact on the changer's node.
    pub same_node: Vec<Duration>,
    /// Per delivery, to a contact on another node.
    pub other_node: Vec<Duration>,
}

impl Tally {
    pub fn new(contacts: usize) -> Tally {
        Tally {
            contacts,
            pending: HashMap::new(),
            to_all: Vec::new(),
            same_node: Vec::new(),
            other_node: Vec::new(),
        }
    }

    /// A change is expected: pushes for it count from now on.
    pub fn expect(&mut self, who: u32, state: [u8; 3]) {
        self.pending.insert((who, state), Pending::default());
    }

    /// Client `who` wrote `CHG state` at `at` (ns).
    pub fn sent(&mut self, who: u32, state: [u8; 3], at: u64) {
        if let Some(p) = self.pending.get_mut(&(who, state)) {
            p.sent = Some(at);
            self.settle(who, state);
        }
    }

    /// A contact saw `who` change to `state` at `at`; `other_node` says whether that contact
    /// is on another node than `who`.
    pub fn push(&mut self, who: u32, state: [u8; 3], at: u64, other_node: bool) {
        if let Some(p) = self.pending.get_mut(&(who, state)) {
            p.seen.push((at, other_node));
            self.settle(who, state);
        }
    }

    /// Changes not finished yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn settle(&mut self, who: u32, state: [u8; 3]) {
        let Some(p) = self.pending.get(&(who, state)) else {
            return;
        };
        let Some(sent) = p.sent else { return };
        if p.seen.len() < self.contacts {
            return;
        }
        let since = |at: u64| Duration::from_nanos(at.saturating_sub(sent));
        let mut last = 0;
        for &(at, other) in &p.seen {
            last = last.max(at);
            if other {
                self.other_node.push(since(at));
            } else {
                self.same_node.push(since(at));
            }
        }
        self.to_all.push(since(last));
        self.pending.remove(&(who, state));
    }
}

/// `p50 / p99 / max` in ms, and the line the bench prints.
pub fn print_percentiles(label: &str, samples: &mut [Duration]) -> [f64; 4] {
    samples.sort();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let (p50, p90, p99, max) = (pick(0.5), pick(0.9), pick(0.99), pick(1.0));
    println!(
        "{label}: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (n = {})",
        samples.len()
    );
    [p50, p90, p99, max]
}
