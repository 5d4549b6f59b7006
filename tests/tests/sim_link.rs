//! The link core (`shared::link::LinkCore`) between two peers behind simulated NATs, with a
//! simulated switchboard and rendezvous server, all in virtual time: the path every NAT pair
//! ends on, fallback to the relay and re-punching after a mapping expiry and after
//! renumbering, the loss of the relay (while direct, and while relayed), and a long message
//! stream across path changes that loses and duplicates nothing.
//!
//! Run with `--nocapture` for the virtual times.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use shared::link::{LinkCoreEvent, LinkEnd, PathKind};
use tests::nat_types::{ExpectedPunch, PunchNat, expected_punch};
use tests::sim::{LinkAgent, LinkPair, LinkSetup};

/// The 6 s silence before a direct path is dropped, and a margin.
const FALLBACK: Duration = Duration::from_secs(8);
/// Long enough for a re-punch (gathering, introduction, punching) and a margin.
const REPUNCH: Duration = Duration::from_secs(20);

/// The numbers of the messages an agent received (each message starts with its number).
fn numbers(agent: &LinkAgent) -> Vec<u64> {
    agent
        .log
        .messages
        .iter()
        .map(|m| u64::from_be_bytes(m[..8].try_into().unwrap()))
        .collect()
}

fn message(number: u64) -> Vec<u8> {
    let mut bytes = number.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0x5a; 56]);
    bytes
}

/// Sends messages `from..to` from A, `per_tick` every 100 ms of virtual time (and lets time
/// run until the last tick).
fn stream(pair: &mut LinkPair, from: u64, to: u64, per_tick: u64) {
    let mut next = from;
    while next < to {
        let now = pair.now();
        for n in next..(next + per_tick).min(to) {
            pair.agent_mut(0).send(now, n, message(n));
        }
        next = (next + per_tick).min(to);
        pair.run_for(Duration::from_millis(100)).unwrap();
    }
}

/// Path kinds announced by an agent, in order.
fn path_kinds(agent: &LinkAgent) -> Vec<PathKind> {
    agent.log.paths.iter().map(|(_, c)| c.kind).collect()
}

/// Finishes A and runs until both ended; A must end cleanly with everything delivered.
fn finish_cleanly(pair: &mut LinkPair, sent: u64) {
    let now = pair.now();
    pair.agent_mut(0).finish(now);
    let ended = pair
        .run_until(Duration::from_secs(30), |a, b| {
            a.log.ended.is_some() && b.log.ended.is_some()
        })
        .unwrap();
    assert!(
        ended,
        "A {:?}\nB {:?}",
        pair.agent(0).log.ended,
        pair.agent(1).log.ended
    );
    let (_, end, outcome) = pair.agent(0).log.ended.clone().unwrap();
    assert_eq!((end, outcome), (LinkEnd::Done, Ok(())));
    assert_eq!(pair.agent(0).log.delivered, (1..=sent).collect::<Vec<_>>());
    assert_eq!(
        numbers(pair.agent(1)),
        (1..=sent).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    let (_, end, _) = pair.agent(1).log.ended.clone().unwrap();
    assert_eq!(end, LinkEnd::PeerLeft);
}

fn direct_pair(a: PunchNat, b: PunchNat, seed: u64) -> LinkPair {
    let mut pair = LinkPair::build(&LinkSetup::new(a, b, seed));
    assert!(
        pair.run_until_path(PathKind::Direct, Duration::from_secs(10))
            .unwrap(),
        "{a:?}/{b:?} never went direct"
    );
    pair
}

#[test]
fn every_nat_pair_ends_on_its_expected_path() {
    let mut violations = Vec::new();
    for a in PunchNat::ALL {
        for b in PunchNat::ALL {
            let expected = expected_punch(a, b);
            let seeds: u64 = if expected == ExpectedPunch::Birthday {
                5
            } else {
                2
            };
            let mut direct = 0;
            for seed in 1..=seeds {
                let mut pair = LinkPair::build(&LinkSetup::new(a, b, seed));
                stream(&mut pair, 1, 21, 2);
                pair.run_for(Duration::from_secs(10)).unwrap();
                let (pa, pb) = (pair.agent(0).log.path(), pair.agent(1).log.path());
                if pa == Some(PathKind::Direct) && pb == Some(PathKind::Direct) {
                    direct += 1;
                }
                if expected == ExpectedPunch::Relay {
                    let no_direct = |x: &LinkAgent| {
                        x.log
                            .saw(|e| *e == LinkCoreEvent::PunchFailed { report: true })
                    };
                    if pa != Some(PathKind::Relayed)
                        || !no_direct(pair.agent(0))
                        || !no_direct(pair.agent(1))
                    {
                        violations.push(format!("{a:?}/{b:?} seed {seed}: {pa:?}/{pb:?}"));
                    }
                }
                if numbers(pair.agent(1)) != (1..21).collect::<Vec<_>>() {
                    violations.push(format!(
                        "{a:?}/{b:?} seed {seed}: messages {:?}",
                        numbers(pair.agent(1))
                    ));
                }
                let t = pair.agent(0).log.paths.last().map(|(t, _)| *t - pair.start);
                println!("{a:?}/{b:?} seed {seed}: {pa:?}/{pb:?} settled after {t:?}");
            }
            let ok = match expected {
                ExpectedPunch::Direct => direct == seeds,
                ExpectedPunch::Birthday => direct + 1 >= seeds,
                ExpectedPunch::Relay => direct == 0,
            };
            if !ok {
                violations.push(format!(
                    "{a:?}/{b:?}: {direct}/{seeds} direct, expected {expected:?}"
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_mapping_expiry_falls_back_to_the_relay_and_punches_again() {
    let mut pair = direct_pair(PunchNat::PortRestrictedCone, PunchNat::FullCone, 7);
    let before = pair.agent(1).log.paths.last().unwrap().1.remote;
    let expired = pair.now();
    pair.expire_mappings(0);
    assert!(
        pair.run_until_path(PathKind::Relayed, FALLBACK).unwrap(),
        "no fallback"
    );
    let fell_back = pair.now() - expired;
    assert!(
        pair.run_until_path(PathKind::Direct, REPUNCH).unwrap(),
        "no new direct path"
    );
    let back = pair.now() - expired;
    println!("mapping expiry: relayed after {fell_back:?}, direct again after {back:?}");
    let after = pair.agent(1).log.paths.last().unwrap().1.remote;
    assert_ne!(before, after, "B reaches A at its new port");
    assert!(pair.agent(0).log.saw(|e| matches!(
        e,
        LinkCoreEvent::PunchingAgain {
            after_direct: true,
            ..
        }
    )));
    stream(&mut pair, 1, 11, 5);
    finish_cleanly(&mut pair, 10);
}

#[test]
fn a_renumbered_router_is_punched_again() {
    let mut pair = direct_pair(
        PunchNat::PortRestrictedCone,
        PunchNat::PortRestrictedCone,
        3,
    );
    let renumbered = pair.now();
    let new_ip = IpAddr::from([203, 0, 113, 77]);
    pair.renumber(0, new_ip);
    assert!(
        pair.run_until_path(PathKind::Relayed, FALLBACK).unwrap(),
        "no fallback"
    );
    assert!(
        pair.run_until_path(PathKind::Direct, REPUNCH).unwrap(),
        "no new direct path"
    );
    let direct_at = pair.agent(0).log.paths.last().unwrap().0;
    println!(
        "renumbering: direct again after {:?}",
        direct_at - renumbered
    );
    assert_eq!(
        pair.agent(1).log.paths.last().unwrap().1.remote.ip(),
        new_ip
    );
    stream(&mut pair, 1, 11, 5);
    finish_cleanly(&mut pair, 10);
}

#[test]
fn losing_the_relay_while_direct_changes_nothing_and_it_is_rejoined() {
    let mut pair = direct_pair(PunchNat::FullCone, PunchNat::RestrictedCone, 5);
    let joins = pair.world.borrow().stats.relay_joins;
    let changes = pair.agent(0).log.paths.len();
    pair.close_relay();
    stream(&mut pair, 1, 31, 1);
    assert_eq!(pair.agent(0).log.paths.len(), changes, "still direct");
    assert!(pair.agent(0).log.saw(|e| matches!(
        e,
        LinkCoreEvent::RelayClosed {
            expected: false,
            ..
        }
    )));
    assert_eq!(
        pair.world.borrow().stats.relay_joins,
        joins + 2,
        "rejoined by both"
    );
    // The rejoined relay carries the link when the direct path dies.
    pair.cut_off(1, true);
    assert!(
        pair.run_until_path(PathKind::Relayed, FALLBACK).unwrap(),
        "no fallback"
    );
    pair.cut_off(1, false);
    stream(&mut pair, 31, 41, 1);
    finish_cleanly(&mut pair, 40);
}

#[test]
fn losing_the_relay_while_relayed_ends_direct() {
    let mut pair = LinkPair::build(&LinkSetup::new(
        PunchNat::PortRestrictedCone,
        PunchNat::SymmetricSequential,
        9,
    ));
    // No direct path at first: A's site drops every datagram.
    pair.cut_off(0, true);
    stream(&mut pair, 1, 11, 1);
    let no_direct = pair
        .run_until(Duration::from_secs(10), |a, _| {
            a.log
                .saw(|e| *e == LinkCoreEvent::PunchFailed { report: true })
        })
        .unwrap();
    assert!(no_direct);
    assert_eq!(pair.agent(0).log.path(), Some(PathKind::Relayed));
    // The relay breaks while it carries the link; the network is back.
    pair.cut_off(0, false);
    let lost = pair.now();
    pair.close_relay();
    stream(&mut pair, 11, 21, 1);
    assert!(
        pair.run_until_path(PathKind::Direct, REPUNCH).unwrap(),
        "no direct path"
    );
    let direct_at = pair.agent(0).log.paths.last().unwrap().0;
    println!(
        "relay lost while relayed: direct after {:?}",
        direct_at - lost
    );
    assert!(pair.agent(0).log.saw(|e| matches!(
        e,
        LinkCoreEvent::PunchingAgain {
            after_direct: false,
            ..
        }
    )));
    finish_cleanly(&mut pair, 20);
}

#[test]
fn ten_thousand_messages_cross_three_path_changes_exactly_once() {
    let mut pair = LinkPair::build(&LinkSetup::new(
        PunchNat::PortRestrictedCone,
        PunchNat::RestrictedCone,
        11,
    ));
    let start = pair.now();
    // 80 messages every 100 ms for 12.5 s: relayed, direct, relayed (the mapping expires at
    // 3 s), direct again (re-punched).
    let mut next = 1;
    while next <= 10_000 {
        if pair.now() >= start + Duration::from_secs(3)
            && pair.now() < start + Duration::from_millis(3100)
        {
            pair.expire_mappings(0);
        }
        let now = pair.now();
        for n in next..(next + 80).min(10_001) {
            pair.agent_mut(0).send(now, n, message(n));
        }
        next += 80;
        pair.run_for(Duration::from_millis(100)).unwrap();
    }
    pair.run_until_path(PathKind::Direct, REPUNCH).unwrap();
    let kinds = path_kinds(pair.agent(0));
    println!(
        "paths of A: {kinds:?}, stream over after {:?}",
        pair.now() - start
    );
    assert!(
        kinds.starts_with(&[
            PathKind::Relayed,
            PathKind::Direct,
            PathKind::Relayed,
            PathKind::Direct
        ]),
        "{kinds:?}"
    );
    finish_cleanly(&mut pair, 10_000);
    println!(
        "10,000 messages delivered after {:?} (virtual)",
        pair.now() - start
    );
}

#[test]
fn a_relay_lost_while_the_server_is_away_is_rejoined_when_it_is_back() {
    let mut pair = direct_pair(PunchNat::RestrictedCone, PunchNat::PortRestrictedCone, 13);
    let joins = pair.world.borrow().stats.relay_joins;
    pair.set_rendezvous(false);
    pair.close_relay();
    stream(&mut pair, 1, 21, 1);
    assert_eq!(
        pair.world.borrow().stats.invites,
        0,
        "no introduction is asked for without the server"
    );
    assert_eq!(pair.agent(0).log.path(), Some(PathKind::Direct));
    pair.set_rendezvous(true);
    stream(&mut pair, 21, 31, 1);
    assert_eq!(pair.world.borrow().stats.relay_joins, joins + 2, "rejoined");
    finish_cleanly(&mut pair, 30);
}

#[test]
fn a_seed_fixes_a_run_bit_for_bit() {
    let run = || {
        let mut pair = LinkPair::build(&LinkSetup {
            loss_percent: 5,
            ..LinkSetup::new(PunchNat::SymmetricRandom, PunchNat::PortRestrictedCone, 21)
        });
        stream(&mut pair, 1, 201, 20);
        pair.expire_mappings(1);
        pair.run_for(REPUNCH).unwrap();
        (pair.sim.net.digest(), numbers(pair.agent(1)).len())
    };
    let first = run();
    assert_eq!(first, run());
    assert_eq!(first.1, 200, "every message, through 5 % loss");
}

/// Each punched introduction is reported once per side, when its outcome is known: direct
/// (with the time since the introduction and the kind of address that answered), or relayed
/// once punching gave up; and nothing at all when reporting is off.
#[test]
fn each_side_reports_its_introductions_outcome_once_unless_told_not_to() {
    use shared::rendezvous::telemetry::{Outcome, PunchMethod, WorkedCandidate};
    let cases = [
        (
            PunchNat::FullCone,
            PunchNat::PortRestrictedCone,
            Outcome::Direct,
        ),
        (
            PunchNat::SymmetricRandom,
            PunchNat::PortRestrictedCone,
            Outcome::Direct,
        ),
        (
            PunchNat::SymmetricRandom,
            PunchNat::SymmetricRandom,
            Outcome::Relayed,
        ),
    ];
    for (a, b, outcome) in cases {
        let mut pair = LinkPair::build(&LinkSetup::new(a, b, 3));
        stream(&mut pair, 1, 11, 2);
        pair.run_for(Duration::from_secs(15)).unwrap();
        let mut methods = Vec::new();
        for i in 0..2 {
            let log = &pair.agent(i).log;
            assert_eq!(
                log.reports.len(),
                1,
                "{a:?}/{b:?} side {i}: {:?}",
                log.reports
            );
            let (at, _, report) = log.reports[0];
            assert_eq!(report.outcome, outcome, "{a:?}/{b:?} side {i}");
            methods.push(report.method);
            match outcome {
                Outcome::Direct => {
                    // Reported when the path was confirmed, with the time since the
                    // introduction; the direct path event comes in the same step.
                    let direct_at = log
                        .paths
                        .iter()
                        .find(|(_, c)| c.kind == PathKind::Direct)
                        .map(|(t, _)| *t)
                        .unwrap();
                    assert!(at <= direct_at, "{a:?}/{b:?} side {i}");
                    assert_eq!(report.time_to_direct, Some(at - pair.start));
                    assert_ne!(report.candidate, WorkedCandidate::None);
                }
                _ => {
                    assert_eq!(report.time_to_direct, None);
                    assert!(log.saw(|e| matches!(e, LinkCoreEvent::PunchFailed { .. })));
                }
            }
        }
        // The two sides name the same introduction.
        assert_eq!(
            pair.agent(0).log.reports[0].1,
            pair.agent(1).log.reports[0].1
        );
        let expected = match (a, b) {
            (PunchNat::SymmetricRandom, PunchNat::SymmetricRandom) => {
                [PunchMethod::BothSymmetric; 2]
            }
            (PunchNat::SymmetricRandom, _) => [PunchMethod::Birthday; 2],
            _ => [PunchMethod::Plain; 2],
        };
        assert_eq!(methods, expected, "{a:?}/{b:?}");
        // Behind a full cone the peer answers from its srflx address; the birthday method
        // finds a port the symmetric side never offered.
        if a == PunchNat::SymmetricRandom && outcome == Outcome::Direct {
            assert_eq!(
                pair.agent(1).log.reports[0].2.candidate,
                WorkedCandidate::Prflx
            );
        }
    }

    let mut pair = LinkPair::build(&LinkSetup {
        report_outcomes: false,
        ..LinkSetup::new(PunchNat::FullCone, PunchNat::PortRestrictedCone, 3)
    });
    stream(&mut pair, 1, 11, 2);
    pair.run_for(Duration::from_secs(15)).unwrap();
    assert_eq!(pair.agent(0).log.path(), Some(PathKind::Direct));
    assert!(pair.agent(0).log.reports.is_empty() && pair.agent(1).log.reports.is_empty());
}
