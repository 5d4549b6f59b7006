//! The NAT classifier (`p2p_client::classify`) over real sockets behind every real kernel NAT
//! type of the lab, against three servers with two addresses: ours (in-process), `stund` and
//! coturn. Also: 10 % loss on the NAT router, hairpinning on and off, and servers that cannot
//! honour CHANGE-REQUEST.
//!
//! Needs root, `ip`, `nft` and `conntrack`, and `stund` and `turnserver` for the third-party
//! servers; otherwise each test prints a loud `SKIPPED:` line, or fails when `CI=true`.
//!
//! Every run is preceded by `Lab::flush_nat` on the client's router, so no pinhole or learnt
//! mapping of one run makes the next one see a friendlier NAT (docs/DESIGN.md section 2). One lab is
//! built per NAT type and reused for all runs and servers.
//!
//! Run with `cargo test -p tests --test lab_classifier -- --nocapture` to see the per-type and
//! per-server counts and timings.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use p2p_client::classify::{ClassifyOptions, classify};
use shared::nat_classifier::{Behaviour, NatType as Verdict, Report};
use tests::lab::{Lab, LabServer, SERVER_IPS, coturn_command, require_lab, require_tool, serial};
use tests::nat_types::{NatType, RouterOptions};

/// Runs in a row per type and server.
const RUNS: usize = 20;

const PORT: u16 = 3478;
const ALT_PORT: u16 = 3479;

fn primary() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), PORT)
}

/// Runs `f` inside network namespace `ns` (see [`tests::lab::in_namespace`]).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    tests::lab::in_namespace(ns, || Ok(f())).unwrap()
}

/// Which server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Ours, in-process.
    Ours,
    /// Ours without an alternate address.
    OursSingle,
    /// `stund` with two addresses.
    Stund,
    /// coturn with two listening IPs.
    Coturn,
    /// coturn with one listening IP (no RFC 5780, 420 to CHANGE-REQUEST).
    CoturnSingle,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OursSingle => "ours-single-ip",
            Kind::Stund => "stund",
            Kind::Coturn => "coturn",
            Kind::CoturnSingle => "coturn-single-ip",
        }
    }

    fn tool(self) -> Option<&'static str> {
        match self {
            Kind::Ours | Kind::OursSingle => None,
            Kind::Stund => Some("stund"),
            Kind::Coturn | Kind::CoturnSingle => Some("turnserver"),
        }
    }
}

/// `true` if `kind`'s binary is present (see [`require_tool`]).
fn require_server(kind: Kind) -> bool {
    kind.tool().is_none_or(require_tool)
}

static PIDFILES: AtomicU32 = AtomicU32::new(0);

/// Starts `kind` in the server namespace and waits (at most 10 s) until every address it
/// should answer on does.
fn start(lab: &Lab, kind: Kind) -> LabServer {
    let server = match kind {
        Kind::Ours | Kind::OursSingle => {
            LabServer::start_ours(lab, kind == Kind::Ours, PORT, ALT_PORT).unwrap()
        }
        Kind::Stund => {
            let (a1, a2) = (SERVER_IPS[0].to_string(), SERVER_IPS[1].to_string());
            let (p1, p2) = (PORT.to_string(), ALT_PORT.to_string());
            let args = ["stund", "-h", &a1, "-a", &a2, "-p", &p1, "-o", &p2];
            LabServer::start_child(lab, &args, None).unwrap()
        }
        Kind::Coturn | Kind::CoturnSingle => {
            let n = PIDFILES.fetch_add(1, Ordering::Relaxed);
            let pidfile = PathBuf::from(format!(
                "/tmp/lab-classifier-{}-{n}.pid",
                std::process::id()
            ));
            let args = coturn_command(&pidfile, kind == Kind::Coturn, PORT, ALT_PORT);
            LabServer::start_child(lab, &args, Some(pidfile)).unwrap()
        }
    };
    let mut addrs = vec![SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), PORT)];
    // coturn with one listening IP does not open the alternate port at all.
    if kind != Kind::CoturnSingle {
        addrs.push(SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), ALT_PORT));
    }
    if !matches!(kind, Kind::OursSingle | Kind::CoturnSingle) {
        addrs.push(SocketAddr::new(IpAddr::V4(SERVER_IPS[1]), PORT));
        addrs.push(SocketAddr::new(IpAddr::V4(SERVER_IPS[1]), ALT_PORT));
    }
    if let Err(e) = lab.wait_for_stun(&addrs, Duration::from_secs(10)) {
        panic!("{}: {e}", kind.name());
    }
    server
}

fn expected(nat: NatType) -> (Verdict, Option<Behaviour>, Option<Behaviour>) {
    nat.expected_classification()
}

fn check(report: &Report, nat: NatType) -> bool {
    (report.nat_type, report.mapping, report.filtering) == expected(nat)
}

/// Flushes the client's NAT state (if it has a router), then classifies from client 0.
fn classify_once(lab: &Lab) -> Report {
    classify_with(lab, ClassifyOptions::default())
}

/// [`classify_once`] with `options`.
fn classify_with(lab: &Lab, options: ClassifyOptions) -> Report {
    if let Some(router) = lab.router_of(0) {
        lab.flush_nat(router).unwrap();
    }
    in_ns(&lab.client(0).ns, || classify(primary(), options)).unwrap()
}

/// The outcome of `RUNS` classifications of one type against one server.
struct Tally {
    right: usize,
    runs: usize,
    elapsed: Vec<Duration>,
    wrong: Vec<Report>,
}

impl Tally {
    fn run(lab: &Lab, nat: NatType, runs: usize, ok: impl Fn(&Report) -> bool) -> Tally {
        let mut tally = Tally {
            right: 0,
            runs,
            elapsed: Vec::new(),
            wrong: Vec::new(),
        };
        // Nothing crosses a udp-blocked router, so runs there cannot influence each other:
        // they run at once, which saves 1.3 s (the test I back-off) per run.
        let reports: Vec<Report> = if nat == NatType::UdpBlocked {
            if let Some(router) = lab.router_of(0) {
                lab.flush_nat(router).unwrap();
            }
            std::thread::scope(|scope| {
                let runs: Vec<_> = (0..runs)
                    .map(|_| {
                        scope.spawn(|| {
                            in_ns(&lab.client(0).ns, || {
                                classify(primary(), ClassifyOptions::default())
                            })
                            .unwrap()
                        })
                    })
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap()).collect()
            })
        } else {
            Vec::new()
        };
        let mut reports = reports.into_iter();
        for _ in 0..runs {
            let report = reports.next().unwrap_or_else(|| classify_once(lab));
            tally.elapsed.push(report.elapsed);
            if report.elapsed > Duration::from_secs(1) && nat != NatType::UdpBlocked {
                say(&format!(
                    "  slow run of {}: {:?} (first round trip {:?}), {:?}",
                    nat.name(),
                    report.elapsed,
                    report.rtt,
                    report.nat_type
                ));
            }
            if ok(&report) && check(&report, nat) {
                tally.right += 1;
            } else {
                tally.wrong.push(report);
            }
        }
        tally
    }

    fn median_ms(&self) -> u128 {
        let mut e = self.elapsed.clone();
        e.sort();
        e.get(e.len() / 2).map_or(0, Duration::as_millis)
    }

    fn max_ms(&self) -> u128 {
        self.elapsed.iter().max().map_or(0, Duration::as_millis)
    }

    fn line(&self, nat: NatType, server: &str) -> String {
        format!(
            "{:<24} {:<16} {:>2}/{:<2} right  median {:>4} ms  max {:>4} ms",
            nat.name(),
            server,
            self.right,
            self.runs,
            self.median_ms(),
            self.max_ms()
        )
    }
}

/// Prints `line` at once (libtest captures `eprintln!` unless `--nocapture`).
fn say(line: &str) {
    eprintln!("{line}");
}

#[test]
fn every_nat_type_is_right_20_of_20_with_ours_stund_and_coturn() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let kinds: Vec<Kind> = [Kind::Ours, Kind::Stund, Kind::Coturn]
        .into_iter()
        .filter(|k| require_server(*k))
        .collect();
    let mut table = String::new();
    let mut failures = String::new();
    for nat in NatType::ALL {
        let t = Instant::now();
        let lab = Lab::one_client(RouterOptions::new(nat)).unwrap();
        let built = t.elapsed();
        for &kind in &kinds {
            let server = start(&lab, kind);
            let tally = Tally::run(&lab, nat, RUNS, |_| true);
            drop(server);
            let line = tally.line(nat, kind.name());
            say(&line);
            writeln!(table, "{line}").unwrap();
            if tally.right < RUNS {
                writeln!(
                    failures,
                    "{} with {}: right {} of {RUNS}; first wrong report: {:#?}",
                    nat.name(),
                    kind.name(),
                    tally.right,
                    tally.wrong[0]
                )
                .unwrap();
            }
        }
        say(&format!(
            "{:<24} lab built in {} ms, type done in {} ms",
            nat.name(),
            built.as_millis(),
            t.elapsed().as_millis()
        ));
    }
    say(&format!("total {} ms", started.elapsed().as_millis()));
    assert!(failures.is_empty(), "{table}\n{failures}");
}

#[test]
fn right_at_least_19_of_20_with_10_percent_loss_on_the_nat_router() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut table = String::new();
    let mut failures = String::new();
    for nat in NatType::ALL {
        let options = RouterOptions {
            loss_percent: 10,
            ..RouterOptions::new(nat)
        };
        // `None` has no router: the loss cannot apply there (it is still classified).
        let lab = Lab::one_client(options).unwrap();
        let server = start(&lab, Kind::Ours);
        let tally = Tally::run(&lab, nat, RUNS, |_| true);
        drop(server);
        let line = tally.line(nat, "ours, 10 % loss");
        say(&line);
        writeln!(table, "{line}").unwrap();
        if tally.right < RUNS - 1 {
            writeln!(
                failures,
                "{} with 10 % loss: right {} of {RUNS}; wrong reports: {:#?}",
                nat.name(),
                tally.right,
                tally.wrong
            )
            .unwrap();
        }
    }
    say(&format!("total {} ms", started.elapsed().as_millis()));
    assert!(failures.is_empty(), "{table}\n{failures}");
}

#[test]
fn hairpinning_is_detected_on_and_off() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    const HAIRPIN_RUNS: usize = 5;
    let mut table = String::new();
    let mut failures = String::new();
    for nat in [
        NatType::FullCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
    ] {
        for hairpin in [true, false] {
            let lab = Lab::one_client(RouterOptions {
                hairpin,
                ..RouterOptions::new(nat)
            })
            .unwrap();
            let server = start(&lab, Kind::Ours);
            let tally = Tally::run(&lab, nat, HAIRPIN_RUNS, |r| r.hairpinning == Some(hairpin));
            drop(server);
            let line = tally.line(nat, &format!("hairpin={hairpin}"));
            say(&line);
            writeln!(table, "{line}").unwrap();
            if tally.right < HAIRPIN_RUNS {
                writeln!(
                    failures,
                    "{} hairpin={hairpin}: right {} of {HAIRPIN_RUNS}; first wrong: {:#?}",
                    nat.name(),
                    tally.right,
                    tally.wrong[0]
                )
                .unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{table}\n{failures}");
}

/// Our server with `alternate: None` and coturn with one listening IP. Modern requests find
/// no OTHER-ADDRESS from either ("no alternate address"); classic requests get coturn's
/// CHANGED-ADDRESS and then a 420 to CHANGE-REQUEST ("refused CHANGE-REQUEST"). A server
/// that answers CHANGE-REQUEST from the wrong address is covered by the simulator
/// (`sim_classifier.rs`): none of the real servers here does that.
#[test]
fn servers_that_cannot_change_their_source_are_unsupported() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    const UNSUPPORTED_RUNS: usize = 4;
    let kinds: Vec<Kind> = [Kind::OursSingle, Kind::CoturnSingle]
        .into_iter()
        .filter(|k| require_server(*k))
        .collect();
    let mut table = String::new();
    let mut failures = String::new();
    for nat in [
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
    ] {
        let lab = Lab::one_client(RouterOptions::new(nat)).unwrap();
        for &kind in &kinds {
            let server = start(&lab, kind);
            let mut right = 0;
            let mut wrong = Vec::new();
            let mut reasons = Vec::new();
            // Modern and classic (RFC 3489) requests: a classic server answers differently.
            for run in 0..UNSUPPORTED_RUNS {
                let options = ClassifyOptions {
                    classic: run % 2 == 1,
                    ..ClassifyOptions::default()
                };
                let report = classify_with(&lab, options);
                if report.nat_type == Verdict::UnsupportedServer {
                    right += 1;
                    if !reasons.contains(&report.unsupported_reason) {
                        reasons.push(report.unsupported_reason);
                    }
                } else {
                    wrong.push(report);
                }
            }
            drop(server);
            let line = format!(
                "{:<24} {:<16} {right}/{UNSUPPORTED_RUNS} unsupported-server ({})",
                nat.name(),
                kind.name(),
                reasons
                    .iter()
                    .map(|r| r.as_deref().unwrap_or("-"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            say(&line);
            writeln!(table, "{line}").unwrap();
            if right < UNSUPPORTED_RUNS {
                writeln!(
                    failures,
                    "{} with {}: {right} of {UNSUPPORTED_RUNS}; wrong: {wrong:#?}",
                    nat.name(),
                    kind.name()
                )
                .unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{table}\n{failures}");
}
