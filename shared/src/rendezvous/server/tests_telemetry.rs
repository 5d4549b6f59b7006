//! Connectivity reports (`RPT`): who may report, once, for how long, and how an introduction
//! is counted into the aggregates.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::tests::{Harness, to};
use super::tests_intro::{introduce, key, sid_of, world};
use crate::rendezvous::offer::OfferNat;
use crate::rendezvous::telemetry::{NatPair, Outcome, PortMapping, PunchMethod, WorkedCandidate};

/// alice's offer says port-restricted, bob's full-cone (see `tests_intro`).
fn pair() -> NatPair {
    NatPair::new(OfferNat::PortRestricted, OfferNat::FullCone)
}

/// The counts of `method` on alice and bob's pair: (direct, relayed, failed).
fn counts(h: &Harness, method: PunchMethod) -> (u64, u64, u64) {
    let pairs = h.server.telemetry().pairs();
    let stats = pairs
        .iter()
        .find(|(p, m, _)| *p == pair() && *m == method)
        .map(|(_, _, s)| (*s).clone())
        .unwrap_or_default();
    (
        stats.attempts(Outcome::Direct),
        stats.attempts(Outcome::Relayed),
        stats.attempts(Outcome::Failed),
    )
}

#[test]
fn both_reports_count_one_introduction_on_the_pair_of_the_offers() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let sid = introduce(&mut h, alice, bob);
    h.log.clear();
    assert_eq!(
        h.ask(
            alice,
            &format!("RPT 8 {sid} outcome=direct method=plain cand=srflx ms=900 map=none")
        ),
        [format!("RPT 8 {sid}")]
    );
    // Nothing is pushed, and one report does not count the introduction yet.
    assert!(to(&h.log, bob).is_empty() && to(&h.log, carol).is_empty());
    assert_eq!(h.server.telemetry().generation(), 0);
    assert_eq!(
        h.ask(
            bob,
            &format!("RPT 9 {sid} outcome=direct method=plain cand=prflx ms=300")
        ),
        [format!("RPT 9 {sid}")]
    );
    assert_eq!(counts(&h, PunchMethod::Plain), (1, 0, 0));
    let pairs = h.server.telemetry().pairs();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0.to_string(), "full-cone/port-restricted");
    // The time is the smaller of the two (300 ms: the bucket up to 300 ms).
    assert_eq!(pairs[0].2.time_buckets[5], 1);
    assert_eq!(pairs[0].2.time_sum, Duration::from_millis(300));
    assert_eq!(
        h.server.telemetry().candidates(),
        [
            (pair(), WorkedCandidate::Srflx, 1),
            (pair(), WorkedCandidate::Prflx, 1)
        ]
    );
    assert_eq!(h.server.telemetry().reports(PortMapping::None), 2);
    // The session goes on for PRM.
    assert_eq!(
        h.ask(alice, &format!("PRM 10 {sid}")),
        [format!("PRM 10 {sid}")]
    );
}

#[test]
fn each_side_reports_once() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = introduce(&mut h, alice, bob);
    let relayed = format!("RPT 8 {sid} outcome=relayed method=both-symmetric");
    assert_eq!(h.ask(alice, &relayed), [format!("RPT 8 {sid}")]);
    assert_eq!(h.ask(alice, &relayed), ["220 8 already reported"]);
    assert_eq!(
        h.ask(
            alice,
            &format!("RPT 8 {sid} outcome=direct method=plain cand=host ms=5")
        ),
        ["220 8 already reported"]
    );
    assert_eq!(h.ask(bob, &relayed), [format!("RPT 8 {sid}")]);
    assert_eq!(h.ask(bob, &relayed), ["220 8 already reported"]);
    assert_eq!(counts(&h, PunchMethod::BothSymmetric), (0, 1, 0));
    // Refused reports are not protocol errors: the connection's error budget is untouched.
    for _ in 0..20 {
        h.ask(alice, &relayed);
    }
    assert_eq!(h.ask(alice, "PNG 9"), ["QNG 9"]);
    assert_eq!(h.server.telemetry().generation(), 1);
}

#[test]
fn only_the_two_sessions_of_a_live_introduction_may_report() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let sid = introduce(&mut h, alice, bob);
    // A second session of alice's is not the introduced one.
    let alice2 = h.online("alice", "NLN");
    let pending = sid_of(&h.ask(carol, &format!("INV 5 alice {}", key(3)))[0]);
    let report = "outcome=failed method=none";
    for (who, sid) in [
        (carol, sid.as_str()),
        (alice2, sid.as_str()),
        (alice, "0".repeat(32).as_str()),
        (carol, pending.as_str()),
        (alice, pending.as_str()),
    ] {
        assert_eq!(
            h.ask(who, &format!("RPT 8 {sid} {report}")),
            ["217 8 user offline"],
            "{sid}"
        );
    }
    for bad in [
        "RPT 9".to_owned(),
        "RPT 9 nothex outcome=failed method=none".to_owned(),
        format!("RPT 9 {sid}"),
        format!("RPT 9 {sid} outcome=direct method=plain"),
        format!("RPT 9 {sid} outcome=relayed method=plain addr=10.0.0.1:4000"),
    ] {
        assert_eq!(h.ask(alice, &bad), ["201 9 invalid parameter"], "{bad}");
    }
    let anonymous = h.hello();
    assert_eq!(
        h.ask(anonymous, &format!("RPT 9 {sid} {report}")),
        ["302 9 not logged in"]
    );
    assert_eq!(h.server.telemetry().generation(), 0);
}

#[test]
fn a_lone_report_counts_when_the_session_ends_and_late_reports_are_refused() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    // Expiry: alice reported, bob never did; ten minutes later it counts with alice's.
    let sid = introduce(&mut h, alice, bob);
    assert_eq!(
        h.ask(alice, &format!("RPT 8 {sid} outcome=relayed method=plain")),
        [format!("RPT 8 {sid}")]
    );
    for _ in 0..20 {
        h.advance(Duration::from_secs(29));
        h.ask(alice, "PNG 1");
        h.ask(bob, "PNG 1");
    }
    assert_eq!(counts(&h, PunchMethod::Plain), (0, 0, 0));
    h.advance(Duration::from_secs(21));
    assert_eq!(counts(&h, PunchMethod::Plain), (0, 1, 0));
    assert_eq!(
        h.ask(
            bob,
            &format!("RPT 9 {sid} outcome=direct method=plain cand=srflx ms=10")
        ),
        ["217 9 user offline"]
    );
    assert_eq!(counts(&h, PunchMethod::Plain), (0, 1, 0));

    // A logout: bob reported, then alice left.
    let sid = introduce(&mut h, alice, bob);
    assert_eq!(
        h.ask(
            bob,
            &format!("RPT 8 {sid} outcome=direct method=predict cand=prflx ms=1500")
        ),
        [format!("RPT 8 {sid}")]
    );
    h.ask(alice, "OUT 9");
    assert_eq!(counts(&h, PunchMethod::Predict), (1, 0, 0));

    // No report at all: nothing is counted.
    let alice = h.online("alice", "NLN");
    introduce(&mut h, alice, bob);
    let before = h.server.telemetry().clone();
    h.ask(bob, "OUT 10");
    assert_eq!(*h.server.telemetry(), before);
}

#[test]
fn an_offer_without_nat_is_an_unknown_type() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let carol = h.online("carol", "NLN");
    let sid = sid_of(&h.ask(alice, &format!("INV 6 carol {}", key(1)))[0]);
    let answer = h.ask(carol, &format!("ANS 7 {sid} {} nat=symmetric", key(3)));
    assert_eq!(answer[0], format!("ANS 7 {sid}"));
    for (conn, trid) in [(alice, 8), (carol, 9)] {
        assert_eq!(
            h.ask(
                conn,
                &format!("RPT {trid} {sid} outcome=relayed method=both-symmetric map=upnp")
            ),
            [format!("RPT {trid} {sid}")]
        );
    }
    let pairs = h.server.telemetry().pairs();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0.to_string(), "symmetric/unknown");
    assert_eq!(h.server.telemetry().reports(PortMapping::Upnp), 2);
}

/// A direct path over IPv6 is reported and counted as its own kind (`cand=ipv6`).
#[test]
fn a_path_over_ipv6_is_counted_apart() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = introduce(&mut h, alice, bob);
    for (who, tr) in [(alice, 8), (bob, 9)] {
        let line = format!("RPT {tr} {sid} outcome=direct method=both-symmetric cand=ipv6 ms=260");
        assert_eq!(h.ask(who, &line), [format!("RPT {tr} {sid}")]);
    }
    assert_eq!(counts(&h, PunchMethod::BothSymmetric), (1, 0, 0));
    assert_eq!(
        h.server.telemetry().candidates(),
        [(pair(), WorkedCandidate::Ipv6, 2)]
    );
}
