// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

//! `p2p-client chat` between two real processes behind real kernel NATs: every pair of {none,
//! full cone, restricted cone, port-restricted cone, symmetric (random ports)}, with the
//! routers' inbound drop rule (home routers) and without it (the conntrack race of
//! docs/DESIGN.md section 5); UDP blocked on one side; a NAT mapping that expires in the middle of a chat.
//!
//! Each pair gets one lab (`Lab::two_peers`: each peer behind its own router, the core between
//! them, the server host with two addresses), one `stun-server` in the server namespace (STUN
//! on both addresses, rendezvous, switchboard, a fresh database) and two registered users who
//! are each other's contacts. Each run flushes both routers (conntrack and learnt mappings),
//! starts `p2p-client chat --json` in both peer namespaces at once, types half of
//! its lines at once (they wait for the introduction and go out over whatever path is up), waits
//! until the path the pair should reach is there (at most [`SETTLE`]; where no direct path is
//! expected: until both logs say punching gave up, so the second half crosses the relay after
//! the puncher's end), types the other half, ends the input and waits for both to exit. Every run must deliver every message exactly
//! once and in order both ways, and both processes must exit 0 with no `error` event.
//!
//! The final path per side (its last `path` event) must match
//! [`tests::nat_types::expected_punch`]:
//! - `Direct`: both sides end on `direct`, to the other side's public address;
//! - `Birthday` (symmetric against port-restricted): both sides direct in at least 9 of 10
//!   runs (scaled to the run count), the others relayed; both sides' logs must name the
//!   birthday strategies (`BirthdayProbe`, `BirthdayListen`);
//! - `Relay` (symmetric against symmetric): both sides end on `relayed` (the switchboard), and
//!   each side's first `path` event is `relayed` and comes within 1.5 s of its introduction.
//!   Measured per side from the moment our reader got the `connected` line (printed when the
//!   introduction arrives, just before the relay connection starts) to the moment it got the
//!   first `path` line; both are read from the process's stdout pipe as they are written.
//!
//! No flag asks for classification: `chat` classifies the NAT by default, which the birthday
//! method needs (without it neither side would know it is symmetric or port-restricted and
//! they would probe plainly). The matrix therefore shows the default does what works.
//!
//! Run counts: `LAB_CHAT_RUNS` (default 10) for the main matrix, `LAB_CHAT_RACE_RUNS` (default
//! 3) for the matrix without the drop rule. `LAB_CHAT_PAIRS=symmetric-random:port-restricted,..`
//! limits both matrices to the named pairs (names of `PunchNat::name`). Run with
//! `-- --nocapture` to see the tables (runs with a slow phase are listed with where their time
//! went). `LAB_CHAT_DUMP=DIR` writes both sides' events (with times) and logs of every
//! slow or failed run to `DIR`. The binaries are `stun-server` and `p2p-client` of the
//! same target directory, built first (see `tests::lab::chat`).
//!
//! The other tests: UDP blocked on one side (relayed, everything delivered); a mapping that
//! expires mid-chat (5 s router timeout; the mapping is flushed once, then starved for 9 s
//! by dropping all UDP at the router before conntrack; every message must arrive, and the
//! chat must end direct again); a router that moves to a new public address mid-chat (the
//! chat must punch again through a new introduction and end direct to the new address).
//!
//! Not here: the switchboard refusing a wrong or reused ticket (covered by the loopback tests
//! of `stun-server`).
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise a loud `SKIPPED:` line, or a failure
//! when `CI=true`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tests::lab::chat::{ChatOutcome, ChatPeer, ChatServer, messages, path_events};
use tests::lab::{Lab, require_lab, serial};
use tests::nat_types::{ExpectedPunch, NatType, PunchNat, RouterOptions, expected_punch};

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
const SETTLE: Duration = Duration::from_secs(20);
/// How long both sides get to receive every message after the second half.
const DELIVERY: Duration = Duration::from_secs(40);
/// How long a chat gets to exit after its input ended.
const EXIT: Duration = Duration::from_secs(25);
/// The bound on the relayed path's arrival after the introduction.
const RELAY_WITHIN: Duration = Duration::from_millis(1500);
/// What a chat logs when its puncher gives up (driver.rs, `PunchEvent::Failed`).
const PUNCH_FAILED: &str = "punching found no direct path";
/// How long a chat waits for its peer to join.
const WAIT_ARGS: [&str; 2] = ["--wait", "30"];

const USERS: [&str; 2] = ["alice", "bob"];

fn env_count(name: &str, default: usize) -> usize {
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
fn public_ip(lab: &Lab, i: usize) -> IpAddr {
    IpAddr::V4(lab.router_of(i).map_or(lab.client(i).ip(), |r| r.wan_ip))
}

/// One pair in its lab: the server and the two registered users.
struct Pair {
    // Fields drop in order: the server (killed by its handle) before its lab.
    server: ChatServer,
    lab: Lab,
}

impl Pair {
    fn new(a: RouterOptions, b: RouterOptions) -> Pair {
        let lab = Lab::two_peers(a, b).unwrap();
        let server = ChatServer::start(&lab).unwrap();
        server.register_pair(&lab, USERS[0], USERS[1]).unwrap();
        Pair { server, lab }
    }

    fn start(&self, i: usize, extra: &[&str]) -> ChatPeer {
        let mut args = WAIT_ARGS.to_vec();
        args.extend_from_slice(extra);
        ChatPeer::start(&self.lab, self.lab.client(i), USERS[i], USERS[1 - i], &args).unwrap()
    }
}

/// What one run showed.
#[derive(Debug)]
struct Run {
    /// Each side's last path and its remote.
    last: [Option<(String, String)>; 2],
    /// Each side: from its `connected` line to its first `path` line, and that path.
    first_path: [Option<(Duration, String)>; 2],
    /// Each side (when no direct path was expected): from its `connected` line to the moment
    /// we saw its log say that punching gave up (polled every 20 ms).
    gave_up: [Option<Duration>; 2],
    /// Each side: from its `connected` line to its first `direct` path line.
    to_direct: [Option<Duration>; 2],
    /// Wall time of the run.
    took: Duration,
    /// Where the time went: start to both introduced, to the path settled, to every message
    /// delivered, to both exited.
    phases: [Duration; 4],
    /// Each side's punching strategy (from its log), or "?".
    strategy: [String; 2],
    /// What was wrong with the run's delivery or exit (empty: nothing).
    problems: Vec<String>,
    /// The reports of both sides, for failures.
    reports: String,
}

impl Run {
    fn both(&self, path: &str) -> bool {
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
fn check_delivery(outcomes: &[ChatOutcome; 2], sent: &[Vec<String>; 2]) -> Vec<String> {
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
fn run_once(pair: &Pair, run: usize, want_direct: bool) -> Run {
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
    Run {
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
    failures: Vec<String>,
    /// Runs with a slow phase (see [`Run::slow`]), with where the time went.
    slow: Vec<String>,
}

impl Run {
    /// Whether a phase took unusually long (on an idle machine each takes well under a
    /// second): the introduction over 2 s, the second half's delivery over 1 s, or the exit
    /// over 2 s.
    fn slow(&self) -> bool {
        let [intro, settled, delivered, exited] = self.phases;
        intro > Duration::from_secs(2)
            || delivered.saturating_sub(settled) > Duration::from_secs(1)
            || exited.saturating_sub(delivered) > Duration::from_secs(2)
    }
}

fn ms(d: Duration) -> u128 {
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
    for run in 0..runs {
        let r = run_once(&pair, run, expect != ExpectedPunch::Relay);
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

fn run_matrix(drop_unsolicited: bool, runs: usize, title: &str) {
    let started = Instant::now();
    eprintln!(
        "{title}: {runs} run(s) per pair (times: median/max ms)\n{}",
        header()
    );
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut slow = Vec::new();
    for (x, y) in pairs() {
        let result = run_pair(x, y, drop_unsolicited, runs);
        table.push(result.line);
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
    let _ = write!(summary, "total {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\n\n{summary}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_nat_pair_chats_over_the_expected_path_with_home_routers() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    run_matrix(
        true,
        env_count("LAB_CHAT_RUNS", 10),
        "chat matrix, routers with the inbound drop rule",
    );
}

#[test]
fn every_nat_pair_chats_over_the_same_paths_without_the_inbound_drop_rule() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    run_matrix(
        false,
        env_count("LAB_CHAT_RACE_RUNS", 3),
        "chat matrix, routers WITHOUT the inbound drop rule (conntrack race)",
    );
}

#[test]
fn udp_blocked_on_one_side_chats_over_the_relay() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let pair = Pair::new(
        RouterOptions::new(NatType::UdpBlocked),
        RouterOptions::new(NatType::PortRestrictedCone),
    );
    let r = run_once(&pair, 0, false);
    assert!(r.problems.is_empty(), "{:?}\n{}", r.problems, r.reports);
    assert!(r.both("relayed"), "last paths {:?}\n{}", r.last, r.reports);
    let switchboard = ChatServer::switchboard().to_string();
    for last in &r.last {
        assert_eq!(last.as_ref().unwrap().1, switchboard, "{}", r.reports);
    }
    eprintln!(
        "udp-blocked <-> port-restricted: relayed; first path after the introduction {:?}; \
         punching gave up after {:?}; strategies {:?}; phases {:?}",
        r.first_path, r.gave_up, r.strategy, r.phases
    );
}

/// Each side types five lines naming `phase` and `what` (then the phase counts up); `sent`
/// records them per side.
fn type_phase(
    peers: &mut [ChatPeer; 2],
    sent: &mut [Vec<String>; 2],
    phase: &mut usize,
    what: &str,
) {
    for (i, peer) in peers.iter_mut().enumerate() {
        let lines: Vec<String> = (0..5)
            .map(|k| format!("{} phase {phase} ({what}) line {k}", USERS[i]))
            .collect();
        peer.send_lines(&lines).unwrap();
        sent[i].extend(lines);
    }
    *phase += 1;
}

/// Waits, at most `within` in all, until each side has received as many messages as the other
/// typed (what arrived is checked at the end, by [`check_delivery`]).
fn wait_delivered(peers: &mut [ChatPeer; 2], sent: &[Vec<String>; 2], within: Duration) {
    let deadline = Instant::now() + within;
    for (i, peer) in peers.iter_mut().enumerate() {
        let want = sent[1 - i].len();
        let left = deadline.saturating_duration_since(Instant::now());
        peer.wait_for(left, |events| messages(events).len() >= want);
    }
}

/// Ends both sides' input, waits for both to exit, and returns their outcomes and reports.
fn end_both(mut peers: [ChatPeer; 2]) -> ([ChatOutcome; 2], String) {
    for peer in &mut peers {
        peer.close_stdin();
    }
    let [a, b] = peers;
    let outcomes = [a.finish(EXIT), b.finish(EXIT)];
    let reports = format!("{}\n{}", outcomes[0].report(80), outcomes[1].report(80));
    (outcomes, reports)
}

/// An nftables table in a router that drops every UDP packet before conntrack sees it (so
/// no packet refreshes the router's mappings, which then expire).
const CUT: &str = "table ip chatcut {\n  chain raw {\n    type filter hook prerouting priority raw - 10; \
                   policy accept;\n    meta l4proto udp drop\n  }\n}\n";

#[test]
fn a_nat_mapping_that_expires_mid_chat_loses_no_message() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    // A 5 s UDP timeout. The chat's probes (every 2 s on a quiet direct path) keep a live
    // mapping alive, so the mapping is made to expire: first flushed outright (conntrack and
    // learnt mappings), later starved by dropping every UDP packet at the router, before
    // conntrack, for longer than the timeout (and than the chat's 6 s direct-path timeout).
    let options = RouterOptions {
        udp_timeout: Duration::from_secs(5),
        ..RouterOptions::new(NatType::PortRestrictedCone)
    };
    let pair = Pair::new(options, options);
    let lab = &pair.lab;
    let router = lab.router_of(0).unwrap().clone();
    lab.flush_all().unwrap();
    let mut peers = [pair.start(0, &[]), pair.start(1, &[])];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut phase = 0;
    let direct = |events: &[tests::lab::chat::ChatEvent]| {
        path_events(events).last().is_some_and(|p| p.0 == "direct")
    };
    type_phase(&mut peers, &mut sent, &mut phase, "start");
    for peer in &mut peers {
        assert!(
            peer.wait_for(SETTLE, direct),
            "{}: no direct path\n{}",
            peer.user,
            peer.logs()
        );
    }
    wait_delivered(&mut peers, &sent, Duration::from_secs(10));

    // 1: the mapping vanishes at once (what an expiry does), the chat goes on typing.
    lab.flush_nat(&router).unwrap();
    type_phase(&mut peers, &mut sent, &mut phase, "after a flush");
    wait_delivered(&mut peers, &sent, Duration::from_secs(20));

    // 2: no UDP crosses the router for 9 s: the mapping times out (5 s) while messages are
    // typed; the chat must carry them (over the relay, once the direct path is quiet).
    lab.nft(&router.ns, CUT).unwrap();
    let cut = Instant::now();
    type_phase(&mut peers, &mut sent, &mut phase, "during the cut");
    // Deliberately a fixed wait: the router's 5 s UDP timeout must run out while the cut
    // holds (what an expiry in a quiet spell is); nothing the test could await marks it.
    std::thread::sleep(Duration::from_secs(7));
    let stale = lab.conntrack_udp(&router).unwrap();
    let client_ip = lab.client(0).ip().to_string();
    let left: Vec<&String> = stale.iter().filter(|l| l.contains(&client_ip)).collect();
    type_phase(&mut peers, &mut sent, &mut phase, "late in the cut");
    wait_delivered(&mut peers, &sent, Duration::from_secs(2));
    // Deliberately a fixed wait: the cut lasts 9 s in all, long enough for the chat to give
    // up on the quiet direct path and carry on over the relay.
    std::thread::sleep(Duration::from_secs(9).saturating_sub(cut.elapsed()));
    let during: Vec<Vec<String>> = peers
        .iter_mut()
        .map(|p| {
            path_events(p.seen())
                .iter()
                .map(|(path, remote, _)| format!("{path} {remote}"))
                .collect()
        })
        .collect();
    lab.nft(&router.ns, "delete table ip chatcut\n").unwrap();

    // 3: UDP is back; the chat goes on. Then the direct path must come back within 20 s
    // (the chat probes the old one and punches again; an attempt that began during the cut
    // runs out first, then the next one is due after its back-off).
    type_phase(&mut peers, &mut sent, &mut phase, "after the cut");
    wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let came_back: Vec<bool> = peers
        .iter_mut()
        .map(|p| p.wait_for(deadline.saturating_duration_since(Instant::now()), direct))
        .collect();
    type_phase(&mut peers, &mut sent, &mut phase, "at the end");
    wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    let (outcomes, reports) = end_both(peers);
    eprintln!(
        "mapping expiry: conntrack entries of {client_ip} left 7 s into the cut: {left:?}\n\
         paths by the end of the cut: {during:?}\n\
         direct again within 20 s of the delivery after the cut: {came_back:?}\n\
         final paths: {:?} / {:?}",
        outcomes[0].last_path(),
        outcomes[1].last_path()
    );
    assert!(
        left.is_empty(),
        "the mapping should have expired during the cut: {left:#?}"
    );
    let problems = check_delivery(&outcomes, &sent);
    assert!(problems.is_empty(), "{problems:#?}\n{reports}");
    assert_eq!(came_back, [true, true], "not direct again\n{reports}");
    for o in &outcomes {
        assert!(
            o.last_path().is_some_and(|(p, _)| p == "direct"),
            "{reports}"
        );
    }
}

/// A NAT that moves to a new public address in the middle of a chat (a new lease from the
/// ISP, a router that comes back on another address). The old direct path is dead for good:
/// the peer's port-restricted NAT admits nothing from the new address, and nothing reaches the
/// old one. The chat must move to the relay, punch again through a new introduction (a fresh
/// STUN Binding tells the moved side its new address), and end direct to the new address, with
/// every message delivered exactly once and in order.
#[test]
fn a_nat_that_changes_its_public_address_mid_chat_is_punched_again() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let options = RouterOptions::new(NatType::PortRestrictedCone);
    let pair = Pair::new(options, options);
    let lab = &pair.lab;
    let router = lab.router_of(0).unwrap().clone();
    let old_ip = router.wan_ip.to_string();
    lab.flush_all().unwrap();
    let mut peers = [pair.start(0, &[]), pair.start(1, &[])];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut phase = 0;
    let direct_to = |ip: String| {
        move |events: &[tests::lab::chat::ChatEvent]| {
            path_events(events).last().is_some_and(|(p, remote, _)| {
                *p == "direct" && remote.starts_with(&format!("{ip}:"))
            })
        }
    };
    type_phase(&mut peers, &mut sent, &mut phase, "start");
    let publics = [old_ip.clone(), public_ip(lab, 1).to_string()];
    for (i, peer) in peers.iter_mut().enumerate() {
        assert!(
            peer.wait_for(SETTLE, direct_to(publics[1 - i].clone())),
            "{}: no direct path\n{}",
            peer.user,
            peer.logs()
        );
    }
    wait_delivered(&mut peers, &sent, Duration::from_secs(10));

    let moved = Instant::now();
    let new_ip = lab.renumber(&router).unwrap().to_string();
    type_phase(&mut peers, &mut sent, &mut phase, "after the move");
    wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    // Bob must end direct to Alice's new address, Alice direct to Bob again (after a
    // relayed stretch in between).
    let back = [
        peers[0].wait_for(Duration::from_secs(40), |events| {
            let after: Vec<_> = path_events(events)
                .into_iter()
                .filter(|(_, _, at)| *at > moved)
                .collect();
            after.iter().any(|(p, _, _)| *p == "relayed")
                && after.last().is_some_and(|(p, remote, _)| {
                    *p == "direct" && remote.starts_with(&format!("{}:", publics[1]))
                })
        }),
        peers[1].wait_for(Duration::from_secs(40), direct_to(new_ip.clone())),
    ];
    let timings: Vec<String> = peers
        .iter_mut()
        .map(|p| {
            path_events(p.seen())
                .iter()
                .filter(|(_, _, at)| *at > moved)
                .map(|(path, remote, at)| format!("+{} ms {path} {remote}", ms(*at - moved)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    type_phase(&mut peers, &mut sent, &mut phase, "after punching again");
    wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    let (outcomes, reports) = end_both(peers);
    eprintln!(
        "renumbered {old_ip} -> {new_ip}; paths after the move: alice [{}], bob [{}]",
        timings[0], timings[1]
    );
    let problems = check_delivery(&outcomes, &sent);
    assert!(problems.is_empty(), "{problems:#?}\n{reports}");
    assert_eq!(
        back,
        [true, true],
        "not direct again after the move\n{reports}"
    );
    for o in &outcomes {
        assert!(
            o.events.iter().any(|e| e.kind() == "punching_again"),
            "{}: no punching_again event\n{reports}",
            o.user
        );
    }
}
