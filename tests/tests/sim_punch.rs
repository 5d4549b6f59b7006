//! UDP hole punching (`shared::punch`) between every pair of NAT types in the simulator:
//! home routers, 10 % loss on every link, routers without the inbound drop rule (the
//! conntrack race), the naive punching that race defeats, keepalives and path loss.
//!
//! Run with `--nocapture` for the tables of virtual time and packets per pair.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shared::punch::PunchConfig;
use tests::nat_types::{ExpectedPunch, PunchNat, expected_punch};
use tests::sim::{PairOutcome, PairSetup, PunchPair};

/// Seeds per pair.
const SEEDS: u64 = 10;
/// Longest a pair may take (virtual) before it counts as hung.
const LIMIT: Duration = Duration::from_secs(20);
/// Both symmetric: both must have given up within this long after A's start.
const GIVE_UP_BOUND: Duration = Duration::from_secs(8);

fn run(setup: &PairSetup) -> PairOutcome {
    PunchPair::build(setup).run(LIMIT).unwrap()
}

fn short(o: &PairOutcome) -> String {
    let strategy = |s: shared::punch::Strategy| match s {
        shared::punch::Strategy::Plain => "plain".to_string(),
        shared::punch::Strategy::Predict { step } => format!("predict{step:+}"),
        shared::punch::Strategy::BirthdayListen => "bday-listen".to_string(),
        shared::punch::Strategy::BirthdayProbe => "bday-probe".to_string(),
        shared::punch::Strategy::BothSymmetric => "both-sym".to_string(),
        _ => format!("{s:?}"),
    };
    format!("{}/{}", strategy(o.strategies.0), strategy(o.strategies.1))
}

/// Runs every ordered pair of the matrix over [`SEEDS`] seeds with `tweak` applied, prints a
/// table and returns the violations of [`expected_punch`].
fn matrix(title: &str, tweak: impl Fn(&mut PairSetup)) -> Vec<String> {
    let mut violations = Vec::new();
    let mut table = vec![format!(
        "{title}\n{:<20} {:<20} {:<8} {:>6} {:<24} {:>9} {:>9} {:>8} {:>8}",
        "A",
        "B",
        "expected",
        "direct",
        "strategies A/B",
        "t med ms",
        "t max ms",
        "pkts med",
        "pkts max"
    )];
    for a in PunchNat::ALL {
        for b in PunchNat::ALL {
            let expected = expected_punch(a, b);
            let mut outcomes = Vec::new();
            for seed in 1..=SEEDS {
                let mut setup = PairSetup::new(a, b, seed);
                tweak(&mut setup);
                outcomes.push(run(&setup));
            }
            let direct = outcomes.iter().filter(|o| o.direct).count() as u64;
            let mut times: Vec<u128> = outcomes
                .iter()
                .map(|o| o.elapsed.map_or(u128::MAX, |e| e.as_millis()))
                .collect();
            times.sort_unstable();
            let mut packets: Vec<u64> = outcomes.iter().map(|o| o.packets).collect();
            packets.sort_unstable();
            let ms = |t: u128| {
                if t == u128::MAX {
                    "hung".to_string()
                } else {
                    t.to_string()
                }
            };
            table.push(format!(
                "{:<20} {:<20} {:<8} {:>3}/{:<2} {:<24} {:>9} {:>9} {:>8} {:>8}",
                a.name(),
                b.name(),
                format!("{expected:?}"),
                direct,
                SEEDS,
                short(&outcomes[0]),
                ms(times[times.len() / 2]),
                ms(times[times.len() - 1]),
                packets[packets.len() / 2],
                packets[packets.len() - 1],
            ));
            let pair = format!("{} -> {}", a.name(), b.name());
            for (seed, o) in (1..).zip(&outcomes) {
                let settled = o.direct || o.failed;
                let ok = match expected {
                    ExpectedPunch::Direct => o.direct,
                    // A birthday miss must still end cleanly, in failure on both sides.
                    ExpectedPunch::Birthday => settled,
                    ExpectedPunch::Relay => {
                        o.failed && o.elapsed.is_some_and(|e| e <= GIVE_UP_BOUND)
                    }
                };
                if !ok {
                    violations.push(format!(
                        "{title}: {pair} seed {seed}: expected {expected:?}, got direct={} \
                         failed={} elapsed={:?}\n  A {:?}\n  B {:?}",
                        o.direct, o.failed, o.elapsed, o.a, o.b
                    ));
                }
            }
            if expected == ExpectedPunch::Birthday && direct < 9 {
                violations.push(format!(
                    "{title}: {pair}: birthday method direct in only {direct}/{SEEDS} seeds"
                ));
            }
        }
    }
    eprintln!("{}\n", table.join("\n"));
    violations
}

#[test]
fn every_nat_pair_on_home_routers_ends_as_expected() {
    let v = matrix("home routers, no loss, both on time", |_| {});
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn every_nat_pair_with_ten_percent_loss_on_every_link_ends_as_expected() {
    let v = matrix("10 % loss on every link, B 50 ms late", |s| {
        s.loss_percent = 10;
        s.late = Duration::from_millis(50);
    });
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn every_nat_pair_without_the_inbound_drop_rule_ends_as_expected() {
    let v = matrix(
        "no inbound drop rule (conntrack race), B 300 ms late",
        |s| {
            s.drop_unsolicited = false;
            s.late = Duration::from_millis(300);
        },
    );
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn the_conntrack_race_with_loss_too_ends_as_expected() {
    let v = matrix("no inbound drop rule, 10 % loss, B 300 ms late", |s| {
        s.drop_unsolicited = false;
        s.loss_percent = 10;
        s.late = Duration::from_millis(300);
    });
    assert!(v.is_empty(), "{}", v.join("\n"));
}

/// Ordered pairs (A on time, B 300 ms late) for the race demonstration, and whether naive
/// punching is poisoned there. A's early full probes reach B's NAT before B's first packet to
/// A and poison B's port; B's packets then leave from another port, which only an A that
/// filters by port drops. So the race bites when the early side filters by port and the late
/// side filters at all; a restricted cone early on is immune (it admits the moved port).
const RACE_PAIRS: [(PunchNat, PunchNat, bool); 5] = [
    (
        PunchNat::PortRestrictedCone,
        PunchNat::PortRestrictedCone,
        true,
    ),
    (PunchNat::PortRestrictedCone, PunchNat::RestrictedCone, true),
    (
        PunchNat::PortRestrictedCone,
        PunchNat::SymmetricSequential,
        true,
    ),
    (
        PunchNat::SymmetricSequential,
        PunchNat::PortRestrictedCone,
        true,
    ),
    (
        PunchNat::RestrictedCone,
        PunchNat::PortRestrictedCone,
        false,
    ),
];

#[test]
fn naive_punching_is_poisoned_by_the_race_and_the_protocol_is_not() {
    let naive_no_priming = PunchConfig {
        prime: false,
        wait_for_peer_primed: false,
        ..PunchConfig::default()
    };
    let naive_no_waiting = PunchConfig {
        wait_for_peer_primed: false,
        ..PunchConfig::default()
    };
    let variants = [
        ("no priming", naive_no_priming, true),
        ("priming, no wait", naive_no_waiting, true),
        ("protocol", PunchConfig::default(), false),
    ];
    let mut table = vec![format!(
        "naive punching vs the conntrack race, B 300 ms late\n{:<20} {:<28} {:<18} {:<14} {:<12}",
        "A (on time)", "B (300 ms late)", "variant", "no drop rule", "drop rule"
    )];
    let mut violations = Vec::new();
    for (a, b, racy) in RACE_PAIRS {
        for (name, config, naive) in &variants {
            let mut results = Vec::new();
            for drop_unsolicited in [false, true] {
                let mut direct = 0;
                for seed in 1..=5 {
                    let mut setup = PairSetup::new(a, b, seed);
                    setup.drop_unsolicited = drop_unsolicited;
                    setup.late = Duration::from_millis(300);
                    setup.config = config.clone();
                    let o = run(&setup);
                    direct += u32::from(o.direct);
                    // Home routers connect whatever the variant; without the drop rule a
                    // naive variant is poisoned on a racy pair.
                    let want = drop_unsolicited || !(racy && *naive);
                    if o.direct != want {
                        violations.push(format!(
                            "{} -> {} {name} drop={drop_unsolicited} seed {seed}: direct={}",
                            a.name(),
                            b.name(),
                            o.direct
                        ));
                    }
                    if !o.direct && !o.failed {
                        violations.push(format!("{} -> {} {name}: hung", a.name(), b.name()));
                    }
                }
                results.push(format!("{direct}/5 direct"));
            }
            table.push(format!(
                "{:<20} {:<28} {:<18} {:<14} {:<12}",
                a.name(),
                b.name(),
                name,
                results[0],
                results[1]
            ));
        }
    }
    eprintln!("{}\n", table.join("\n"));
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn prediction_and_the_birthday_method_are_what_connects_the_hard_pairs() {
    // Controls: switch each method off and its pair fails (so the matrix can fail).
    let cases = [
        (
            PunchNat::PortRestrictedCone,
            PunchNat::SymmetricSequential,
            PunchConfig {
                predicted_ports: 0,
                ..PunchConfig::default()
            },
        ),
        (
            PunchNat::PortRestrictedCone,
            PunchNat::SymmetricRandom,
            PunchConfig {
                birthday_sockets: 0,
                ..PunchConfig::default()
            },
        ),
    ];
    for (a, b, config) in cases {
        for (a, b) in [(a, b), (b, a)] {
            let direct = (1..=10)
                .filter(|&seed| {
                    let mut setup = PairSetup::new(a, b, seed);
                    setup.config = config.clone();
                    let o = run(&setup);
                    assert!(o.direct || o.failed, "{o:?}");
                    o.direct
                })
                .count();
            // One mapping against 2,048 of 64,512 ports: about a 3 % chance per seed.
            assert!(direct <= 1, "{} -> {}: {direct}/10", a.name(), b.name());
        }
    }
}

#[test]
fn keepalives_hold_a_path_past_the_nat_timeout_and_a_dead_path_is_reported_lost() {
    let setup = PairSetup::new(
        PunchNat::PortRestrictedCone,
        PunchNat::PortRestrictedCone,
        3,
    );
    let mut pair = PunchPair::build(&setup);
    let o = pair.run(LIMIT).unwrap();
    assert!(o.direct, "{o:?}");
    // Two minutes of silence from the chat: the 15 s keepalives keep the 30 s mappings.
    let end = pair.sim.net.now() + Duration::from_secs(120);
    pair.sim.run_until(end, |_| false).unwrap();
    for log in [&pair.agent_a().log, &pair.agent_b().log] {
        assert_eq!(log.path_lost_at, None, "{log:?}");
    }
    let keepalives = pair.agent_a().stats().keepalives;
    assert!((7..=9).contains(&keepalives), "{keepalives}");
    // The chat still gets through the same mappings.
    let (a, b) = (pair.a, pair.b);
    pair.sim.agent_mut::<tests::sim::PunchAgent>(a).send_chat();
    pair.sim.agent_mut::<tests::sim::PunchAgent>(b).send_chat();
    let end = pair.sim.net.now() + Duration::from_secs(1);
    pair.sim.run_until(end, |_| false).unwrap();
    assert_eq!(pair.agent_a().log.chat_received.len(), 2);
    assert_eq!(pair.agent_b().log.chat_received.len(), 2);
    // Cut B's site off: both report the path lost within the path timeout.
    let cut = pair.sim.net.now();
    pair.sim.net.set_nat_loss(pair.nats.1.unwrap(), 100);
    let end = cut + Duration::from_secs(60);
    pair.sim.run_until(end, |_| false).unwrap();
    for log in [&pair.agent_a().log, &pair.agent_b().log] {
        let lost = log.path_lost_at.expect("path lost reported") - cut;
        assert!(lost <= Duration::from_secs(40), "{lost:?}");
        assert!(lost >= Duration::from_secs(25), "{lost:?}");
    }
}

#[test]
fn without_keepalives_the_nat_forgets_the_path() {
    let mut setup = PairSetup::new(PunchNat::PortRestrictedCone, PunchNat::SymmetricRandom, 4);
    setup.config.keepalive_interval = None;
    let mut pair = PunchPair::build(&setup);
    assert!(pair.run(LIMIT).unwrap().direct);
    // 45 s of silence: past the 30 s mapping timeout, and past the path timeout.
    let end = pair.sim.net.now() + Duration::from_secs(45);
    pair.sim.run_until(end, |_| false).unwrap();
    assert!(pair.agent_a().log.path_lost_at.is_some());
    assert!(pair.agent_b().log.path_lost_at.is_some());
    let now = pair.sim.net.now();
    let nat = pair.nats.1.unwrap();
    assert_eq!(
        pair.sim.net.nat_mut(nat).binding_count(now),
        0,
        "the symmetric NAT forgot every mapping"
    );
}

#[test]
fn the_birthday_listener_connects_on_an_extra_socket() {
    let setup = PairSetup::new(PunchNat::SymmetricRandom, PunchNat::PortRestrictedCone, 1);
    let o = run(&setup);
    assert!(o.direct, "{o:?}");
    assert_eq!(o.a.sockets_opened, 256);
    let (_, socket, _) = o.a.connected.unwrap();
    assert!(socket.0 >= 1, "an extra socket: {socket:?}");
    let (_, prober_socket, remote) = o.b.connected.unwrap();
    assert_eq!(prober_socket.0, 0);
    assert_eq!(remote.ip().to_string(), "203.0.113.1");
}

#[test]
fn a_seeded_pair_is_repeatable() {
    let mut setup = PairSetup::new(PunchNat::PortRestrictedCone, PunchNat::SymmetricRandom, 9);
    setup.loss_percent = 10;
    let digest = |setup: &PairSetup| {
        let mut pair = PunchPair::build(setup);
        let o = pair.run(LIMIT).unwrap();
        (pair.sim.net.digest(), o.packets, o.elapsed)
    };
    assert_eq!(digest(&setup), digest(&setup));
}
