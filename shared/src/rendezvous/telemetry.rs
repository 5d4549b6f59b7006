//! Connectivity telemetry (docs/PROTOCOL.md section 8, "RPT"): what a client reports about
//! one introduction once its outcome is known, and the aggregates the server keeps of those
//! reports.
//!
//! A report says how the introduction ended ([`Outcome`]), how the puncher probed
//! ([`PunchMethod`]), which kind of the peer's candidates answered ([`WorkedCandidate`]), the
//! time from the introduction to the confirmed direct path, and the port mapping used
//! ([`PortMapping`]). It carries no address, no name and no key: the server attributes it to
//! the pair of NAT types the two offers announced and adds it to fixed-size counters
//! ([`Telemetry`]); nothing per user or per address is kept.
//!
//! ```
//! use std::time::Duration;
//! use shared::rendezvous::telemetry::{Outcome, PunchMethod, Report, WorkedCandidate};
//! let report = Report::direct(PunchMethod::Plain, WorkedCandidate::Srflx, Duration::from_millis(420));
//! let params = report.to_params();
//! assert_eq!(params, ["outcome=direct", "method=plain", "cand=srflx", "ms=420", "map=none"]);
//! assert_eq!(Report::parse(&params), Ok(report));
//! assert_eq!(Report::parse(&["outcome=relayed".into(), "method=birthday".into()]),
//!            Ok(Report::settled(Outcome::Relayed, PunchMethod::Birthday)));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::offer::{OfferNat, UnknownWord, words};
use crate::punch::Strategy;

words! {
    /// `outcome=`: how the introduction ended for the reporting side.
    Outcome, "outcome" {
        /// The puncher confirmed a direct path.
        Direct => "direct",
        /// Punching gave up (or never found a path) and the link settled on the switchboard
        /// relay.
        Relayed => "relayed",
        /// Neither a direct path nor the relay: the link failed.
        Failed => "failed",
    }
}

words! {
    /// `method=`: how the reporting side's puncher probed ([`Strategy`], in report words; the
    /// two birthday roles are one method).
    PunchMethod, "method" {
        /// No puncher ran (punching off, or the peer named nothing to punch).
        None => "none",
        /// Probe the candidates and the peer-reflexive addresses they answer from.
        Plain => "plain",
        /// Also probe the ports a sequential symmetric NAT will allocate next.
        Predict => "predict",
        /// The birthday method (many mappings on one side, random probes from the other).
        Birthday => "birthday",
        /// Both sides symmetric: the candidates only, then the relay.
        BothSymmetric => "both-symmetric",
    }
}

words! {
    /// `cand=`: which kind of the peer's addresses the direct path reached.
    WorkedCandidate, "candidate" {
        /// One of the peer's IPv4 host candidates (a shared LAN, or no NAT).
        Host => "host",
        /// The peer's server-reflexive candidate.
        Srflx => "srflx",
        /// An address the peer's probes came from that it never offered (peer reflexive:
        /// a predicted port, a birthday hit, a NAT that maps anew per destination).
        Prflx => "prflx",
        /// The peer's port-mapped candidate (PCP, NAT-PMP or UPnP-IGD).
        Mapped => "mapped",
        /// An IPv6 address of the peer, offered or not: with no NAT66 it is the peer's own,
        /// so the kinds above say nothing more over IPv6 (and IPv6 paths are counted apart).
        Ipv6 => "ipv6",
        /// No direct path.
        None => "none",
    }
}

words! {
    /// `map=`: the port mapping the reporting side had from its gateway.
    PortMapping, "map" {
        /// None.
        None => "none",
        /// PCP (RFC 6887).
        Pcp => "pcp",
        /// NAT-PMP (RFC 6886).
        NatPmp => "natpmp",
        /// UPnP-IGD.
        Upnp => "upnp",
    }
}

impl From<Strategy> for PunchMethod {
    fn from(strategy: Strategy) -> PunchMethod {
        match strategy {
            Strategy::Plain => PunchMethod::Plain,
            Strategy::Predict { .. } => PunchMethod::Predict,
            Strategy::BirthdayListen | Strategy::BirthdayProbe => PunchMethod::Birthday,
            Strategy::BothSymmetric => PunchMethod::BothSymmetric,
        }
    }
}

/// The longest time to a direct path a report may carry (`ms=`): the server forgets an
/// introduction 10 minutes after it was made, so no honest report says more.
pub const MAX_TIME_TO_DIRECT: Duration = Duration::from_secs(600);

/// One side's report on one introduction (the parameters of `RPT` after the session id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// How our puncher probed.
    pub method: PunchMethod,
    /// Which kind of the peer's addresses answered ([`WorkedCandidate::None`] unless direct).
    pub candidate: WorkedCandidate,
    /// From the introduction to the confirmed direct path (`Some` exactly when direct).
    pub time_to_direct: Option<Duration>,
    /// Our port mapping.
    pub mapping: PortMapping,
}

/// A report that does not follow docs/PROTOCOL.md (the server answers `201`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid report: {0}")]
#[non_exhaustive]
pub struct ReportError(pub &'static str);

impl Report {
    /// A direct outcome, without a port mapping.
    pub fn direct(method: PunchMethod, candidate: WorkedCandidate, time: Duration) -> Report {
        Report {
            outcome: Outcome::Direct,
            method,
            candidate,
            time_to_direct: Some(time.min(MAX_TIME_TO_DIRECT)),
            mapping: PortMapping::None,
        }
    }

    /// A relayed or failed outcome, without a port mapping.
    pub fn settled(outcome: Outcome, method: PunchMethod) -> Report {
        Report {
            outcome,
            method,
            candidate: WorkedCandidate::None,
            time_to_direct: None,
            mapping: PortMapping::None,
        }
    }

    /// The wire parameters, in canonical order: `outcome= method= [cand= ms=] map=`.
    pub fn to_params(&self) -> Vec<String> {
        let mut out = vec![
            format!("outcome={}", self.outcome),
            format!("method={}", self.method),
        ];
        if let Some(time) = self.time_to_direct {
            out.push(format!("cand={}", self.candidate));
            out.push(format!("ms={}", time.as_millis()));
        }
        out.push(format!("map={}", self.mapping));
        out
    }

    /// Parses the parameters: `outcome=` and `method=` required; `cand=` and `ms=` required
    /// with `outcome=direct` and not allowed otherwise (`cand=none` is allowed); `map=`
    /// optional (`none`). Each at most once, in any order, nothing else.
    pub fn parse(params: &[String]) -> Result<Report, ReportError> {
        let (mut outcome, mut method, mut cand, mut ms, mut map) = (None, None, None, None, None);
        for param in params {
            let (name, value) = param
                .split_once('=')
                .ok_or(ReportError("a parameter without `=`"))?;
            let word = |_| ReportError("an unknown word");
            let fresh = match name {
                "outcome" => outcome
                    .replace(Outcome::from_str(value).map_err(word)?)
                    .is_none(),
                "method" => method
                    .replace(PunchMethod::from_str(value).map_err(word)?)
                    .is_none(),
                "cand" => cand
                    .replace(WorkedCandidate::from_str(value).map_err(word)?)
                    .is_none(),
                "map" => map
                    .replace(PortMapping::from_str(value).map_err(word)?)
                    .is_none(),
                "ms" => {
                    let millis: u64 = value.parse().map_err(|_| ReportError("a bad ms="))?;
                    let time = Duration::from_millis(millis);
                    if time > MAX_TIME_TO_DIRECT || value.len() > 7 {
                        return Err(ReportError("ms= over the limit"));
                    }
                    ms.replace(time).is_none()
                }
                _ => return Err(ReportError("an unknown parameter")),
            };
            if !fresh {
                return Err(ReportError("a parameter given twice"));
            }
        }
        let outcome = outcome.ok_or(ReportError("no outcome="))?;
        let method = method.ok_or(ReportError("no method="))?;
        let (candidate, time_to_direct) = match (outcome, cand, ms) {
            (Outcome::Direct, Some(c), Some(t)) if c != WorkedCandidate::None => (c, Some(t)),
            (Outcome::Direct, _, _) => {
                return Err(ReportError("a direct outcome needs cand= and ms="));
            }
            (_, None | Some(WorkedCandidate::None), None) => (WorkedCandidate::None, None),
            _ => return Err(ReportError("cand= and ms= are for direct outcomes")),
        };
        Ok(Report {
            outcome,
            method,
            candidate,
            time_to_direct,
            mapping: map.unwrap_or(PortMapping::None),
        })
    }
}

/// An unordered pair of NAT types, as the two offers of an introduction announced them
/// (`unknown` for an offer without `nat=`), in the order of [`OfferNat::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatPair(OfferNat, OfferNat);

impl NatPair {
    /// The pair of `a` and `b`, whichever order they come in.
    pub fn new(a: OfferNat, b: OfferNat) -> NatPair {
        if rank(a) <= rank(b) {
            NatPair(a, b)
        } else {
            NatPair(b, a)
        }
    }

    /// Both types, in the pair's order.
    pub fn types(self) -> (OfferNat, OfferNat) {
        (self.0, self.1)
    }
}

impl fmt::Display for NatPair {
    /// `a/b`, for example `port-restricted/symmetric` (the `pair` label of the metrics).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

fn rank(nat: OfferNat) -> usize {
    OfferNat::ALL
        .iter()
        .position(|n| *n == nat)
        .unwrap_or(usize::MAX)
}

fn index<T: PartialEq>(all: &[T], word: &T) -> usize {
    all.iter().position(|w| w == word).unwrap_or(0)
}

/// The upper bounds of the time-to-direct histogram's buckets (the Prometheus `le` values);
/// a last, unbounded bucket takes the rest. Finer between 200 and 400 ms: a direct path cannot
/// come before the introduction's `start=` delay (250 ms by default), and most come soon after
/// it, where a coarse bucket would hide the differences between pairs.
pub const TIME_BUCKETS: [Duration; 16] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(250),
    Duration::from_millis(275),
    Duration::from_millis(300),
    Duration::from_millis(350),
    Duration::from_millis(400),
    Duration::from_millis(500),
    Duration::from_millis(750),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// The counts of one NAT pair and punching method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairStats {
    /// Introductions by outcome, indexed like [`Outcome::ALL`].
    pub attempts: [u64; 3],
    /// Direct introductions whose time to direct fell in each bucket of [`TIME_BUCKETS`]
    /// (not cumulative), and the last one for the rest.
    pub time_buckets: [u64; TIME_BUCKETS.len() + 1],
    /// The sum of the direct introductions' times to direct.
    pub time_sum: Duration,
}

impl PairStats {
    /// Introductions that ended with `outcome`.
    pub fn attempts(&self, outcome: Outcome) -> u64 {
        self.attempts[index(Outcome::ALL, &outcome)]
    }
}

/// The server's aggregates of the reports, over every introduction since it started.
///
/// Its size is bounded by the vocabularies, never by users or addresses: at most 36 NAT pairs
/// (8 types) times 5 methods of [`PairStats`], 36 times 5 candidate counters and 4 mapping
/// counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    by_pair: HashMap<(NatPair, PunchMethod), PairStats>,
    candidates: HashMap<(NatPair, WorkedCandidate), u64>,
    reports: [u64; 4],
    /// Bumped on every change, so that a driver copies the aggregates only when they moved.
    generation: u64,
}

impl Telemetry {
    /// Counts one introduction between `pair` from its reports (one or two; none counts
    /// nothing). The introduction counts once:
    /// - its outcome is `direct` if either side saw a direct path (a puncher confirms a path
    ///   only on an answer that came back over it), else `relayed` if either side settled on
    ///   the relay, else `failed`;
    /// - its method is the most specific one reported (in the order of [`PunchMethod::ALL`]:
    ///   a side that predicts ports and a side that probes plainly are a `predict` attempt);
    /// - its time to direct is the smaller of the direct sides' times (the first moment the
    ///   path worked).
    ///
    /// Each report also counts on its own: the kind of candidate that worked (for direct
    /// reports) and the port mapping its side used.
    pub fn record(&mut self, pair: NatPair, reports: &[Report]) {
        let methods = reports.iter().map(|r| r.method);
        let Some(method) = methods.max_by_key(|m| index(PunchMethod::ALL, m)) else {
            return;
        };
        let has = |o: Outcome| reports.iter().any(|r| r.outcome == o);
        let outcome = [Outcome::Direct, Outcome::Relayed]
            .into_iter()
            .find(|o| has(*o))
            .unwrap_or(Outcome::Failed);
        let stats = self.by_pair.entry((pair, method)).or_default();
        stats.attempts[index(Outcome::ALL, &outcome)] += 1;
        if let Some(time) = reports.iter().filter_map(|r| r.time_to_direct).min() {
            let bucket = TIME_BUCKETS
                .iter()
                .position(|b| time <= *b)
                .unwrap_or(TIME_BUCKETS.len());
            stats.time_buckets[bucket] += 1;
            stats.time_sum += time;
        }
        for report in reports {
            self.reports[index(PortMapping::ALL, &report.mapping)] += 1;
            if report.outcome == Outcome::Direct {
                *self.candidates.entry((pair, report.candidate)).or_default() += 1;
            }
        }
        self.generation += 1;
    }

    /// The counts of each NAT pair and method that has any, sorted by pair then method.
    pub fn pairs(&self) -> Vec<(NatPair, PunchMethod, &PairStats)> {
        let mut out: Vec<_> = self
            .by_pair
            .iter()
            .map(|((pair, method), stats)| (*pair, *method, stats))
            .collect();
        out.sort_by_key(|(p, m, _)| (rank(p.0), rank(p.1), index(PunchMethod::ALL, m)));
        out
    }

    /// Direct reports by NAT pair and the kind of candidate that worked, sorted.
    pub fn candidates(&self) -> Vec<(NatPair, WorkedCandidate, u64)> {
        let mut out: Vec<_> = self
            .candidates
            .iter()
            .map(|((pair, cand), n)| (*pair, *cand, *n))
            .collect();
        out.sort_by_key(|(p, c, _)| (rank(p.0), rank(p.1), index(WorkedCandidate::ALL, c)));
        out
    }

    /// Reports counted (each side's once), by the port mapping they named.
    pub fn reports(&self, mapping: PortMapping) -> u64 {
        self.reports[index(PortMapping::ALL, &mapping)]
    }

    /// Changes with every introduction counted.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn reports_round_trip_and_refuse_what_the_protocol_does_not_allow() {
        let direct = Report::direct(
            PunchMethod::Birthday,
            WorkedCandidate::Prflx,
            Duration::from_millis(1234),
        );
        assert_eq!(Report::parse(&direct.to_params()), Ok(direct));
        let relayed = Report {
            mapping: PortMapping::Upnp,
            ..Report::settled(Outcome::Relayed, PunchMethod::BothSymmetric)
        };
        assert_eq!(
            relayed.to_params(),
            ["outcome=relayed", "method=both-symmetric", "map=upnp"]
        );
        assert_eq!(Report::parse(&relayed.to_params()), Ok(relayed));
        assert_eq!(
            Report::parse(&params("map=pcp method=none cand=none outcome=failed")),
            Ok(Report {
                mapping: PortMapping::Pcp,
                ..Report::settled(Outcome::Failed, PunchMethod::None)
            })
        );
        for bad in [
            "outcome=direct method=plain",
            "outcome=direct method=plain cand=srflx",
            "outcome=direct method=plain ms=5",
            "outcome=direct method=plain cand=none ms=5",
            "outcome=relayed method=plain ms=5",
            "outcome=relayed method=plain cand=host",
            "outcome=relayed",
            "method=plain",
            "outcome=relayed method=plain method=plain",
            "outcome=relayed method=plain addr=10.0.0.1:5",
            "outcome=sideways method=plain",
            "outcome=relayed method=plain map=igd",
            "outcome=direct method=plain cand=host ms=600001",
            "outcome=direct method=plain cand=host ms=-1",
            "outcome=direct method=plain cand=host ms=00000000001",
            "outcome",
        ] {
            assert!(Report::parse(&params(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pair_is_unordered() {
        let a = NatPair::new(OfferNat::Symmetric, OfferNat::PortRestricted);
        let b = NatPair::new(OfferNat::PortRestricted, OfferNat::Symmetric);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "port-restricted/symmetric");
    }

    #[test]
    fn an_introduction_counts_once_direct_if_either_side_saw_direct() {
        let pair = NatPair::new(OfferNat::FullCone, OfferNat::Symmetric);
        let mut t = Telemetry::default();
        let fast = Report::direct(
            PunchMethod::Plain,
            WorkedCandidate::Prflx,
            Duration::from_millis(80),
        );
        let slow = Report::direct(
            PunchMethod::Predict,
            WorkedCandidate::Srflx,
            Duration::from_millis(700),
        );
        t.record(pair, &[fast, slow]);
        t.record(
            pair,
            &[
                Report::settled(Outcome::Relayed, PunchMethod::Predict),
                slow,
            ],
        );
        t.record(
            pair,
            &[Report::settled(Outcome::Failed, PunchMethod::Plain)],
        );
        t.record(pair, &[]);
        let pairs = t.pairs();
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        let (p, m, predict) = pairs[0];
        assert_eq!((p, m), (pair, PunchMethod::Plain));
        assert_eq!(predict.attempts(Outcome::Failed), 1);
        let (_, m, predict) = pairs[1];
        assert_eq!(m, PunchMethod::Predict);
        assert_eq!(predict.attempts(Outcome::Direct), 2);
        assert_eq!(predict.attempts(Outcome::Relayed), 0);
        // The smaller time of the first (80 ms: bucket <= 100 ms), the only one of the second
        // (700 ms: bucket <= 750 ms).
        assert_eq!(predict.time_buckets[1], 1);
        assert_eq!(predict.time_buckets[9], 1);
        assert_eq!(predict.time_sum, Duration::from_millis(780));
        assert_eq!(
            t.candidates(),
            [
                (pair, WorkedCandidate::Srflx, 2),
                (pair, WorkedCandidate::Prflx, 1)
            ]
        );
        assert_eq!(t.reports(PortMapping::None), 5);
        assert_eq!(t.generation(), 3);
    }
}
