//! The NAT-pair matrix of the chat lab: its pairs and constants, one run of a pair (start both
//! chats, type, wait for the expected path, check every message), the per-pair tally and the
//! table. The tests in `lab_chat.rs` run it; the module docs there say what a run checks.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shared::rendezvous::offer::OfferNat;
use shared::rendezvous::telemetry::NatPair;
use tests::lab::Lab;
use tests::lab::chat::{ChatOutcome, ChatPeer, ChatServer, messages, path_events};
use tests::nat_types::{ExpectedPunch, PunchNat, RouterOptions, expected_punch};
use tests::prometheus::{PairTelemetry, link_telemetry};

/// The NATs of the matrix.
const TYPES: [PunchNat; 5] = [
    PunchNat::Open,
    PunchNat::FullCone,
    PunchNat::RestrictedCone,
    PunchNat::PortRestrictedCone,
    PunchNat::SymmetricRandom,
];

/// Lines each side types per run (half before the path settles, half after).
const LINES: usize = 20;
/// How long a run waits for the path its pair should reach before typing the second half.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);
/// How long both sides get to receive every message after the second half.
const DELIVERY: Duration = Duration::from_secs(40);
/// How long a chat gets to exit after its input ended.
pub(crate) const EXIT: Duration = Duration::from_secs(25);
/// The bound on the relayed path's arrival after the introduction.
const RELAY_WITHIN: Duration = Duration::from_millis(1500);
/// What a chat logs when its puncher gives up (driver.rs, `PunchEvent::Failed`).
const PUNCH_FAILED: &str = "punching found no direct path";
/// How long a chat waits for its peer to join.
const WAIT_ARGS: [&str; 2] = ["--wait", "30"];

const USERS: [&str; 2] = ["alice", "bob"];

pub(crate) fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// The unordered pairs of the matrix, limited by `LAB_CHAT_PAIRS` if set.
fn pairs() -> Vec<(PunchNat, PunchNat)> {
    let filter: Option<Vec<(String, String)>> = std::env::var("LAB_CHAT_PAIRS").ok().map(|v| {
        v.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|p| {
                let (a, b) = p
                    .trim()
                    .split_once(':')
                    .unwrap_or_else(|| panic!("LAB_CHAT_PAIRS entry {p:?} is not A:B"));
                (a.to_owned(), b.to_owned())
            })
            .collect()
    });
    let mut all = Vec::new();
    for (i, &x) in TYPES.iter().enumerate() {
        for &y in &TYPES[i..] {
            let wanted = filter.as_ref().is_none_or(|f| {
                f.iter().any(|(a, b)| {
                    (a == x.name() && b == y.name()) || (a == y.name() && b == x.name())
                })
            });
            if wanted {
                all.push((x, y));
            }
        }
    }
    assert!(!all.is_empty(), "LAB_CHAT_PAIRS names no pair of {TYPES:?}");
    all
}

fn lines_of(user: &str, run: usize, part: usize) -> Vec<String> {
    let half = LINES / 2;
    (part * half..(part + 1) * half)
        .map(|i| format!("{user} run {run} line {i}: \"quoted\" \\ ünïcode"))
        .collect()
}

/// Where the other side's traffic comes from: its router's outside address, or its own.
pub(crate) fn public_ip(lab: &Lab, i: usize) -> IpAddr {
    IpAddr::V4(lab.router_of(i).map_or(lab.client(i).ip(), |r| r.wan_ip))
}

/// One pair in its lab: the server and the two registered users.
pub(crate) struct Pair {
    // Fields drop in order: the server (killed by its handle) before its lab.
    pub(crate) server: ChatServer,
    pub(crate) lab: Lab,
}

impl Pair {
    pub(crate) fn new(a: RouterOptions, b: RouterOptions) -> Pair {
        let lab = Lab::two_peers(a, b).unwrap();
        let server = ChatServer::start(&lab).unwrap();
        server.register_pair(&lab, USERS[0], USERS[1]).unwrap();
        Pair { server, lab }
    }

    pub(crate) fn start(&self, i: usize, extra: &[&str]) -> ChatPeer {
        let mut args = WAIT_ARGS.to_vec();
        args.extend_from_slice(extra);
        ChatPeer::start(&self.lab, self.lab.client(i), USERS[i], USERS[1 - i], &args).unwrap()
    }
}

/// What one run showed.
#[derive(Debug)]
pub(crate) struct Run {
    /// Each side's last path and its remote.
    pub(crate) last: [Option<(String, String)>; 2],
    /// Each side: from its `connected` line to its first `path` line, and that path.
    pub(crate) first_path: [Option<(Duration, String)>; 2],
    /// Each side (when no direct path was expected): from its `connected` line to the moment
    /// we saw its log say that punching gave up (polled every 20 ms).
    pub(crate) gave_up: [Option<Duration>; 2],
    /// Each side: from its `connected` line to its first `direct` path line.
    pub(crate) to_direct: [Option<Duration>; 2],
    /// Wall time of the run.
    pub(crate) took: Duration,
    /// Where the time went: start to both introduced, to the path settled, to every message
    /// delivered, to both exited.
    pub(crate) phases: [Duration; 4],
    /// Each side's punching strategy (from its log), or "?".
    pub(crate) strategy: [String; 2],
    /// What was wrong with the run's delivery or exit (empty: nothing).
    pub(crate) problems: Vec<String>,
    /// The reports of both sides, for failures.
    pub(crate) reports: String,
    /// Whether either side punched again (a second introduction, reported on its own).
    pub(crate) repunched: bool,
}

impl Run {
    pub(crate) fn both(&self, path: &str) -> bool {
        self.last
            .iter()
            .all(|l| l.as_ref().is_some_and(|(p, _)| p == path))
    }
}

fn last_of(outcome: &ChatOutcome) -> Option<(String, String)> {
    outcome
        .last_path()
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The punching strategy a chat logged (`punching strategy=...`), or "?".
fn strategy_of(outcome: &ChatOutcome) -> String {
    plain(&outcome.stderr)
        .lines()
        .find(|l| l.contains("punching") && l.contains("strategy="))
        .and_then(|l| l.split("strategy=").nth(1))
        .map(|rest| {
            rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

/// Checks exactly-once in-order delivery both ways, clean exits and no error events.
pub(crate) fn check_delivery(outcomes: &[ChatOutcome; 2], sent: &[Vec<String>; 2]) -> Vec<String> {
    let mut problems = Vec::new();
    for i in 0..2 {
        let (me, other) = (&outcomes[i], &outcomes[1 - i]);
        if !me.succeeded() {
            problems.push(format!("{} exited with {:?}", me.user, me.status));
        }
        let errors: Vec<&str> = me
            .events
            .iter()
            .filter(|e| e.kind() == "error")
            .map(|e| e.line.as_str())
            .collect();
        if !errors.is_empty() {
            problems.push(format!("{}: {errors:?}", me.user));
        }
        let got = me.messages();
        let want: Vec<(&str, &str)> = sent[1 - i]
            .iter()
            .map(|l| (other.user.as_str(), l.as_str()))
            .collect();
        if got != want {
            problems.push(format!(
                "{} received {} of {} messages from {} (in order and exactly once: {})",
                me.user,
                got.iter().filter(|m| want.contains(m)).count(),
                want.len(),
                other.user,
                got == want
            ));
        }
        if !me.stray.is_empty() {
            problems.push(format!("{}: non-JSON stdout {:?}", me.user, me.stray));
        }
    }
    problems
}

/// One chat between the pair's two peers; `want_direct`: wait for a direct path (else for any
/// path) before the second half of the lines.
pub(crate) fn run_once(pair: &Pair, run: usize, want_direct: bool) -> Run {
    let lab = &pair.lab;
    lab.flush_all().unwrap();
    let begun = Instant::now();
    let mut peers = [pair.start(0, &[]), pair.start(1, &[])];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (i, peer) in peers.iter_mut().enumerate() {
        let lines = lines_of(USERS[i], run, 0);
        peer.send_lines(&lines).unwrap();
        sent[i].extend(lines);
    }
    let settled = |events: &[tests::lab::chat::ChatEvent]| {
        let paths = path_events(events);
        if want_direct {
            paths.last().is_some_and(|(p, _, _)| *p == "direct")
        } else {
            !paths.is_empty()
        }
    };
    let deadline = Instant::now() + SETTLE;
    for peer in &mut peers {
        let left = deadline.saturating_duration_since(Instant::now());
        peer.wait_for(left, settled);
    }
    // Where no direct path can be had, the second half goes out after punching gave up.
    let gave_up: [Option<Instant>; 2] = if want_direct {
        [None, None]
    } else {
        let deadline = Instant::now() + SETTLE;
        [0, 1].map(|i| {
            peers[i].wait_for_log(
                PUNCH_FAILED,
                deadline.saturating_duration_since(Instant::now()),
            )
        })
    };
    let t_settled = begun.elapsed();
    for (i, peer) in peers.iter_mut().enumerate() {
        let lines = lines_of(USERS[i], run, 1);
        // A chat that already failed has closed its stdin; the checks below say why.
        let _ = peer.send_lines(&lines);
        sent[i].extend(lines);
    }
    let deadline = Instant::now() + DELIVERY;
    for peer in &mut peers {
        let left = deadline.saturating_duration_since(Instant::now());
        peer.wait_for(left, |events| messages(events).len() >= LINES);
    }
    let t_delivered = begun.elapsed();
    for peer in &mut peers {
        peer.close_stdin();
    }
    let [a, b] = peers;
    let outcomes = [a.finish(EXIT), b.finish(EXIT)];
    let took = begun.elapsed();
    let t_intro = outcomes
        .iter()
        .filter_map(|o| o.connected_at())
        .max()
        .map_or(Duration::MAX, |at| at.saturating_duration_since(begun));
    let problems = check_delivery(&outcomes, &sent);
    let first_path = std::array::from_fn(|i| {
        let o = &outcomes[i];
        let intro = o.connected_at()?;
        let (path, _, at) = *o.paths().first()?;
        Some((at.saturating_duration_since(intro), path.to_owned()))
    });
    let to_direct = std::array::from_fn(|i| {
        let o = &outcomes[i];
        let intro = o.connected_at()?;
        let at = o.paths().iter().find(|(p, _, _)| *p == "direct")?.2;
        Some(at.saturating_duration_since(intro))
    });
    let gave_up = std::array::from_fn(|i| {
        let intro = outcomes[i].connected_at()?;
        Some(gave_up[i]?.saturating_duration_since(intro))
    });
    let repunched = outcomes
        .iter()
        .any(|o| o.events.iter().any(|e| e.kind() == "punching_again"));
    Run {
        repunched,
        gave_up,
        last: [last_of(&outcomes[0]), last_of(&outcomes[1])],
        first_path,
        to_direct,
        took,
        phases: [t_intro, t_settled, t_delivered, took],
        strategy: [strategy_of(&outcomes[0]), strategy_of(&outcomes[1])],
        problems,
        reports: format!(
            "{}\n{}\n--- server log (last 20 lines):\n{}",
            outcomes[0].report(60),
            outcomes[1].report(60),
            tail(&pair.server.logs(), 20)
        ),
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The results of one pair, for the table and the verdict.
struct PairResult {
    line: String,
    /// The pair's row of the telemetry table (markdown), from the server's metrics.
    telemetry: String,
    failures: Vec<String>,
    /// Runs with a slow phase (see [`Run::slow`]), with where the time went.
    slow: Vec<String>,
}

impl Run {
    /// Whether a phase took unusually long (on an idle machine each takes well under a
    /// second): the introduction over 2 s, the second half's delivery over 1 s, or the exit
    /// over 2 s.
    pub(crate) fn slow(&self) -> bool {
        let [intro, settled, delivered, exited] = self.phases;
        intro > Duration::from_secs(2)
            || delivered.saturating_sub(settled) > Duration::from_secs(1)
            || exited.saturating_sub(delivered) > Duration::from_secs(2)
    }
}

pub(crate) fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs one pair `runs` times in one lab and checks every run against `expected_punch`.
fn run_pair(x: PunchNat, y: PunchNat, drop_unsolicited: bool, runs: usize) -> PairResult {
    let options = |n: PunchNat| RouterOptions {
        drop_unsolicited,
        ..n.router_options()
    };
    let expect = expected_punch(x, y);
    let name = format!("{} <-> {}", x.name(), y.name());
    let built = Instant::now();
    let pair = Pair::new(options(x), options(y));
    let setup = built.elapsed();
    let public = [public_ip(&pair.lab, 0), public_ip(&pair.lab, 1)];
    let switchboard = ChatServer::switchboard().to_string();
    let mut failures = Vec::new();
    let (mut direct, mut relayed, mut mixed, mut delivered) = (0, 0, 0, 0);
    let mut to_direct = Vec::new();
    let mut first_relayed = Vec::new();
    let mut gave_up = Vec::new();
    let mut deliver = Vec::new();
    let mut took = Vec::new();
    let mut strategies = std::collections::BTreeSet::new();
    let mut slow = Vec::new();
    // Runs in which either side saw a direct path, and runs that punched again.
    let (mut any_direct, mut repunched) = (0u64, 0u64);
    for run in 0..runs {
        let r = run_once(&pair, run, expect != ExpectedPunch::Relay);
        any_direct += u64::from(r.to_direct.iter().any(Option::is_some));
        repunched += u64::from(r.repunched);
        took.push(r.took);
        deliver.push(r.phases[2].saturating_sub(r.phases[1]));
        strategies.insert(r.strategy.join("/"));
        if r.slow() {
            let [intro, settled, delivered, exited] = r.phases.map(ms);
            slow.push(format!(
                "{name} run {run}: {} ms (introduced {intro}, path settled {settled}, \
                 delivered {delivered}, exited {exited}); last paths {:?}",
                ms(r.took),
                r.last
            ));
        }
        if let Ok(dir) = std::env::var("LAB_CHAT_DUMP")
            && (r.slow() || !r.problems.is_empty())
        {
            let file = format!(
                "{dir}/{}-{}-{}-run{run}.txt",
                x.name(),
                y.name(),
                if drop_unsolicited { "drop" } else { "race" }
            );
            let _ = std::fs::write(file, &r.reports);
        }
        let mut fail = |what: String| {
            failures.push(format!("{name} run {run}: {what}\n{}", r.reports));
        };
        if r.problems.is_empty() {
            delivered += 1;
        } else {
            fail(format!("delivery: {:?}", r.problems));
        }
        if r.both("direct") {
            direct += 1;
            to_direct.extend(r.to_direct.iter().flatten().copied());
            // A direct path goes to the other side's public address.
            for i in 0..2 {
                let remote: SocketAddr = r.last[i].as_ref().unwrap().1.parse().unwrap();
                if remote.ip() != public[1 - i] {
                    fail(format!(
                        "{}'s direct path goes to {remote}, not to {}'s public address {}",
                        USERS[i],
                        USERS[1 - i],
                        public[1 - i]
                    ));
                }
            }
        } else if r.both("relayed") {
            relayed += 1;
            for (user, last) in USERS.iter().zip(&r.last) {
                let remote = &last.as_ref().unwrap().1;
                if *remote != switchboard {
                    fail(format!("{user}'s relayed path names {remote}"));
                }
            }
        } else {
            mixed += 1;
        }
        match expect {
            ExpectedPunch::Direct if !r.both("direct") => {
                fail(format!(
                    "expected direct on both sides, last paths {:?}",
                    r.last
                ));
            }
            ExpectedPunch::Birthday if !r.both("direct") && !r.both("relayed") => {
                fail(format!(
                    "expected direct (birthday) or else relayed on both sides, last paths {:?}",
                    r.last
                ));
            }
            ExpectedPunch::Birthday => {
                let mut used = r.strategy.clone();
                used.sort();
                if used != ["BirthdayListen", "BirthdayProbe"] {
                    fail(format!(
                        "expected the birthday method on both sides, strategies {:?}",
                        r.strategy
                    ));
                }
            }
            ExpectedPunch::Relay => {
                if !r.both("relayed") {
                    fail(format!(
                        "expected relayed on both sides, last paths {:?}",
                        r.last
                    ));
                }
                for (i, g) in r.gave_up.iter().enumerate() {
                    match g {
                        Some(d) => gave_up.push(*d),
                        None => fail(format!(
                            "{}: punching did not give up within {SETTLE:?} (no {PUNCH_FAILED:?} \
                             in its log)",
                            USERS[i]
                        )),
                    }
                }
                for (i, first) in r.first_path.iter().enumerate() {
                    match first {
                        Some((d, p)) if p == "relayed" && *d <= RELAY_WITHIN => {
                            first_relayed.push(*d);
                        }
                        other => fail(format!(
                            "{}: first path {other:?}, expected relayed within {RELAY_WITHIN:?} \
                             of the introduction",
                            USERS[i]
                        )),
                    }
                }
            }
            _ => {}
        }
    }
    if expect == ExpectedPunch::Birthday {
        // At least 9 of 10 runs direct, scaled to the run count (rounded up).
        let need = (runs * 9).div_ceil(10);
        if direct < need {
            failures.push(format!(
                "{name}: birthday method direct in {direct} of {runs} runs (need {need}); \
                 relayed {relayed}, mixed {mixed}"
            ));
        }
    }
    let telemetry = check_telemetry(&pair, (x, y), runs as u64, any_direct, repunched);
    let telemetry = match telemetry {
        Ok(row) => row,
        Err(problem) => {
            failures.push(format!("{name}: telemetry: {problem}"));
            format!("| {name} | {problem} |")
        }
    };
    to_direct.sort();
    first_relayed.sort();
    gave_up.sort();
    deliver.sort();
    took.sort();
    let median = |v: &[Duration]| {
        v.get(v.len() / 2)
            .map_or("-".into(), |d| ms(*d).to_string())
    };
    let max = |v: &[Duration]| v.last().map_or("-".into(), |d| ms(*d).to_string());
    let line = format!(
        "{name:<42} {:<8} {runs:>4} {direct:>6} {relayed:>7} {mixed:>5} {delivered:>9} \
         {:>9}/{:<6} {:>9}/{:<6} {:>6}/{:<6} {:>6}/{:<6} {:>6}/{:<6} {:>6}  {}",
        format!("{expect:?}"),
        median(&to_direct),
        max(&to_direct),
        median(&first_relayed),
        max(&first_relayed),
        median(&gave_up),
        max(&gave_up),
        median(&deliver),
        max(&deliver),
        median(&took),
        max(&took),
        ms(setup),
        strategies.into_iter().collect::<Vec<_>>().join(" "),
    );
    eprintln!("{line}");
    PairResult {
        line,
        telemetry,
        failures,
        slow,
    }
}

/// The table's header (times are median/max in ms: to-direct and relay-first from the
/// `connected` line; gave-up: from `connected` until the log says punching gave up; 2nd-half:
/// from typing the second half until both sides received everything; run: the whole run;
/// setup: building the lab, starting the server and registering the users).
fn header() -> String {
    format!(
        "{:<42} {:<8} {:>4} {:>6} {:>7} {:>5} {:>9} {:>16} {:>16} {:>13} {:>13} {:>13} {:>6}  {}",
        "pair",
        "expected",
        "runs",
        "direct",
        "relayed",
        "mixed",
        "delivered",
        "to-direct",
        "relay-first",
        "gave-up",
        "2nd-half",
        "run",
        "setup",
        "strategies (a/b)"
    )
}

pub(crate) fn run_matrix(drop_unsolicited: bool, runs: usize, title: &str) {
    let started = Instant::now();
    eprintln!(
        "{title}: {runs} run(s) per pair (times: median/max ms)\n{}",
        header()
    );
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut slow = Vec::new();
    let mut telemetry = vec![TELEMETRY_HEADER.to_owned()];
    for (x, y) in pairs() {
        let result = run_pair(x, y, drop_unsolicited, runs);
        table.push(result.line);
        telemetry.push(result.telemetry);
        failures.extend(result.failures);
        slow.extend(result.slow);
    }
    let mut summary = String::new();
    let _ = writeln!(summary, "{title}: {runs} run(s) per pair");
    let _ = writeln!(summary, "{} (times: median/max ms)", header());
    for line in &table {
        let _ = writeln!(summary, "{line}");
    }
    let _ = writeln!(summary, "runs with a slow phase: {}", slow.len());
    for line in &slow {
        let _ = writeln!(summary, "  {line}");
    }
    let _ = writeln!(
        summary,
        "connectivity telemetry from each pair's server (/metrics), {runs} run(s) per pair:"
    );
    for line in &telemetry {
        let _ = writeln!(summary, "{line}");
    }
    let _ = write!(summary, "total {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\n\n{summary}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The header of the telemetry table (markdown).
const TELEMETRY_HEADER: &str = "| NAT pair (as classified) | runs | introductions | direct | relayed | \
failed | direct ratio | median time to direct | mean time to direct |\n|---|---|---|---|---|---|---|---|---|";

/// The offer word a router of this kind is classified as.
fn offer_word(nat: PunchNat) -> OfferNat {
    OfferNat::from(shared::nat_classifier::NatType::from(nat.nat_type()))
}

/// Scrapes the pair's server and checks its connectivity telemetry against what the runs
/// showed: every introduction counted on the pair the two routers are classified as (and on
/// no other), one per run unless a run punched again, direct exactly in the runs where a side
/// saw a direct path, relayed in the others, none failed. Returns the pair's table row.
fn check_telemetry(
    pair: &Pair,
    (x, y): (PunchNat, PunchNat),
    runs: u64,
    any_direct: u64,
    repunched: u64,
) -> Result<String, String> {
    let label = NatPair::new(offer_word(x), offer_word(y)).to_string();
    // An introduction that one side reported alone counts when its session ends, at the
    // peer's logout: give the server a moment after the last exit.
    let deadline = Instant::now() + Duration::from_secs(3);
    let pairs = loop {
        let samples = pair.server.scrape(&pair.lab).map_err(|e| e.to_string())?;
        let pairs = link_telemetry(&samples);
        let counted: u64 = pairs.values().map(PairTelemetry::attempts).sum();
        if counted >= runs || Instant::now() >= deadline {
            break pairs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let others: Vec<&String> = pairs.keys().filter(|k| **k != label).collect();
    if !others.is_empty() {
        return Err(format!(
            "introductions counted on {others:?}, expected {label} only"
        ));
    }
    let t = pairs.get(&label).cloned().unwrap_or_default();
    let counts = (t.attempts(), t.direct, t.relayed, t.failed);
    let want = (runs, any_direct, runs - any_direct, 0);
    let agrees = if repunched == 0 {
        counts == want
    } else {
        // A second introduction is an attempt of its own, with an outcome of its own.
        counts.0 >= runs && counts.1 >= any_direct && counts.3 == 0
    };
    if !agrees {
        return Err(format!(
            "{label}: (introductions, direct, relayed, failed) = {counts:?}, the runs showed \
             {want:?} ({repunched} run(s) punched again)"
        ));
    }
    let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.0} ms", s * 1000.0));
    Ok(format!(
        "| {label} | {runs} | {} | {} | {} | {} | {} | {} | {} |",
        t.attempts(),
        t.direct,
        t.relayed,
        t.failed,
        t.direct_ratio()
            .map_or("-".to_owned(), |r| format!("{:.0} %", r * 100.0)),
        secs(t.time_quantile(0.5)),
        secs(t.time_mean()),
    ))
}
