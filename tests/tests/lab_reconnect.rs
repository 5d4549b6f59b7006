//! `p2p-client chat` behind real kernel NATs while the server is killed (SIGKILL) and started
//! again on the same addresses, database and certificate: both clients say they are
//! reconnecting, are connected again within 5 s of the restart, and the chat goes on with every
//! message delivered exactly once and in order both ways. Two cases: port-restricted cone
//! NATs on both sides (the direct path carries on untouched during the outage), and symmetric
//! NATs on both sides (relayed: the relay dies with the server and is rejoined with a fresh
//! ticket through a new introduction).
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise a loud `SKIPPED:` line, or a failure
//! when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tests::lab::chat::phases::{end_both, type_phase, wait_delivered};
use tests::lab::chat::{ChatEvent, ChatPeer, ChatServer, path_events};
use tests::lab::{Lab, require_lab, serial};
use tests::nat_types::{NatType, RouterOptions};

const USERS: [&str; 2] = ["alice", "bob"];
const SETTLE: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(25);

fn server_states(events: &[ChatEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind() == "server")
        .map(|e| e.get("state").to_owned())
        .collect()
}

fn restart_mid_chat(nat: NatType, want: &str) {
    let options = RouterOptions::new(nat);
    let lab = Lab::two_peers(options, options).unwrap();
    let mut server = ChatServer::start(&lab).unwrap();
    server.register_pair(&lab, USERS[0], USERS[1]).unwrap();
    lab.flush_all().unwrap();
    let start = |i: usize| {
        ChatPeer::start(
            &lab,
            lab.client(i),
            USERS[i],
            USERS[1 - i],
            &["--wait", "30"],
        )
        .unwrap()
    };
    let mut peers = [start(0), start(1)];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    type_phase(&mut peers, &mut sent, "before");
    let on_path = |events: &[ChatEvent]| path_events(events).last().is_some_and(|p| p.0 == want);
    for peer in &mut peers {
        assert!(
            peer.wait_for(SETTLE, on_path),
            "{}: no {want} path\n{}",
            peer.user,
            peer.logs()
        );
    }
    wait_delivered(&mut peers, &sent, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"));

    server.kill();
    type_phase(&mut peers, &mut sent, "during the outage");
    for peer in &mut peers {
        assert!(
            peer.wait_for(Duration::from_secs(5), |e| server_states(e)
                == ["reconnecting"]),
            "{}: no reconnecting event\n{}",
            peer.user,
            peer.logs()
        );
    }
    // Deliberately a fixed wait: the server stays down a second after both noticed, so their
    // first attempts to log in again fail and the restart is found by the back-off retries
    // (what the 5 s bound below is about).
    std::thread::sleep(Duration::from_secs(1));
    server.restart(&lab).unwrap();
    let restarted = Instant::now();
    for peer in &mut peers {
        let back = |e: &[ChatEvent]| server_states(e) == ["reconnecting", "connected"];
        assert!(
            peer.wait_for(Duration::from_secs(5), back),
            "{}: not connected again within 5 s of the restart\n{}",
            peer.user,
            peer.logs()
        );
    }
    let reconnect = restarted.elapsed();
    type_phase(&mut peers, &mut sent, "after the restart");
    wait_delivered(&mut peers, &sent, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let (outcomes, reports) = end_both(peers, EXIT);
    eprintln!("{nat:?}: both connected again {reconnect:?} after the restart");
    for (i, outcome) in outcomes.iter().enumerate() {
        let got: Vec<String> = outcome
            .messages()
            .iter()
            .map(|(_, text)| (*text).to_owned())
            .collect();
        assert_eq!(
            got,
            sent[1 - i],
            "{}: exactly once, in order\n{reports}",
            outcome.user
        );
        assert!(outcome.succeeded(), "{reports}");
        assert!(
            outcome.last_path().is_some_and(|(p, _)| p == want),
            "{}: ended on {:?}\n{reports}",
            outcome.user,
            outcome.last_path()
        );
    }
}

#[test]
fn a_direct_chat_behind_nats_survives_a_server_restart() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    restart_mid_chat(NatType::PortRestrictedCone, "direct");
}

#[test]
fn a_relayed_chat_behind_nats_rejoins_the_relay_after_a_server_restart() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    restart_mid_chat(NatType::Symmetric, "relayed");
}
