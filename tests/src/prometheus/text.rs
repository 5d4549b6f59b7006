//! The Prometheus text format (version 0.0.4) as `stun-server --metrics` writes it, parsed
//! for tests. Only `std`: the metrics tests of `p2p-servers` and the telemetry test of
//! `p2p-client` include this same file by path (`#[path]`), since those crates cannot depend
//! on this one (it depends on them).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// One sample: the metric name and its labels (sorted).
pub type Series = (String, BTreeMap<String, String>);

/// A scrape that does not follow the text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not the Prometheus text format: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses the text format (no escapes in label values, no timestamps, which is what our
/// exporter writes), checking that every sample's family was declared with `# TYPE` before
/// it and that no series appears twice.
pub fn parse(text: &str) -> Result<BTreeMap<Series, f64>, ParseError> {
    let bad = |line: &str| ParseError(format!("{line:?}"));
    let mut typed: HashSet<String> = HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| bad(line))?;
            match kind {
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        typed.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    typed.insert(name.to_owned());
                }
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad(line))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| bad(line))?;
                let mut labels = BTreeMap::new();
                for pair in body.split(',') {
                    let (k, v) = pair.split_once('=').ok_or_else(|| bad(line))?;
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    labels.insert(k.to_owned(), v.ok_or_else(|| bad(line))?.to_owned());
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        if !typed.contains(name) {
            return Err(ParseError(format!("{name} has no # TYPE line before it")));
        }
        let value: f64 = value.parse().map_err(|_| bad(line))?;
        if samples.insert((name.to_owned(), labels), value).is_some() {
            return Err(ParseError(format!("{line:?} twice")));
        }
    }
    Ok(samples)
}

/// The sum of `name` over the series whose labels include all of `labels` (others may be there
/// too).
pub fn sum(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// The value of `name` with exactly `labels`, if that series is there.
pub fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}
