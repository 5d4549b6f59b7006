//! Links over IPv6 in the dual-stack lab (see `tests::lab`'s address plan): two `p2p-client
//! chat` processes on dual-stack sites go direct over IPv6 whatever their routers do to IPv4,
//! symmetric against symmetric included (over IPv6 there is no NAT, only each router's stateful
//! firewall, which simultaneous probes open); a dual-stack site and an IPv4-only site still go
//! direct over IPv4.
//!
//! Each pair gets its own lab (`Lab::two_peers`), our server (STUN, rendezvous, switchboard;
//! the rendezvous server and STUN on IPv4, as a server with one address family would be) and
//! two registered users; both chats start at once with their default bind (one dual-stack
//! socket), type a few lines, wait for a direct path, type more, and end. A run passes when
//! both sides' direct paths (every one of them) lead to the other side's IPv6 address (its
//! host address: no NAT66) or, for the mixed pair, to its IPv4 public address; every message
//! arrives exactly once and in order both ways; both exit 0; and for IPv6 both sides report
//! (`RPT`) that the path went over IPv6 (`cand=ipv6`). One run per pair; the pairs run a few at a time
//! (`LAB_IPV6_PARALLEL`, default 5) to keep the file at about a minute. The chats ask for no
//! port mapping: nobody serves one in this lab, and the symmetric sites would otherwise wait
//! for UPnP's discovery first.
//!
//! QUIC goes the same way: `send` and `receive` between two dual-stack sites behind symmetric
//! NATs (no direct IPv4 path) move a 16 MiB file over the direct IPv6 path.
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise each test prints a loud `SKIPPED:` line,
//! or fails when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tests::lab::chat::phases::{end_both, type_phase, wait_delivered};
use tests::lab::chat::{ChatEvent, ChatOutcome, ChatPeer, ChatServer, binaries, path_events};
use tests::lab::transfer::{
    TransferDir, done_events, random_file, sha256_of, start_receive, start_send,
};
use tests::lab::{Lab, require_lab, serial};
use tests::nat_types::{PunchNat, RouterOptions};

/// The IPv4 NAT types of the chat matrix.
const TYPES: [PunchNat; 5] = [
    PunchNat::Open,
    PunchNat::FullCone,
    PunchNat::RestrictedCone,
    PunchNat::PortRestrictedCone,
    PunchNat::SymmetricRandom,
];
const USERS: [&str; 2] = ["alice", "bob"];
/// How long a run waits for both sides to be direct.
const SETTLE: Duration = Duration::from_secs(20);
/// How long both sides get to receive every message.
const DELIVERY: Duration = Duration::from_secs(20);
/// How long a chat gets to exit after its input ended.
const EXIT: Duration = Duration::from_secs(25);

fn options(nat: PunchNat, ipv6: bool) -> RouterOptions {
    RouterOptions {
        ipv6,
        ..nat.router_options()
    }
}

/// The address family a run's direct paths must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Where side `i`'s peer must be reached: its host's IPv6 address, or its public IPv4 address
/// (its router's outside address, or its own on a public host).
fn expected_ip(lab: &Lab, i: usize, family: Family) -> IpAddr {
    let peer = 1 - i;
    match family {
        Family::V6 => IpAddr::V6(lab.client(peer).ip6().unwrap()),
        Family::V4 => IpAddr::V4(
            lab.router_of(peer)
                .map_or(lab.client(peer).ip(), |r| r.wan_ip),
        ),
    }
}

fn direct(events: &[ChatEvent]) -> bool {
    path_events(events).last().is_some_and(|p| p.0 == "direct")
}

/// One chat between two sites; `Err` says what was wrong, with both sides' reports.
fn run_pair(a: RouterOptions, b: RouterOptions, family: Family) -> Result<Duration, String> {
    let started = Instant::now();
    let lab = Lab::two_peers(a, b).map_err(|e| format!("lab: {e}"))?;
    let server = ChatServer::start(&lab).map_err(|e| format!("server: {e}"))?;
    server
        .register_pair(&lab, USERS[0], USERS[1])
        .map_err(|e| format!("register: {e}"))?;
    let args = ["--wait", "30", "--port-mapping", "off"];
    let start = |i: usize| ChatPeer::start(&lab, lab.client(i), USERS[i], USERS[1 - i], &args);
    let mut peers = [
        start(0).map_err(|e| e.to_string())?,
        start(1).map_err(|e| e.to_string())?,
    ];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    type_phase(&mut peers, &mut sent, "start");
    let deadline = Instant::now() + SETTLE;
    for peer in &mut peers {
        peer.wait_for(deadline.saturating_duration_since(Instant::now()), direct);
    }
    type_phase(&mut peers, &mut sent, "settled");
    let delivered = wait_delivered(&mut peers, &sent, DELIVERY);
    let (outcomes, reports) = end_both(peers, EXIT);
    let mut problems = Vec::new();
    if let Err(e) = delivered {
        problems.push(e.lines().next().unwrap_or_default().to_owned());
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        problems.extend(check_side(&lab, i, outcome, &sent[1 - i], family));
    }
    drop(server);
    if problems.is_empty() {
        Ok(started.elapsed())
    } else {
        Err(format!("{}\n{reports}", problems.join("\n")))
    }
}

/// What is wrong with side `i`'s run: its exit, its messages (`want`, from the peer, in
/// order), its direct paths, and for IPv6 its report.
fn check_side(
    lab: &Lab,
    i: usize,
    outcome: &ChatOutcome,
    want: &[String],
    family: Family,
) -> Vec<String> {
    let user = USERS[i];
    let mut problems = Vec::new();
    if !outcome.succeeded() {
        problems.push(format!("{user} exited with {:?}", outcome.status));
    }
    let got = outcome.messages();
    let expected: Vec<(&str, &str)> = want.iter().map(|l| (USERS[1 - i], l.as_str())).collect();
    if got != expected {
        problems.push(format!(
            "{user} received {} messages, not the {} sent, in order",
            got.len(),
            expected.len()
        ));
    }
    let ip = expected_ip(lab, i, family);
    let paths = outcome.paths();
    let directs: Vec<&str> = paths
        .iter()
        .filter(|p| p.0 == "direct")
        .map(|p| p.1)
        .collect();
    if outcome.last_path().map(|p| p.0) != Some("direct") {
        problems.push(format!("{user} did not end direct: {paths:?}"));
    }
    for remote in &directs {
        let remote: Option<SocketAddr> = remote.parse().ok();
        if remote.map(|r| r.ip()) != Some(ip) {
            problems.push(format!("{user}: a direct path to {remote:?}, not to {ip}"));
        }
    }
    // Telemetry names the kind of the peer's address that answered: `ipv6` over IPv6 (the
    // link logs its report).
    let reported = |cand: &str| {
        outcome
            .stderr
            .lines()
            .any(|l| l.contains("reporting the outcome") && l.contains(cand))
    };
    let want = match family {
        Family::V6 => "cand=ipv6",
        Family::V4 => "outcome=direct",
    };
    if !reported(want) || (family == Family::V4 && reported("cand=ipv6")) {
        problems.push(format!("{user} did not report {want}"));
    }
    problems
}

/// Runs `pairs` (name, options, family) a few at a time, each in its own lab, and fails with
/// every failed pair's report.
fn run_all(pairs: Vec<(String, RouterOptions, RouterOptions, Family)>) {
    binaries().unwrap();
    let parallel: usize = std::env::var("LAB_IPV6_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let started = Instant::now();
    let mut failures = Vec::new();
    for batch in pairs.chunks(parallel) {
        let results: Vec<(String, Result<Duration, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|(name, a, b, family)| {
                    (name.clone(), s.spawn(move || run_pair(*a, *b, *family)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    let result = h.join().unwrap_or_else(|_| Err("panicked".into()));
                    (name, result)
                })
                .collect()
        });
        for (name, result) in results {
            match result {
                Ok(took) => eprintln!("{name:<48} ok ({} ms)", took.as_millis()),
                Err(e) => {
                    eprintln!("{name:<48} FAILED");
                    failures.push(format!("=== {name}\n{e}"));
                }
            }
        }
    }
    eprintln!(
        "{} pairs in {} ms",
        pairs.len(),
        started.elapsed().as_millis()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dual_stack_sites_go_direct_over_ipv6_for_every_ipv4_nat_pair() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let mut pairs = Vec::new();
    for (k, &x) in TYPES.iter().enumerate() {
        for &y in &TYPES[k..] {
            let name = format!("{} <-> {} (dual stack)", x.name(), y.name());
            pairs.push((name, options(x, true), options(y, true), Family::V6));
        }
    }
    run_all(pairs);
}

#[test]
fn an_ipv4_only_site_and_a_dual_stack_site_go_direct_over_ipv4() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let nat = PunchNat::PortRestrictedCone;
    run_all(vec![
        (
            format!("{0} (dual stack) <-> {0} (IPv4 only)", nat.name()),
            options(nat, true),
            options(nat, false),
            Family::V4,
        ),
        (
            format!("{0} (IPv4 only) <-> {0} (dual stack)", nat.name()),
            options(nat, false),
            options(nat, true),
            Family::V4,
        ),
    ]);
}

/// `send` and `receive` between dual-stack sites behind symmetric NATs: the link is direct over
/// IPv6 (over IPv4 this pair only has the relay), and QUIC carries the file whole over it.
#[test]
fn a_file_crosses_symmetric_nats_over_ipv6_whole() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let nat = PunchNat::SymmetricRandom;
    let lab = Lab::two_peers(options(nat, true), options(nat, true)).unwrap();
    let server = ChatServer::start(&lab).unwrap();
    server.register_pair(&lab, USERS[0], USERS[1]).unwrap();
    let dir = TransferDir::new("ipv6").unwrap();
    let file = dir.src().join("v6.bin");
    random_file(&file, 16 << 20).unwrap();
    let sha = sha256_of(&file).unwrap();
    let args = ["--wait", "30", "--port-mapping", "off"];
    let (a, b) = (lab.client(0), lab.client(1));
    let sender = start_send(
        &lab,
        a,
        USERS[0],
        USERS[1],
        std::slice::from_ref(&file),
        &args,
    );
    let receiver = start_receive(&lab, b, USERS[1], USERS[0], &dir.out(), &args);
    let (sender, receiver) = (sender.unwrap(), receiver.unwrap());
    let outcomes = [
        sender.finish(Duration::from_secs(90)),
        receiver.finish(Duration::from_secs(90)),
    ];
    let reports = format!("{}\n{}", outcomes[0].report(60), outcomes[1].report(60));
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.succeeded(), "{} failed\n{reports}", USERS[i]);
        let ip = expected_ip(&lab, i, Family::V6);
        let paths = outcome.paths();
        assert_eq!(
            outcome.last_path().map(|p| p.0),
            Some("direct"),
            "{}: {paths:?}",
            USERS[i]
        );
        for (_, remote, _) in paths.iter().filter(|p| p.0 == "direct") {
            let remote: SocketAddr = remote.parse().unwrap();
            assert_eq!(remote.ip(), ip, "{}: {paths:?}", USERS[i]);
        }
        let done = done_events(outcome);
        assert_eq!(done.len(), 1, "{}: {done:?}\n{reports}", USERS[i]);
        assert_eq!((done[0].1, done[0].2.as_str()), (16 << 20, sha.as_str()));
    }
    assert_eq!(sha256_of(&dir.out().join("v6.bin")).unwrap(), sha);
}
