//! Several sessions per user (docs/PROTOCOL.md sections 5, 6 and 8): presence is the most
//! available over the sessions, one-shot sessions disturb nobody, a login session id replaces
//! only its own stale session, invitations ring every capable session and the introduction
//! pairs exactly one session on each side.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::tests::{Harness, to};
use super::*;

/// alice, bob and carol are all mutual contacts.
fn world() -> Harness {
    let mut contacts = Vec::new();
    for (a, b) in [("alice", "bob"), ("alice", "carol"), ("bob", "carol")] {
        contacts.push((a, b));
        contacts.push((b, a));
    }
    Harness::new(&["alice", "bob", "carol"], &contacts, &[])
}

fn key(byte: u8) -> String {
    B64.encode([byte; 32])
}

/// An offer with device key `[byte; 32]`.
fn offer(byte: u8) -> String {
    format!(
        "key={} nat=full-cone cand=srflx/203.0.113.{byte}:4000",
        key(byte)
    )
}

/// A login session id made of one repeated hex digit.
fn login_sid(digit: char) -> String {
    std::iter::repeat_n(digit, 32).collect()
}

/// The presence lines (`NLN`, `ILN`, `FLN`) in `lines`.
fn presence(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| ["NLN ", "ILN ", "FLN "].iter().any(|p| l.starts_with(p)))
        .cloned()
        .collect()
}

#[test]
fn two_sessions_show_the_most_available_state() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let bob_cli = h.login("bob");
    let a1 = h.online("alice", "BSY");
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 BSY alice"]);
    // Every session of a contact gets the push, the one that never sent CHG too.
    assert_eq!(presence(&to(&h.log, bob_cli)), ["NLN 0 BSY alice"]);
    let a2 = h.login("alice");
    h.log.clear();
    // AWY is more available than BSY: shown.
    h.ask(a2, "CHG 5 AWY");
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 AWY alice"]);
    assert_eq!(presence(&to(&h.log, bob_cli)), ["NLN 0 AWY alice"]);
    h.log.clear();
    // A change that does not change the shown state is not pushed.
    h.ask(a1, "CHG 6 LUN");
    h.ask(a1, "CHG 7 PHN");
    h.ask(a2, "CHG 8 AWY");
    assert!(presence(&to(&h.log, bob)).is_empty(), "{:?}", h.log);
    // HDN on one session leaves the other's state shown.
    h.ask(a2, "CHG 9 HDN");
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 PHN alice"]);
    h.log.clear();
    // Both HDN: offline to contacts; one back: its state.
    h.ask(a1, "CHG 10 HDN");
    assert_eq!(presence(&to(&h.log, bob)), ["FLN 0 alice"]);
    h.log.clear();
    h.ask(a2, "CHG 11 IDL");
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 IDL alice"]);
    // What LST, a new login and the order of the table agree on.
    let lst = h.ask(bob, "LST 12");
    assert!(lst[0].contains("alice IDL C"), "{lst:?}");
    let bob3 = h.login("bob");
    assert!(to(&h.log, bob3).contains(&"ILN 0 IDL alice".to_owned()));
    h.ask(a1, "CHG 13 NLN");
    assert_eq!(
        presence(&to(&h.log, bob)).last().unwrap(),
        "NLN 0 NLN alice"
    );
    assert_eq!(h.server.online_count(), 2);
}

#[test]
fn closing_one_session_keeps_the_user_online() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let a1 = h.online("alice", "NLN");
    let a2 = h.online("alice", "AWY");
    h.log.clear();
    // The most available one goes: contacts see the other's state, not FLN.
    h.server.handle_disconnected(h.now, a1);
    h.drain();
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 AWY alice"]);
    assert_eq!(h.server.online_count(), 2);
    // OUT ends only the session that sent it.
    let a3 = h.online("alice", "AWY");
    h.log.clear();
    assert!(h.ask(a3, "OUT 14").contains(&"CLOSE".to_owned()));
    assert!(presence(&to(&h.log, bob)).is_empty());
    assert!(to(&h.log, a2).is_empty());
    assert_eq!(h.ask(a2, "PNG 15"), ["QNG 15"]);
    // The last visible session goes: FLN.
    let hidden = h.online("alice", "HDN");
    h.log.clear();
    h.server.handle_disconnected(h.now, a2);
    h.drain();
    assert_eq!(presence(&to(&h.log, bob)), ["FLN 0 alice"]);
    assert_eq!(h.server.online_count(), 2);
    h.server.handle_disconnected(h.now, hidden);
    h.drain();
    assert_eq!(h.server.online_count(), 1);
    assert_eq!(presence(&to(&h.log, bob)), ["FLN 0 alice"]);
}

#[test]
fn a_one_shot_session_disturbs_nobody() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let chat = h.online("alice", "NLN");
    h.ask(chat, &format!("DEV 3 {} {}", key(1), login_sid('a')));
    h.log.clear();
    // What `p2p-client contacts ...` does: log in, DEV (its own session id or none), a
    // command, OUT. No CHG.
    for dev in [
        format!("DEV 4 {} {}", key(1), login_sid('b')),
        format!("DEV 4 {}", key(1)),
    ] {
        let once = h.login("alice");
        assert_eq!(h.ask(once, &dev).len(), 1);
        assert!(h.ask(once, "LST 5")[0].starts_with("LST 5 "));
        assert_eq!(h.ask(once, "BLK 6 carol"), ["BLK 6 carol"]);
        assert_eq!(h.ask(once, "ALW 7 carol"), ["ALW 7 carol"]);
        // An invitation meanwhile rings the chat, never the one-shot session.
        let inv = h.ask(bob, &format!("INV 8 alice {}", offer(2)));
        let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
        assert_eq!(
            to(&h.log, chat).last().unwrap(),
            &format!("RNG 0 {sid} bob")
        );
        assert!(!to(&h.log, once).iter().any(|l| l.starts_with("RNG")));
        assert_eq!(
            h.ask(chat, &format!("DEC 9 {sid}")),
            [format!("DEC 9 {sid}")]
        );
        h.ask(once, "OUT 10");
    }
    // Bob never saw alice change, and her chat was never told to leave.
    assert!(
        presence(&to(&h.log, bob)).is_empty(),
        "{:?}",
        to(&h.log, bob)
    );
    assert!(!to(&h.log, chat).iter().any(|l| l.starts_with("OUT")));
    assert_eq!(h.ask(chat, "PNG 11"), ["QNG 11"]);
}

#[test]
fn the_same_session_id_replaces_only_that_session() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let (a, b) = (login_sid('a'), login_sid('B'));
    let s1 = h.online("alice", "NLN");
    assert_eq!(
        h.ask(s1, &format!("DEV 3 {} {a}", key(1))),
        [format!("DEV 3 {} {a}", key(1))]
    );
    let s2 = h.online("alice", "AWY");
    // Upper-case hex is the same id; the answer is lower-case.
    assert_eq!(
        h.ask(s2, &format!("DEV 3 {} {b}", key(2))),
        [format!("DEV 3 {} {}", key(2), b.to_ascii_lowercase())]
    );
    let plain = h.online("alice", "BSY");
    h.ask(plain, &format!("DEV 3 {}", key(1)));
    h.log.clear();
    // s1's client reconnects: its new connection takes over s1, and only s1.
    let s3 = h.login("alice");
    let answer = h.ask(s3, &format!("DEV 4 {} {a}", key(1)));
    assert_eq!(answer, [format!("DEV 4 {} {a}", key(1))]);
    assert_eq!(to(&h.log, s1), ["OUT 0 OTH", "CLOSE"]);
    assert!(to(&h.log, s2).is_empty());
    assert!(to(&h.log, plain).is_empty());
    // Alice is still NLN? No: s1 was NLN and s3 has not sent CHG; AWY is shown now.
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 AWY alice"]);
    h.log.clear();
    assert_eq!(h.ask(s3, "CHG 5 NLN"), ["CHG 5 NLN"]);
    assert_eq!(presence(&to(&h.log, bob)), ["NLN 0 NLN alice"]);
    // The id is fixed once given; the same again is fine, another or a malformed one is 201.
    assert_eq!(h.ask(s3, &format!("DEV 6 {} {a}", key(1))).len(), 1);
    assert_eq!(h.ask(s3, &format!("DEV 6 {}", key(1))).len(), 1);
    let bad = "201 7 invalid parameter";
    assert_eq!(h.ask(s3, &format!("DEV 7 {} {b}", key(1))), [bad]);
    let s4 = h.login("alice");
    assert_eq!(h.ask(s4, &format!("DEV 7 {} abc", key(1))), [bad]);
    assert_eq!(h.ask(s4, &format!("DEV 7 {} {a} x", key(1))), [bad]);
    // Sessions without an id are never replaced; another user's id is not ours.
    let bob2 = h.login("bob");
    h.ask(bob2, &format!("DEV 8 {} {b}", key(9)));
    assert_eq!(h.ask(s2, "PNG 9"), ["QNG 9"]);
    assert_eq!(h.ask(plain, "PNG 9"), ["QNG 9"]);
    assert_eq!(h.server.connection_count(), 6);
}

#[test]
fn an_invitation_rings_every_capable_session_and_one_answers() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    let alice_cli = h.login("alice");
    let b1 = h.online("bob", "NLN");
    let b2 = h.online("bob", "AWY");
    let b_once = h.login("bob");
    let b_hidden = h.online("bob", "HDN");
    let carol = h.online("carol", "NLN");
    h.log.clear();
    let inv = h.ask(alice, &format!("INV 5 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    let ring = format!("RNG 0 {sid} alice");
    assert_eq!(to(&h.log, b1), std::slice::from_ref(&ring));
    assert_eq!(to(&h.log, b2), [ring]);
    for quiet in [b_once, b_hidden, alice_cli, carol] {
        assert!(to(&h.log, quiet).is_empty(), "{quiet:?}");
    }
    h.log.clear();
    // b2 answers: it is introduced; b1 stops ringing.
    let answer = h.ask(b2, &format!("ANS 6 {sid} {}", offer(2)));
    assert_eq!(answer[0], format!("ANS 6 {sid}"));
    assert!(answer[1].starts_with(&format!("ITR 0 {sid} alice role=responder ")));
    assert_eq!(to(&h.log, b1), [format!("CAN 0 {sid} answered")]);
    let itr: Vec<ConnId> = h
        .log
        .iter()
        .filter_map(|o| match o {
            Output::Send { conn, line } if line.command.as_str() == "ITR" => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(itr, [alice, b2]);
    // Too late for b1; PRM only between the two introduced sessions.
    assert_eq!(
        h.ask(b1, &format!("ANS 7 {sid} {}", offer(3))),
        ["217 7 user offline"]
    );
    assert_eq!(h.ask(b1, &format!("PRM 8 {sid}")), ["217 8 user offline"]);
    assert_eq!(
        h.ask(alice_cli, &format!("PRM 8 {sid}")),
        ["217 8 user offline"]
    );
    h.log.clear();
    assert_eq!(h.ask(b2, &format!("PRM 9 {sid}")), [format!("PRM 9 {sid}")]);
    assert_eq!(to(&h.log, alice), [format!("PRM 0 {sid}")]);
    assert!(to(&h.log, alice_cli).is_empty());
    // DEC from one session: the inviter is declined, the other rung session is told.
    h.log.clear();
    let inv = h.ask(alice, &format!("INV 10 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    assert_eq!(
        h.ask(b1, &format!("DEC 11 {sid}")),
        [format!("DEC 11 {sid}")]
    );
    assert_eq!(
        to(&h.log, alice).last().unwrap(),
        &format!("CAN 0 {sid} declined")
    );
    assert_eq!(
        to(&h.log, b2).last().unwrap(),
        &format!("CAN 0 {sid} answered")
    );
    // A timeout reaches the inviter and every rung session.
    h.log.clear();
    let inv = h.ask(alice, &format!("INV 12 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    h.advance(std::time::Duration::from_secs(31));
    let timeout = format!("CAN 0 {sid} timeout");
    for conn in [alice, b1, b2] {
        assert!(to(&h.log, conn).contains(&timeout), "{conn:?}");
    }
}

#[test]
fn invitations_and_introductions_end_with_their_own_session() {
    let mut h = world();
    let a1 = h.online("alice", "NLN");
    let a2 = h.online("alice", "NLN");
    let b1 = h.online("bob", "NLN");
    let b2 = h.online("bob", "NLN");
    let inv = h.ask(a1, &format!("INV 5 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    h.log.clear();
    // Another session of the inviter, and one of the two rung sessions, go away: the
    // invitation stands and nobody is told anything about it.
    h.server.handle_disconnected(h.now, a2);
    h.server.handle_disconnected(h.now, b1);
    h.drain();
    assert!(
        !h.log
            .iter()
            .any(|o| matches!(o, Output::Send { line, .. } if line.command.as_str() == "CAN"))
    );
    assert_eq!(h.server.pending_introductions(), 1);
    // The last rung session goes: the inviter learns the invitee is offline.
    let b3 = h.online("bob", "NLN");
    h.server.handle_disconnected(h.now, b2);
    h.drain();
    assert_eq!(
        to(&h.log, a1).last().unwrap(),
        &format!("CAN 0 {sid} offline")
    );
    assert_eq!(h.server.pending_introductions(), 0);
    // The inviting session goes: the rung sessions are told.
    let inv = h.ask(a1, &format!("INV 6 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    let a3 = h.online("alice", "NLN");
    h.server.handle_disconnected(h.now, a1);
    h.drain();
    assert_eq!(
        to(&h.log, b3).last().unwrap(),
        &format!("CAN 0 {sid} offline")
    );
    // An introduced session lives as long as both of its sessions, whatever the others do.
    let inv = h.ask(a3, &format!("INV 7 bob {}", offer(1)));
    let sid = inv[0].rsplit(' ').next().unwrap().to_owned();
    h.ask(b3, &format!("ANS 8 {sid} {}", offer(2)));
    let b4 = h.online("bob", "NLN");
    let a4 = h.online("alice", "NLN");
    h.server.handle_disconnected(h.now, b4);
    h.server.handle_disconnected(h.now, a4);
    h.drain();
    assert_eq!(h.ask(a3, &format!("PRM 9 {sid}")), [format!("PRM 9 {sid}")]);
    assert_eq!(h.server.introduced_sessions(), 1);
    h.server.handle_disconnected(h.now, b3);
    h.drain();
    assert_eq!(h.server.introduced_sessions(), 0);
    assert_eq!(h.ask(a3, &format!("PRM 10 {sid}")), ["217 10 user offline"]);
}
