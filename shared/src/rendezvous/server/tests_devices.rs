//! Device identity keys: `DEV`, `KEY`, the offer-key rule, the per-user limit and the
//! snapshot (docs/PROTOCOL.md sections 5 and 8).

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::tests::{Harness, config, name, record, stores, to};
use super::*;
use crate::rendezvous::types::MAX_DEVICE_KEYS;

fn b64(byte: u8) -> String {
    B64.encode([byte; 32])
}

/// alice and bob are mutual contacts; alice has carol but carol does not have alice; dave and
/// alice are mutual but dave blocks alice; erin and alice are mutual, erin has no device yet.
fn world() -> Harness {
    Harness::new(
        &["alice", "bob", "carol", "dave", "erin"],
        &[
            ("alice", "bob"),
            ("bob", "alice"),
            ("alice", "carol"),
            ("alice", "dave"),
            ("dave", "alice"),
            ("alice", "erin"),
            ("erin", "alice"),
        ],
        &[("dave", "alice")],
    )
}

/// 2^255 - 18: a point of small order, written as X25519 keys are (little-endian).
fn p_plus_one() -> [u8; 32] {
    let mut key = [0xff; 32];
    key[0] = 0xee;
    key[31] = 0x7f;
    key
}

fn add_key(owner: &str, byte: u8) -> StoreOp {
    StoreOp::AddDeviceKey {
        owner: name(owner),
        key: [byte; 32],
    }
}

#[test]
fn dev_is_answered_and_stored_before_the_answer() {
    let mut h = world();
    let alice = h.login("alice");
    h.send_raw(alice, &format!("DEV 5 {}", b64(1)));
    let out = h.drain();
    assert_eq!(stores(&out[..1]), [add_key("alice", 1)]);
    assert_eq!(to(&out, alice), [format!("DEV 5 {}", b64(1))]);
    // The same key again on the same connection: answered, nothing new to store.
    assert_eq!(
        h.ask(alice, &format!("DEV 6 {}", b64(1))),
        [format!("DEV 6 {}", b64(1))]
    );
    // Another key on a connection already bound: refused.
    assert_eq!(
        h.ask(alice, &format!("DEV 7 {}", b64(2))),
        ["201 7 invalid parameter"]
    );
    // A new connection with the most recent key again: nothing to store either.
    let again = h.login("alice");
    assert_eq!(
        h.ask(again, &format!("DEV 5 {}", b64(1))),
        [format!("DEV 5 {}", b64(1))]
    );
    assert_eq!(stores(&h.log), [add_key("alice", 1)]);
}

#[test]
fn dev_refuses_bad_keys_and_anonymous_connections() {
    let mut h = world();
    let anon = h.hello();
    assert_eq!(
        h.ask(anon, &format!("DEV 2 {}", b64(1))),
        ["302 2 not logged in"]
    );
    let alice = h.login("alice");
    for bad in [
        "DEV 3".to_owned(),
        format!("DEV 3 {} {}", b64(1), b64(2)),
        "DEV 3 AAAA".to_owned(),
        format!("DEV 3 {}", B64.encode([1u8; 31])),
        format!("DEV 3 {}", B64.encode([1u8; 33])),
        "DEV 3 !!!!".to_owned(),
        // Keys of small order authenticate nobody (shared::identity).
        format!("DEV 3 {}", b64(0)),
        format!("DEV 3 {}", B64.encode(p_plus_one())),
    ] {
        assert_eq!(h.ask(alice, &bad), ["201 3 invalid parameter"], "{bad}");
    }
    assert!(stores(&h.log).is_empty());
    // Still unbound: a good key is taken.
    assert_eq!(
        h.ask(alice, &format!("DEV 4 {}", b64(9))),
        [format!("DEV 4 {}", b64(9))]
    );
}

#[test]
fn offers_must_carry_the_device_key() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    h.ask(alice, &format!("DEV 5 {}", b64(1)));
    h.ask(bob, &format!("DEV 5 {}", b64(2)));
    h.log.clear();
    assert_eq!(
        h.ask(alice, &format!("INV 6 bob key={}", b64(3))),
        ["201 6 invalid parameter"]
    );
    assert!(to(&h.log, bob).is_empty());
    let inv = h.ask(alice, &format!("INV 7 bob key={}", b64(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    assert_eq!(inv, [format!("INV 7 bob {sid}")]);
    assert_eq!(
        h.ask(bob, &format!("ANS 8 {sid} key={}", b64(4))),
        ["201 8 invalid parameter"]
    );
    assert_eq!(
        h.ask(
            bob,
            &format!("ANS 8 {sid} key={}", B64.encode(p_plus_one()))
        ),
        ["201 8 invalid parameter"],
        "a key of small order is refused like a wrong one"
    );
    // The refused ANS left the invitation in place.
    assert_eq!(h.server.pending_introductions(), 1);
    h.send_raw(bob, &format!("ANS 9 {sid} key={}", b64(2)));
    h.drain();
    // Each ITR carries the other side's device key.
    let itr_a = to(&h.log, alice).pop().unwrap();
    let itr_b = to(&h.log, bob).pop().unwrap();
    assert!(itr_a.ends_with(&format!("key={}", b64(2))), "{itr_a}");
    assert!(itr_b.ends_with(&format!("key={}", b64(1))), "{itr_b}");
    assert!(stores(&h.log).is_empty());
}

#[test]
fn an_offer_without_dev_registers_its_key() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    h.log.clear();
    // A refused INV (carol is not a mutual contact) registers nothing.
    assert_eq!(
        h.ask(alice, &format!("INV 5 carol key={}", b64(7))),
        ["217 5 user offline"]
    );
    assert!(stores(&h.log).is_empty());
    h.send_raw(alice, &format!("INV 6 bob key={}", b64(1)));
    let out = h.drain();
    assert_eq!(stores(&out[..1]), [add_key("alice", 1)]);
    // The connection is now bound to that key: another one is refused, DEV included.
    assert_eq!(
        h.ask(alice, &format!("INV 7 bob key={}", b64(3))),
        ["201 7 invalid parameter"]
    );
    assert_eq!(
        h.ask(alice, &format!("DEV 8 {}", b64(3))),
        ["201 8 invalid parameter"]
    );
    assert_eq!(
        h.ask(alice, &format!("DEV 9 {}", b64(1))),
        [format!("DEV 9 {}", b64(1))]
    );
    assert_eq!(
        h.ask(bob, "KEY 3 alice"),
        [format!("KEY 3 alice {}", b64(1))]
    );
    // A new connection is bound afresh: its first offer registers its own key.
    let alice2 = h.online("alice", "NLN");
    let inv = h.ask(alice2, &format!("INV 6 bob key={}", b64(3)));
    assert!(inv[0].starts_with("INV 6 bob "), "{inv:?}");
    assert_eq!(stores(&h.log), [add_key("alice", 1), add_key("alice", 3)]);
    assert_eq!(
        h.ask(bob, "KEY 4 alice"),
        [format!("KEY 4 alice {} {}", b64(3), b64(1))]
    );
}

#[test]
fn key_lists_a_contacts_devices_most_recent_first() {
    let mut h = world();
    for byte in [1, 2, 3] {
        let alice = h.login("alice");
        h.ask(alice, &format!("DEV 5 {}", b64(byte)));
    }
    // Registering an older key again makes it the most recent.
    let alice = h.login("alice");
    h.ask(alice, &format!("DEV 5 {}", b64(1)));
    let bob = h.login("bob");
    assert_eq!(
        h.ask(bob, "KEY 2 Alice"),
        [format!("KEY 2 alice {} {} {}", b64(1), b64(3), b64(2))]
    );
    // Offline contacts too; no key yet: the name alone.
    assert_eq!(h.ask(alice, "KEY 3 bob"), ["KEY 3 bob"]);
    assert_eq!(h.ask(alice, "KEY 4 erin"), ["KEY 4 erin"]);
}

#[test]
fn key_is_217_for_anyone_who_could_not_be_introduced() {
    let mut h = world();
    for user in ["carol", "dave"] {
        let c = h.login(user);
        h.ask(c, &format!("DEV 5 {}", b64(5)));
    }
    let alice = h.login("alice");
    h.ask(alice, &format!("DEV 5 {}", b64(1)));
    // carol: one-way contact; dave: blocks alice; zed: no such user; alice: herself;
    // a name that is not a name.
    for who in ["carol", "dave", "zed", "alice", "bad,name"] {
        assert_eq!(
            h.ask(alice, &format!("KEY 6 {who}")),
            ["217 6 user offline"],
            "{who}"
        );
    }
    // The other direction: carol does not have alice; dave blocks her.
    let dave = h.login("dave");
    assert_eq!(h.ask(dave, "KEY 7 alice"), ["217 7 user offline"]);
    assert_eq!(h.ask(alice, "KEY 8"), ["201 8 invalid parameter"]);
    assert_eq!(h.ask(alice, "KEY 8 bob erin"), ["201 8 invalid parameter"]);
    let anon = h.hello();
    assert_eq!(h.ask(anon, "KEY 9 alice"), ["302 9 not logged in"]);
}

#[test]
fn the_seventeenth_device_forgets_the_oldest() {
    let mut h = world();
    for byte in 1..=MAX_DEVICE_KEYS as u8 + 1 {
        let alice = h.login("alice");
        h.ask(alice, &format!("DEV 5 {}", b64(byte)));
    }
    let bob = h.login("bob");
    let answer = h.ask(bob, "KEY 2 alice").pop().unwrap();
    let keys: Vec<&str> = answer.split(' ').skip(3).collect();
    assert_eq!(keys.len(), MAX_DEVICE_KEYS);
    assert_eq!(keys[0], b64(17));
    assert_eq!(keys[MAX_DEVICE_KEYS - 1], b64(2));
    assert!(!keys.contains(&b64(1).as_str()));
    assert!(answer.len() + 2 <= crate::rendezvous::wire::MAX_LINE);
}

#[test]
fn device_keys_survive_a_restart_through_the_snapshot() {
    let mut h = world();
    for byte in [1, 2, 3, 1] {
        let alice = h.login("alice");
        h.ask(alice, &format!("DEV 5 {}", b64(byte)));
    }
    let bob = h.login("bob");
    h.ask(bob, &format!("DEV 5 {}", b64(9)));
    let before = h.ask(bob, "KEY 6 alice");
    // What a store would keep: the ops in order (it moves a re-registered key to the end).
    let mut device_keys: Vec<(UserName, [u8; 32])> = Vec::new();
    for op in stores(&h.log) {
        let StoreOp::AddDeviceKey { owner, key } = op else {
            continue;
        };
        device_keys.retain(|(o, k)| !(*o == owner && *k == key));
        device_keys.push((owner, key));
    }
    assert_eq!(
        device_keys,
        [
            (name("alice"), [2; 32]),
            (name("alice"), [3; 32]),
            (name("alice"), [1; 32]),
            (name("bob"), [9; 32]),
        ]
    );
    let mut snapshot = DirectorySnapshot {
        users: ["alice", "bob"].map(record).to_vec(),
        contacts: vec![(name("alice"), name("bob")), (name("bob"), name("alice"))],
        blocks: Vec::new(),
        device_keys,
    };
    // Keys of unknown users are skipped.
    snapshot.device_keys.push((name("ghost"), [4; 32]));
    let mut h = Harness::with_snapshot(config(), snapshot.clone());
    let bob = h.login("bob");
    assert_eq!(h.ask(bob, "KEY 6 alice"), before);
    assert_eq!(
        before,
        [format!("KEY 6 alice {} {} {}", b64(1), b64(3), b64(2))]
    );
    let alice = h.login("alice");
    assert_eq!(h.ask(alice, "KEY 7 bob"), [format!("KEY 7 bob {}", b64(9))]);
    // Re-registering the most recent key after the restart stores nothing.
    assert_eq!(
        h.ask(alice, &format!("DEV 8 {}", b64(1))),
        [format!("DEV 8 {}", b64(1))]
    );
    assert!(stores(&h.log).is_empty());

    // A snapshot with more than the limit keeps the most recent ones.
    snapshot.device_keys = (1..=20u8).map(|b| (name("alice"), [b; 32])).collect();
    let mut h = Harness::with_snapshot(config(), snapshot);
    let bob = h.login("bob");
    let answer = h.ask(bob, "KEY 2 alice").pop().unwrap();
    let keys: Vec<&str> = answer.split(' ').skip(3).collect();
    assert_eq!(keys.len(), MAX_DEVICE_KEYS);
    assert_eq!((keys[0], keys[15]), (b64(20).as_str(), b64(5).as_str()));
}
