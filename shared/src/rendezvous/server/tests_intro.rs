//! Introductions (`INV`, `RNG`, `ANS`, `DEC`, `CAN`, `ITR`, tickets), and a never-panic
//! property test over random command sequences.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;

use super::tests::{Harness, name, stores, to};
use super::*;

pub(super) fn key(byte: u8) -> String {
    format!("key={}", B64.encode([byte; 32]))
}

fn alice_offer() -> String {
    format!(
        "{} nat=port-restricted cand=host/10.0.1.2:40000 cand=srflx/203.0.113.7:61000",
        key(1)
    )
}

fn bob_offer() -> String {
    format!(
        "{} nat=full-cone alloc=preserving cand=host/[fe80::1]:50000 cand=srflx/198.51.100.9:50000",
        key(2)
    )
}

/// alice, bob and carol are all mutual contacts; alice and mallory are mutual contacts but
/// alice blocks mallory; erin is alice's mutual contact and never logs in.
pub(super) fn world() -> Harness {
    let mut contacts = Vec::new();
    for (a, b) in [
        ("alice", "bob"),
        ("alice", "carol"),
        ("bob", "carol"),
        ("alice", "mallory"),
        ("alice", "erin"),
    ] {
        contacts.push((a, b));
        contacts.push((b, a));
    }
    Harness::new(
        &["alice", "bob", "carol", "mallory", "erin"],
        &contacts,
        &[("alice", "mallory")],
    )
}

/// The sid at the end of an `INV` answer.
pub(super) fn sid_of(answer: &str) -> String {
    answer.rsplit(' ').next().unwrap().to_owned()
}

fn tickets(outputs: &[Output]) -> Vec<Ticket> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Ticket(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn introduction_hands_each_peer_the_others_offer() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "BSY");
    let carol = h.online("carol", "NLN");
    h.log.clear();
    let answer = h.ask(alice, &format!("INV 6 Bob {}", alice_offer()));
    assert_eq!(answer.len(), 1);
    let sid = sid_of(&answer[0]);
    assert_eq!(answer[0], format!("INV 6 bob {sid}"));
    assert_eq!(sid.len(), 32);
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(to(&h.log, bob), [format!("RNG 0 {sid} alice")]);
    assert_eq!(h.server.pending_introductions(), 1);
    assert_eq!(h.server.counters().introductions, 0);

    h.send_raw(bob, &format!("ANS 11 {sid} {}", bob_offer()));
    let out = h.drain();
    assert_eq!(h.server.counters().introductions, 1);
    let t = tickets(&out);
    assert_eq!(t.len(), 2);
    assert_ne!(t[0].value, t[1].value);
    let hex = |v: [u8; 16]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        (t[0].user.clone(), t[0].peer.clone()),
        (name("alice"), name("bob"))
    );
    assert_eq!(
        (t[1].user.clone(), t[1].peer.clone()),
        (name("bob"), name("alice"))
    );
    for ticket in &t {
        assert_eq!(ticket.session.to_string(), sid);
        assert_eq!(ticket.expires, h.now + Duration::from_secs(60));
    }
    // Tickets reach the driver before the ITR lines that name them.
    let first_itr = out
        .iter()
        .position(|o| matches!(o, Output::Send { line, .. } if line.command.as_str() == "ITR"))
        .unwrap();
    let last_ticket = out
        .iter()
        .rposition(|o| matches!(o, Output::Ticket(_)))
        .unwrap();
    assert!(last_ticket < first_itr);
    // Bob's connection sent no DEV: his offer's key became his device key, persisted first.
    assert_eq!(
        stores(&out[..1]),
        [StoreOp::AddDeviceKey {
            owner: name("bob"),
            key: [2; 32]
        }]
    );
    assert_eq!(
        to(&out, alice),
        [format!(
            "ITR 0 {sid} bob role=initiator start=250 ticket={} sb=192.0.2.1:1865 {}",
            hex(t[0].value),
            bob_offer()
        )]
    );
    assert_eq!(
        to(&out, bob),
        [
            format!("ANS 11 {sid}"),
            format!(
                "ITR 0 {sid} alice role=responder start=250 ticket={} sb=192.0.2.1:1865 {}",
                hex(t[1].value),
                alice_offer()
            )
        ]
    );
    assert!(to(&h.log, carol).is_empty());
    assert_eq!(h.server.pending_introductions(), 0);
    // The session is over: answering again fails.
    assert_eq!(
        h.ask(bob, &format!("ANS 12 {sid} {}", key(2))),
        ["217 12 user offline"]
    );
}

#[test]
fn simultaneous_invitations_introduce_at_once() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    h.log.clear();
    let sid = sid_of(&h.ask(bob, &format!("INV 3 alice {}", bob_offer()))[0]);
    // Asking again keeps the session (and rings once).
    assert_eq!(
        h.ask(bob, &format!("INV 4 alice {}", bob_offer())),
        [format!("INV 4 alice {sid}")]
    );
    assert_eq!(to(&h.log, alice), [format!("RNG 0 {sid} bob")]);
    h.log.clear();
    h.send_raw(alice, &format!("INV 7 bob {}", alice_offer()));
    let out = h.drain();
    let t = tickets(&out);
    let a = to(&out, alice);
    assert_eq!(a[0], format!("INV 7 bob {sid}"));
    assert!(a[1].starts_with(&format!("ITR 0 {sid} bob role=responder start=250 ticket=")));
    assert!(a[1].ends_with(&bob_offer()));
    let b = to(&out, bob);
    assert_eq!(b.len(), 1, "no RNG for bob: {b:?}");
    assert!(b[0].starts_with(&format!("ITR 0 {sid} alice role=initiator")));
    assert!(b[0].ends_with(&alice_offer()));
    assert_eq!((t[0].user.as_str(), t[1].user.as_str()), ("bob", "alice"));
    assert_eq!(h.server.pending_introductions(), 0);
}

#[test]
fn decline_and_wrong_answerers() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let sid = sid_of(&h.ask(alice, &format!("INV 6 bob {}", alice_offer()))[0]);
    // Only the invitee may answer or decline.
    let ans = format!("ANS 8 {sid} {}", key(3));
    assert_eq!(h.ask(carol, &ans), ["217 8 user offline"]);
    // (alice's connection is bound to key 1 by her INV: another key is 201 before anything.)
    assert_eq!(h.ask(alice, &ans), ["201 8 invalid parameter"]);
    let ans = format!("ANS 8 {sid} {}", key(1));
    assert_eq!(h.ask(alice, &ans), ["217 8 user offline"]);
    assert_eq!(
        h.ask(alice, &format!("DEC 8 {sid}")),
        ["217 8 user offline"]
    );
    assert_eq!(h.ask(bob, "DEC 8 nothex"), ["201 8 invalid parameter"]);
    assert_eq!(
        h.ask(bob, &format!("DEC 8 {}", "0".repeat(32))),
        ["217 8 user offline"]
    );
    assert_eq!(
        h.ask(bob, &format!("ANS 8 {sid} nat=open")),
        ["201 8 invalid parameter"]
    );
    h.log.clear();
    assert_eq!(
        h.ask(bob, &format!("DEC 9 {sid}")),
        [format!("DEC 9 {sid}")]
    );
    assert_eq!(to(&h.log, alice), [format!("CAN 0 {sid} declined")]);
    assert_eq!(
        h.ask(bob, &format!("ANS 10 {sid} {}", key(2))),
        ["217 10 user offline"]
    );
}

#[test]
fn invitation_times_out() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = sid_of(&h.ask(alice, &format!("INV 6 bob {}", alice_offer()))[0]);
    let cans = |out: &[Output], c| -> Vec<String> {
        to(out, c)
            .into_iter()
            .filter(|l| l.starts_with("CAN"))
            .collect()
    };
    let out = h.advance(Duration::from_millis(29_900));
    assert!(cans(&out, alice).is_empty());
    let out = h.advance(Duration::from_millis(200));
    assert_eq!(cans(&out, alice), [format!("CAN 0 {sid} timeout")]);
    assert_eq!(cans(&out, bob), [format!("CAN 0 {sid} timeout")]);
    assert_eq!(h.server.pending_introductions(), 0);
}

#[test]
fn invitation_is_cancelled_when_a_side_goes_offline() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let s1 = sid_of(&h.ask(alice, &format!("INV 6 bob {}", alice_offer()))[0]);
    let s2 = sid_of(&h.ask(carol, &format!("INV 7 alice {}", key(4)))[0]);
    h.log.clear();
    h.server.handle_disconnected(h.now, alice);
    h.drain();
    assert_eq!(
        to(&h.log, bob),
        ["FLN 0 alice".into(), format!("CAN 0 {s1} offline")]
    );
    assert_eq!(
        to(&h.log, carol),
        ["FLN 0 alice".into(), format!("CAN 0 {s2} offline")]
    );
    assert_eq!(h.server.pending_introductions(), 0);
    // The invitee going away cancels too.
    let alice = h.online("alice", "NLN");
    let s3 = sid_of(&h.ask(alice, &format!("INV 8 bob {}", alice_offer()))[0]);
    h.log.clear();
    h.ask(bob, "OUT 9");
    assert_eq!(
        to(&h.log, alice),
        ["FLN 0 bob".into(), format!("CAN 0 {s3} offline")]
    );
}

#[test]
fn blocked_or_ineligible_targets_look_offline() {
    let mut h = Harness::new(
        &["alice", "bob", "carol", "dave", "erin", "mallory", "zed"],
        &[
            ("alice", "bob"),
            ("bob", "alice"),
            ("alice", "carol"), // not mutual
            ("alice", "dave"),
            ("dave", "alice"),
            ("alice", "erin"),
            ("erin", "alice"),
            ("alice", "mallory"),
            ("mallory", "alice"),
        ],
        &[("alice", "mallory"), ("dave", "alice")],
    );
    let alice = h.online("alice", "NLN");
    let mallory = h.online("mallory", "NLN");
    h.online("bob", "HDN");
    h.online("carol", "NLN");
    h.online("dave", "NLN");
    h.login("erin"); // logged in but no CHG: offline to others
    h.log.clear();
    let offer = alice_offer();
    for target in [
        "bob", "carol", "dave", "erin", "zed", "nobody", "alice", "bad,name",
    ] {
        assert_eq!(
            h.ask(alice, &format!("INV 5 {target} {offer}")),
            ["217 5 user offline"],
            "{target}"
        );
    }
    // mallory (blocked by alice) gets exactly what an offline user gives.
    let blocked = h.ask(mallory, &format!("INV 5 alice {}", bob_offer()));
    let offline = h.ask(mallory, &format!("INV 5 zed {}", bob_offer()));
    assert_eq!(blocked, offline);
    // Nobody learnt anything: no RNG, no ITR, no addresses anywhere.
    for o in &h.log {
        if let Output::Send { line, .. } = o {
            let t = super::tests::text(line);
            assert!(t.starts_with("217 "), "{t}");
        }
    }
    assert_eq!(h.server.pending_introductions(), 0);
}

#[test]
fn answer_after_a_block_is_refused_and_cancels() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = sid_of(&h.ask(alice, &format!("INV 6 bob {}", alice_offer()))[0]);
    h.ask(alice, "BLK 7 bob");
    h.log.clear();
    assert_eq!(
        h.ask(bob, &format!("ANS 8 {sid} {}", bob_offer())),
        ["217 8 user offline"]
    );
    assert_eq!(to(&h.log, alice), [format!("CAN 0 {sid} offline")]);
    assert!(tickets(&h.log).is_empty());
}

#[test]
fn offers_are_validated() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    h.online("bob", "NLN");
    let k = key(1);
    let nine = (0..9)
        .map(|i| format!("cand=host/10.0.0.{i}:1"))
        .collect::<Vec<_>>()
        .join(" ");
    let bad = [
        String::new(),
        "nat=open".to_owned(),
        format!("key={}", B64.encode([1; 31])),
        "key=!!!".to_owned(),
        format!("{k} {k}"),
        format!("{k} nat=cone"),
        format!("{k} nat=open nat=open"),
        format!("{k} alloc=linear"),
        format!("{k} cand=turn/1.2.3.4:5"),
        format!("{k} cand=host/1.2.3.4"),
        format!("{k} cand=host/fe80::1:5"),
        format!("{k} cand=host"),
        format!("{k} {nine}"),
        format!("{k} ver=2"),
        format!("{k} junk"),
    ];
    for offer in bad {
        assert_eq!(
            h.ask(alice, format!("INV 5 bob {offer}").trim_end()),
            ["201 5 invalid parameter"],
            "{offer}"
        );
    }
    let eight = (0..8)
        .map(|i| format!("cand=relay/10.0.0.{i}:1"))
        .collect::<Vec<_>>()
        .join(" ");
    let ok = h.ask(alice, &format!("INV 6 bob {k} alloc=random {eight}"));
    assert!(ok[0].starts_with("INV 6 bob "), "{ok:?}");
    // That was the 16th error answer on this connection.
    assert_eq!(
        h.ask(alice, "INV 7"),
        ["201 7 invalid parameter", "OUT 0 ERR", "CLOSE"]
    );
}

/// alice invites bob, bob answers: the introduced session's id (the log keeps the ITRs).
pub(super) fn introduce(h: &mut Harness, alice: ConnId, bob: ConnId) -> String {
    let sid = sid_of(&h.ask(alice, &format!("INV 6 bob {}", alice_offer()))[0]);
    let answer = h.ask(bob, &format!("ANS 7 {sid} {}", bob_offer()));
    assert_eq!(answer[0], format!("ANS 7 {sid}"));
    assert!(
        answer[1].starts_with(&format!("ITR 0 {sid} alice ")),
        "{answer:?}"
    );
    sid
}

#[test]
fn primed_is_relayed_to_the_other_peer_only() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let sid = introduce(&mut h, alice, bob);
    assert_eq!(h.server.introduced_sessions(), 1);
    h.log.clear();
    assert_eq!(
        h.ask(alice, &format!("PRM 8 {sid}")),
        [format!("PRM 8 {sid}")]
    );
    assert_eq!(to(&h.log, bob), [format!("PRM 0 {sid}")]);
    h.log.clear();
    // Either peer, any number of times, upper-case hex too.
    let upper = sid.to_ascii_uppercase();
    assert_eq!(
        h.ask(bob, &format!("PRM 9 {upper}")),
        [format!("PRM 9 {sid}")]
    );
    assert_eq!(to(&h.log, alice), [format!("PRM 0 {sid}")]);
    assert!(to(&h.log, carol).is_empty());
    // Appearing offline does not end the session.
    h.ask(bob, "CHG 10 HDN");
    h.log.clear();
    assert_eq!(
        h.ask(alice, &format!("PRM 11 {sid}")),
        [format!("PRM 11 {sid}")]
    );
    assert_eq!(to(&h.log, bob), [format!("PRM 0 {sid}")]);
}

#[test]
fn primed_for_anything_but_our_live_session_is_offline() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let sid = introduce(&mut h, alice, bob);
    // A pending invitation is not an introduced session.
    let pending = sid_of(&h.ask(carol, &format!("INV 5 alice {}", key(3)))[0]);
    h.log.clear();
    for (who, sid) in [
        (carol, sid.as_str()),
        (alice, "0".repeat(32).as_str()),
        (carol, pending.as_str()),
        (alice, pending.as_str()),
    ] {
        assert_eq!(
            h.ask(who, &format!("PRM 8 {sid}")),
            ["217 8 user offline"],
            "{sid}"
        );
    }
    // Nobody heard anything.
    assert!(h.log.iter().all(|o| match o {
        Output::Send { line, .. } => super::tests::text(line).starts_with("217 "),
        _ => false,
    }));
    assert_eq!(h.ask(alice, "PRM 9 nothex"), ["201 9 invalid parameter"]);
    assert_eq!(
        h.ask(alice, &format!("PRM 9 {sid} x")),
        ["201 9 invalid parameter"]
    );
    assert_eq!(h.ask(alice, "PRM 9"), ["201 9 invalid parameter"]);
    let anonymous = h.hello();
    assert_eq!(
        h.ask(anonymous, &format!("PRM 9 {sid}")),
        ["302 9 not logged in"]
    );
    // A block after the introduction ends it as far as PRM goes.
    h.ask(bob, "BLK 10 alice");
    assert_eq!(
        h.ask(alice, &format!("PRM 11 {sid}")),
        ["217 11 user offline"]
    );
    assert_eq!(
        h.ask(bob, &format!("PRM 11 {sid}")),
        ["217 11 user offline"]
    );
}

#[test]
fn introduced_sessions_expire() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = introduce(&mut h, alice, bob);
    // Keep both connections alive across the ten minutes.
    for _ in 0..20 {
        h.advance(Duration::from_secs(29));
        h.ask(alice, "PNG 1");
        h.ask(bob, "PNG 1");
    }
    assert_eq!(
        h.ask(alice, &format!("PRM 8 {sid}")),
        [format!("PRM 8 {sid}")]
    );
    h.advance(Duration::from_secs(21));
    assert_eq!(h.server.introduced_sessions(), 0);
    assert_eq!(
        h.ask(alice, &format!("PRM 9 {sid}")),
        ["217 9 user offline"]
    );
    assert_eq!(h.ask(bob, &format!("PRM 9 {sid}")), ["217 9 user offline"]);
}

#[test]
fn logout_forgets_introduced_sessions() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = introduce(&mut h, alice, bob);
    h.ask(bob, "OUT 8");
    assert_eq!(h.server.introduced_sessions(), 0);
    assert_eq!(
        h.ask(alice, &format!("PRM 9 {sid}")),
        ["217 9 user offline"]
    );
    // Logging in again does not bring it back.
    let bob = h.online("bob", "NLN");
    assert_eq!(
        h.ask(bob, &format!("PRM 10 {sid}")),
        ["217 10 user offline"]
    );
    // Nor does a dropped connection keep one.
    let sid = introduce(&mut h, alice, bob);
    h.server.handle_disconnected(h.now, alice);
    h.drain();
    assert_eq!(
        h.ask(bob, &format!("PRM 11 {sid}")),
        ["217 11 user offline"]
    );
}

#[test]
fn a_user_keeps_only_the_most_recent_sessions() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sids: Vec<String> = (0..17).map(|_| introduce(&mut h, alice, bob)).collect();
    assert_eq!(h.server.introduced_sessions(), 16);
    assert_eq!(
        h.ask(alice, &format!("PRM 8 {}", sids[0])),
        ["217 8 user offline"]
    );
    for sid in &sids[1..] {
        assert_eq!(
            h.ask(bob, &format!("PRM 9 {sid}")),
            [format!("PRM 9 {sid}")]
        );
    }
}

const WORDS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "x",
    "NLN",
    "HDN",
    "FLN",
    "P2P1",
    "I",
    "S",
    "key=AAAA",
    "key=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
    "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
    "nat=open",
    "cand=host/1.2.3.4:5",
    "SCRAM-SHA-256-ARGON2ID",
    "bixuPWFsaWNlLHI9",
    "0",
    "=",
    "c=biws",
];
const COMMANDS: &[&str] = &[
    "VER", "USR", "REG", "CHG", "LST", "ADC", "REM", "BLK", "ALW", "PWD", "INV", "ANS", "DEC",
    "PNG", "QNG", "OUT", "XYZ", "200", "ITR", "RNG", "PRM", "DEV", "KEY", "RPT",
];

fn arb_param() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WORDS).prop_map(str::to_owned),
        "[!-~]{1,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random command sequences on two logged-in users and a fresh connection: nothing panics,
    /// nothing is sent to a connection after its Close, and the counts stay consistent.
    #[test]
    fn random_commands_never_panic(
        steps in proptest::collection::vec(
            (0usize..4, proptest::sample::select(COMMANDS), proptest::collection::vec(arb_param(), 0..5), 0u64..20_000),
            1..40,
        )
    ) {
        let mut h = world();
        let conns = [h.online("alice", "NLN"), h.online("bob", "NLN"), h.hello(), h.connect()];
        for (who, cmd, params, wait_ms) in steps {
            let line = Line::new(cmd, TrId(who as u32 + 1), params);
            h.server.handle_line(h.now, conns[who], line);
            h.drain();
            h.advance(Duration::from_millis(wait_ms));
            prop_assert!(h.server.online_count() <= h.server.connection_count());
        }
        h.server.handle_shutdown(h.now);
        h.drain();
        let mut closed = HashSet::new();
        for o in &h.log {
            match o {
                Output::Close(c) => prop_assert!(closed.insert(*c), "closed twice"),
                Output::Send { conn, .. } => prop_assert!(!closed.contains(conn), "send after close"),
                _ => {}
            }
        }
    }
}

#[test]
fn session_ids_round_trip_through_hex() {
    let sid = SessionId([0xab; 16]);
    assert_eq!(sid.to_string(), "ab".repeat(16));
    assert_eq!(sid.to_string().parse::<SessionId>(), Ok(sid));
    assert_eq!("AB".repeat(16).parse::<SessionId>(), Ok(sid));
    for bad in [
        "",
        "ab",
        &"+f".repeat(16),
        &"g0".repeat(16),
        &"ab".repeat(17),
    ] {
        assert!(bad.parse::<SessionId>().is_err(), "{bad}");
    }
}

#[test]
fn itr_carries_the_switchboard_fingerprint_after_sb() {
    let fp = crate::identity::Fingerprint([0x22; 32]);
    let config = RendezvousConfig {
        switchboard_fingerprint: Some(fp),
        ..super::tests::config()
    };
    let mut h = Harness::with_config(
        config,
        &["alice", "bob"],
        &[("alice", "bob"), ("bob", "alice")],
        &[],
    );
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    let sid = sid_of(&h.ask(alice, &format!("INV 6 bob {}", alice_offer()))[0]);
    h.log.clear();
    h.send_raw(bob, &format!("ANS 7 {sid} {}", bob_offer()));
    h.drain();
    for (conn, offer) in [(alice, bob_offer()), (bob, alice_offer())] {
        let itr = to(&h.log, conn).pop().unwrap();
        assert!(
            itr.ends_with(&format!("sb=192.0.2.1:1865 sbfp={fp} {offer}")),
            "{itr}"
        );
    }
}
