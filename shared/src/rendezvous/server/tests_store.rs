//! Writes the store could not make (docs/PROTOCOL.md section 9, `500`): for every command that
//! writes, the success answer and the step's pushes are withdrawn, the change is undone in
//! memory, and the client gets `500 TrID internal server error` on a connection that stays
//! open.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::tests::{CHEAP, Harness, creds, stores, to};
use super::*;

/// Drains like a driver whose every write fails: each store is reported failed before the
/// next `poll_output`.
fn drain_failing(h: &mut Harness) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = h.server.poll_output() {
        if let Output::Store { id, .. } = &o {
            h.server.handle_store_failed(h.now, *id);
        }
        out.push(o);
    }
    h.log.extend(out.iter().cloned());
    out
}

/// Sends `raw` on `conn` with a failing store; returns everything that came out.
fn ask_failing(h: &mut Harness, conn: ConnId, raw: &str) -> Vec<Output> {
    h.send_raw(conn, raw);
    drain_failing(h)
}

/// Exactly one store was attempted, and `conn` got only the `500`, nobody anything else.
fn only_500(out: &[Output], conn: ConnId, trid: u32) {
    assert_eq!(stores(out).len(), 1, "{out:?}");
    let sends: Vec<&Output> = out
        .iter()
        .filter(|o| !matches!(o, Output::Store { .. }))
        .collect();
    assert_eq!(sends.len(), 1, "{out:?}");
    assert_eq!(to(out, conn), [format!("500 {trid} internal server error")]);
}

fn key(byte: u8) -> String {
    B64.encode([byte; 32])
}

fn offer(byte: u8) -> String {
    format!("key={} cand=srflx/203.0.113.{byte}:4000", key(byte))
}

/// `kdf salt StoredKey ServerKey` for `password`.
fn verifier(password: &str) -> String {
    let c = creds(password, b"0123456789abcdef");
    format!(
        "{CHEAP} {} {} {}",
        B64.encode(&c.salt),
        B64.encode(c.stored_key),
        B64.encode(c.server_key)
    )
}

/// alice and bob are mutual contacts; carol has alice, alice does not have carol.
fn world() -> Harness {
    Harness::new(
        &["alice", "bob", "carol"],
        &[("alice", "bob"), ("bob", "alice"), ("carol", "alice")],
        &[],
    )
}

#[test]
fn a_registration_that_cannot_be_stored_never_happened() {
    let mut h = world();
    let c = h.hello();
    let out = ask_failing(&mut h, c, &format!("REG 2 dave {}", verifier("dave-pw")));
    only_500(&out, c, 2);
    let d = h.hello();
    assert_eq!(
        h.try_login(d, "dave", "dave-pw"),
        ["911 4 authentication failed"]
    );
    // The name is free, and the connection still works.
    let answer = h.ask(c, &format!("REG 3 dave {}", verifier("dave-pw")));
    assert_eq!(answer, ["REG 3 dave"]);
    assert!(h.try_login(d, "dave", "dave-pw")[0].starts_with("USR 4 OK dave"));
}

#[test]
fn a_password_change_that_cannot_be_stored_keeps_the_old_password() {
    let mut h = world();
    let alice = h.login("alice");
    let out = ask_failing(&mut h, alice, &format!("PWD 5 {}", verifier("new-pw")));
    only_500(&out, alice, 5);
    let d = h.hello();
    assert_eq!(
        h.try_login(d, "alice", "new-pw"),
        ["911 4 authentication failed"]
    );
    assert!(h.try_login(d, "alice", "alice-pw")[0].starts_with("USR 4 OK alice"));
    assert_eq!(h.ask(alice, "PNG 6"), ["QNG 6"]);
}

#[test]
fn list_changes_that_cannot_be_stored_are_undone_and_not_announced() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let carol = h.online("carol", "NLN");
    let lst = |h: &mut Harness| h.ask(alice, "LST 9").concat();
    // ADC: carol would now see alice; she is told nothing, and the list is unchanged.
    h.log.clear();
    only_500(&ask_failing(&mut h, alice, "ADC 5 carol"), alice, 5);
    assert!(!lst(&mut h).contains("carol"));
    assert_eq!(
        h.ask(alice, "ADC 6 carol"),
        ["ADC 6 carol", "ILN 0 NLN carol"]
    );
    assert_eq!(to(&h.log, carol).last().unwrap(), "ILN 0 NLN alice");
    // REM: carol would lose alice.
    h.log.clear();
    only_500(&ask_failing(&mut h, alice, "REM 7 carol"), alice, 7);
    assert!(lst(&mut h).contains("carol NLN C\r\n"));
    assert!(to(&h.log, carol).is_empty());
    // BLK: carol would lose alice.
    h.log.clear();
    only_500(&ask_failing(&mut h, alice, "BLK 8 carol"), alice, 8);
    assert!(lst(&mut h).contains("carol NLN C\r\n"));
    assert!(to(&h.log, carol).is_empty());
    assert_eq!(h.ask(alice, "BLK 10 carol"), ["BLK 10 carol"]);
    assert_eq!(to(&h.log, carol).last().unwrap(), "FLN 0 alice");
    // ALW: carol would see alice again.
    h.log.clear();
    only_500(&ask_failing(&mut h, alice, "ALW 11 carol"), alice, 11);
    assert!(lst(&mut h).contains("carol NLN CB\r\n"));
    assert!(to(&h.log, carol).is_empty());
    assert_eq!(h.ask(alice, "ALW 12 carol"), ["ALW 12 carol"]);
    assert_eq!(to(&h.log, carol).last().unwrap(), "ILN 0 NLN alice");
}

#[test]
fn a_device_key_that_cannot_be_stored_is_not_registered() {
    let mut h = world();
    let bob = h.login("bob");
    let alice = h.login("alice");
    let sid_a: String = std::iter::repeat_n('a', 32).collect();
    let out = ask_failing(&mut h, alice, &format!("DEV 5 {} {sid_a}", key(1)));
    only_500(&out, alice, 5);
    assert_eq!(h.ask(bob, "KEY 6 alice"), ["KEY 6 alice"]);
    // Neither the key nor the session id stuck: another of each is accepted.
    let sid_b: String = std::iter::repeat_n('b', 32).collect();
    assert_eq!(
        h.ask(alice, &format!("DEV 7 {} {sid_b}", key(2))),
        [format!("DEV 7 {} {sid_b}", key(2))]
    );
    assert_eq!(
        h.ask(bob, "KEY 8 alice"),
        [format!("KEY 8 alice {}", key(2))]
    );
    // Replacing a stale session is not undone by a failed write (nothing of it is stored):
    // the stale session is gone, the new one gets 500.
    let again = h.login("alice");
    h.log.clear();
    let out = ask_failing(&mut h, again, &format!("DEV 9 {} {sid_b}", key(3)));
    assert_eq!(to(&out, alice), ["OUT 0 OTH", "CLOSE"]);
    assert_eq!(to(&out, again), ["500 9 internal server error"]);
    assert_eq!(
        h.ask(bob, "KEY 10 alice"),
        [format!("KEY 10 alice {}", key(2))]
    );
}

#[test]
fn an_invitation_whose_key_cannot_be_stored_rings_nobody() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let alice = h.online("alice", "NLN");
    h.log.clear();
    // Alice's connection sent no DEV: her offer's key would be registered.
    let out = ask_failing(&mut h, alice, &format!("INV 5 bob {}", offer(1)));
    only_500(&out, alice, 5);
    assert_eq!(h.server.pending_introductions(), 0);
    assert_eq!(h.ask(bob, "KEY 6 alice"), ["KEY 6 alice"]);
    // Bob invites alice meanwhile; alice's crossing INV fails to store: bob's invitation is
    // pending again, nobody is introduced, no ticket is issued.
    let inv = h.ask(bob, &format!("INV 7 alice {}", offer(2)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    h.log.clear();
    let out = ask_failing(&mut h, alice, &format!("INV 8 bob {}", offer(1)));
    only_500(&out, alice, 8);
    assert_eq!(h.server.pending_introductions(), 1);
    assert_eq!(h.server.introduced_sessions(), 0);
    // Stored this time: introduced.
    let answer = h.ask(alice, &format!("ANS 9 {sid} {}", offer(1)));
    assert_eq!(answer[0], format!("ANS 9 {sid}"));
    assert!(to(&h.log, bob).last().unwrap().starts_with("ITR 0 "));
}

#[test]
fn an_answer_whose_key_cannot_be_stored_introduces_nobody() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    h.ask(alice, &format!("DEV 3 {}", key(1)));
    let b1 = h.online("bob", "NLN");
    let b2 = h.online("bob", "NLN");
    let inv = h.ask(alice, &format!("INV 5 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    h.log.clear();
    let out = ask_failing(&mut h, b2, &format!("ANS 6 {sid} {}", offer(2)));
    only_500(&out, b2, 6);
    assert!(!out.iter().any(|o| matches!(o, Output::Ticket(_))));
    assert_eq!(h.server.introduced_sessions(), 0);
    // Still ringing both sessions; an answer that is stored introduces as usual.
    assert_eq!(h.server.pending_introductions(), 1);
    let answer = h.ask(b1, &format!("ANS 7 {sid} {}", offer(3)));
    assert_eq!(answer[0], format!("ANS 7 {sid}"));
    assert_eq!(
        to(&h.log, b2).last().unwrap(),
        &format!("CAN 0 {sid} answered")
    );
    assert!(to(&h.log, alice).last().unwrap().starts_with("ITR 0 "));
}

#[test]
fn only_the_failed_step_is_withdrawn() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let bob = h.online("bob", "NLN");
    // Two inputs before the driver drains: alice's ADC fails, bob's CHG goes out.
    h.send_raw(alice, "ADC 5 carol");
    h.send_raw(bob, "CHG 6 AWY");
    let out = drain_failing(&mut h);
    assert_eq!(
        to(&out, alice),
        ["500 5 internal server error", "NLN 0 AWY bob"]
    );
    assert_eq!(to(&out, bob), ["CHG 6 AWY"]);
    // A store the driver moved past without reporting counts as written: a late report is
    // ignored.
    h.send_raw(alice, "ADC 7 carol");
    let Some(Output::Store { id, .. }) = h.server.poll_output() else {
        panic!()
    };
    let answer = h.server.poll_output();
    h.server.handle_store_failed(h.now, id);
    assert!(matches!(answer, Some(Output::Send { line, .. }) if line.command.as_str() == "ADC"));
    assert!(h.drain().is_empty());
    assert!(h.ask(alice, "LST 8").concat().contains("carol"));
}
