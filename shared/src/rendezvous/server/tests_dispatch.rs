//! Dispatch (docs/PROTOCOL.md section 11): a full or draining node answers `XFR` with another
//! node's address, pushes it to its sessions when it starts draining, and refuses with
//! `600`/`601` when it knows no other node.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::tests::{CB, CHEAP, Harness, config, name, to};
use super::*;
use crate::rendezvous::scram::{MECHANISM, ScramClient};

const PEER_A: &str = "192.0.2.10:1863";
const PEER_B: &str = "192.0.2.11:1863";

fn peers() -> Vec<SocketAddr> {
    vec![PEER_A.parse().unwrap(), PEER_B.parse().unwrap()]
}

fn cluster(max_sessions: Option<usize>) -> Harness {
    let config = RendezvousConfig {
        max_sessions,
        ..config()
    };
    let mut h = Harness::with_config(config, &["alice", "bob", "carol"], &[], &[]);
    h.server.handle_peer_nodes(peers());
    h
}

/// `XFR TrID NS <one of the peers> reason`.
fn is_xfr(line: &str, trid: u32, reason: &str) -> bool {
    let parts: Vec<&str> = line.split(' ').collect();
    parts.len() == 5
        && parts[0] == "XFR"
        && parts[1] == trid.to_string()
        && parts[2] == "NS"
        && [PEER_A, PEER_B].contains(&parts[3])
        && parts[4] == reason
}

#[test]
fn a_node_below_its_limit_serves_and_a_full_one_redirects_ver() {
    let mut h = cluster(Some(2));
    h.login("alice");
    h.login("bob");
    assert_eq!(h.server.node_state(), NodeState::Ready);
    let c = h.connect();
    let answer = h.ask(c, "VER 7 P2P1");
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert!(is_xfr(&answer[0], 7, "full"), "{answer:?}");
    assert_eq!(answer[1], "CLOSE");
    assert_eq!(h.server.counters().transfers, 1);
    // The redirected connection is gone; the sessions stay.
    assert_eq!(h.server.connection_count(), 2);
    assert_eq!(h.server.session_count(), 2);
}

#[test]
fn a_node_that_fills_up_after_ver_redirects_the_login() {
    let mut h = cluster(Some(1));
    let late = h.hello();
    h.login("alice");
    let answer = h.ask(late, "USR 3 SCRAM-SHA-256-ARGON2ID I eA==");
    assert!(is_xfr(&answer[0], 3, "full"), "{answer:?}");
    assert_eq!(answer[1], "CLOSE");
    // Not a failed login: nothing counts against the address.
    assert_eq!(h.server.counters().logins_auth_failed, 0);
}

#[test]
fn a_session_leaving_makes_room_again() {
    let mut h = cluster(Some(1));
    let alice = h.login("alice");
    h.ask(alice, "OUT 9");
    h.login("bob");
    assert_eq!(h.server.session_count(), 1);
}

#[test]
fn draining_pushes_xfr_to_every_session_and_redirects_newcomers() {
    let mut h = cluster(None);
    let sessions = [h.login("alice"), h.login("bob"), h.login("carol")];
    let anonymous = h.hello();
    h.log.clear();
    h.server.handle_drain(h.now);
    let out = h.drain();
    for conn in sessions {
        let lines = to(&out, conn);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(is_xfr(&lines[0], 0, "draining"), "{lines:?}");
    }
    // Not logged in: nothing pushed (its next VER or USR gets the answer).
    assert!(to(&out, anonymous).is_empty());
    // Sessions stay until they move (or the driver's drain period ends).
    assert_eq!(h.server.session_count(), 3);
    assert_eq!(h.server.node_state(), NodeState::Draining);
    let answer = h.ask(anonymous, "USR 3 SCRAM-SHA-256-ARGON2ID I eA==");
    assert!(is_xfr(&answer[0], 3, "draining"), "{answer:?}");
    let c = h.connect();
    assert!(is_xfr(&h.ask(c, "VER 1 P2P1")[0], 1, "draining"));
    assert_eq!(h.server.counters().transfers, 5);
    // Draining again pushes nothing more.
    h.server.handle_drain(h.now);
    assert!(h.drain().is_empty());
}

#[test]
fn drained_sessions_spread_over_the_peers() {
    let users: Vec<String> = (0..16).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut h = Harness::with_config(config(), &names, &[], &[]);
    h.server.handle_peer_nodes(peers());
    for user in &names {
        h.login(user);
    }
    h.server.handle_drain(h.now);
    let targets: HashSet<String> = h
        .drain()
        .iter()
        .filter_map(|o| match o {
            Output::Send { line, .. } if line.command.as_str() == "XFR" => {
                line.param(1).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    assert_eq!(targets.len(), 2, "16 sessions all went to {targets:?}");
}

#[test]
fn without_peers_a_full_or_draining_node_refuses_clearly() {
    let config = RendezvousConfig {
        max_sessions: Some(0),
        ..config()
    };
    let mut h = Harness::with_config(config, &["alice"], &[], &[]);
    let c = h.connect();
    assert_eq!(
        h.ask(c, "VER 1 P2P1"),
        ["600 1 server full", "OUT 0 ERR", "CLOSE"]
    );
    let mut h = Harness::with_config(super::tests::config(), &["alice"], &[], &[]);
    let alice = h.login("alice");
    h.log.clear();
    h.server.handle_drain(h.now);
    // No node to send the session to: it stays until the driver ends the drain.
    assert!(h.drain().is_empty());
    let c = h.connect();
    assert_eq!(
        h.ask(c, "VER 1 P2P1"),
        ["601 1 server draining", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(h.server.counters().transfers, 0);
    assert_eq!(h.server.session_count(), 1);
    assert!(to(&h.log, alice).is_empty());
}

#[test]
fn the_peer_list_is_replaced_and_deduplicated() {
    let mut h = cluster(Some(0));
    let a: SocketAddr = PEER_A.parse().unwrap();
    h.server.handle_peer_nodes(vec![a, a]);
    assert_eq!(h.server.peer_nodes(), [a]);
    let c = h.connect();
    assert_eq!(
        h.ask(c, "VER 1 P2P1"),
        [format!("XFR 1 NS {PEER_A} full"), "CLOSE".to_owned()]
    );
}

#[test]
fn a_login_under_way_when_the_drain_begins_is_moved_too() {
    let mut h = cluster(None);
    let conn = h.hello();
    // The first step before the drain, the last one after it.
    let mut client = ScramClient::new(&name("alice"), &[5; 18], &CB).with_min_kdf(CHEAP);
    let first = B64.encode(client.client_first());
    let answer = h.ask(conn, &format!("USR 3 {MECHANISM} I {first}"));
    let server_first = answer[0].rsplit(' ').next().unwrap();
    let server_first = String::from_utf8(B64.decode(server_first).unwrap()).unwrap();
    let last = client
        .handle_server_first(&server_first, b"alice-pw")
        .unwrap();
    h.server.handle_drain(h.now);
    h.drain();
    let answers = h.ask(conn, &format!("USR 4 {MECHANISM} S {}", B64.encode(last)));
    assert!(answers[0].starts_with("USR 4 OK alice "), "{answers:?}");
    assert!(
        is_xfr(answers.last().unwrap(), 0, "draining"),
        "{answers:?}"
    );
}
