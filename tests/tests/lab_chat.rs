// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

//! `p2p-client chat` between two real processes behind real kernel NATs: every pair of {none,
//! full cone, restricted cone, port-restricted cone, symmetric (random ports)}, with the
//! routers' inbound drop rule (home routers) and without it (the conntrack race of
//! docs/DESIGN.md section 5); UDP blocked on one side; a NAT mapping that expires in the middle of a chat.
//!
//! Each pair gets one lab (`Lab::two_peers`: each peer behind its own router, the core between
//! them, the server host with two addresses), one `stun-server` in the server namespace (STUN
//! on both addresses, rendezvous, switchboard, a fresh database) and two registered users who
//! are each other's contacts. Each run flushes both routers (conntrack and learnt mappings),
//! starts `p2p-client chat --json` in both peer namespaces at once, types half of
//! its lines at once (they wait for the introduction and go out over whatever path is up), waits
//! until the path the pair should reach is there (at most [`SETTLE`]; where no direct path is
//! expected: until both logs say punching gave up, so the second half crosses the relay after
//! the puncher's end), types the other half, ends the input and waits for both to exit. Every run must deliver every message exactly
//! once and in order both ways, and both processes must exit 0 with no `error` event.
//!
//! The final path per side (its last `path` event) must match
//! [`tests::nat_types::expected_punch`]:
//! - `Direct`: both sides end on `direct`, to the other side's public address;
//! - `Birthday` (symmetric against port-restricted): both sides direct in at least 9 of 10
//!   runs (scaled to the run count), the others relayed; both sides' logs must name the
//!   birthday strategies (`BirthdayProbe`, `BirthdayListen`);
//! - `Relay` (symmetric against symmetric): both sides end on `relayed` (the switchboard), and
//!   each side's first `path` event is `relayed` and comes within 1.5 s of its introduction.
//!   Measured per side from the moment our reader got the `connected` line (printed when the
//!   introduction arrives, just before the relay connection starts) to the moment it got the
//!   first `path` line; both are read from the process's stdout pipe as they are written.
//!
//! No flag asks for classification: `chat` classifies the NAT by default, which the birthday
//! method needs (without it neither side would know it is symmetric or port-restricted and
//! they would probe plainly). The matrix therefore shows the default does what works.
//!
//! Run counts: `LAB_CHAT_RUNS` (default 10) for the main matrix, `LAB_CHAT_RACE_RUNS` (default
//! 3) for the matrix without the drop rule. `LAB_CHAT_PAIRS=symmetric-random:port-restricted,..`
//! limits both matrices to the named pairs (names of `PunchNat::name`). Run with
//! `-- --nocapture` to see the tables (runs with a slow phase are listed with where their time
//! went). `LAB_CHAT_DUMP=DIR` writes both sides' events (with times) and logs of every
//! slow or failed run to `DIR`. The binaries are `stun-server` and `p2p-client` of the
//! same target directory, built first (see `tests::lab::chat`).
//!
//! The other tests: UDP blocked on one side (relayed, everything delivered); a mapping that
//! expires mid-chat (5 s router timeout; the mapping is flushed once, then starved for 9 s
//! by dropping all UDP at the router before conntrack; every message must arrive, and the
//! chat must end direct again); a router that moves to a new public address mid-chat (the
//! chat must punch again through a new introduction and end direct to the new address).
//!
//! Not here: the switchboard refusing a wrong or reused ticket (covered by the loopback tests
//! of `stun-server`).
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise a loud `SKIPPED:` line, or a failure
//! when `CI=true`.

mod chat_matrix;

use std::time::{Duration, Instant};

use chat_matrix::{
    EXIT, Pair, SETTLE, check_delivery, env_count, ms, public_ip, run_matrix, run_once,
};
use tests::lab::chat::phases::{end_both, type_phase, wait_delivered};
use tests::lab::chat::{ChatServer, path_events};
use tests::lab::{require_lab, serial};
use tests::nat_types::{NatType, RouterOptions};

// `wait_delivered` is a barrier in these tests (`let _`): what arrived is checked at the end,
// by `check_delivery`.

#[test]
fn every_nat_pair_chats_over_the_expected_path_with_home_routers() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    run_matrix(
        true,
        env_count("LAB_CHAT_RUNS", 10),
        "chat matrix, routers with the inbound drop rule",
    );
}

#[test]
fn every_nat_pair_chats_over_the_same_paths_without_the_inbound_drop_rule() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    run_matrix(
        false,
        env_count("LAB_CHAT_RACE_RUNS", 3),
        "chat matrix, routers WITHOUT the inbound drop rule (conntrack race)",
    );
}

#[test]
fn udp_blocked_on_one_side_chats_over_the_relay() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let pair = Pair::new(
        RouterOptions::new(NatType::UdpBlocked),
        RouterOptions::new(NatType::PortRestrictedCone),
    );
    let r = run_once(&pair, 0, false);
    assert!(r.problems.is_empty(), "{:?}\n{}", r.problems, r.reports);
    assert!(r.both("relayed"), "last paths {:?}\n{}", r.last, r.reports);
    let switchboard = ChatServer::switchboard().to_string();
    for last in &r.last {
        assert_eq!(last.as_ref().unwrap().1, switchboard, "{}", r.reports);
    }
    eprintln!(
        "udp-blocked <-> port-restricted: relayed; first path after the introduction {:?}; \
         punching gave up after {:?}; strategies {:?}; phases {:?}",
        r.first_path, r.gave_up, r.strategy, r.phases
    );
}

/// An nftables table in a router that drops every UDP packet before conntrack sees it (so
/// no packet refreshes the router's mappings, which then expire).
const CUT: &str = "table ip chatcut {\n  chain raw {\n    type filter hook prerouting priority raw - 10; \
                   policy accept;\n    meta l4proto udp drop\n  }\n}\n";

#[test]
fn a_nat_mapping_that_expires_mid_chat_loses_no_message() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    // A 5 s UDP timeout. The chat's probes (every 2 s on a quiet direct path) keep a live
    // mapping alive, so the mapping is made to expire: first flushed outright (conntrack and
    // learnt mappings), later starved by dropping every UDP packet at the router, before
    // conntrack, for longer than the timeout (and than the chat's 6 s direct-path timeout).
    let options = RouterOptions {
        udp_timeout: Duration::from_secs(5),
        ..RouterOptions::new(NatType::PortRestrictedCone)
    };
    let pair = Pair::new(options, options);
    let lab = &pair.lab;
    let router = lab.router_of(0).unwrap().clone();
    lab.flush_all().unwrap();
    let mut peers = [pair.start(0, &[]), pair.start(1, &[])];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let direct = |events: &[tests::lab::chat::ChatEvent]| {
        path_events(events).last().is_some_and(|p| p.0 == "direct")
    };
    type_phase(&mut peers, &mut sent, "start");
    for peer in &mut peers {
        assert!(
            peer.wait_for(SETTLE, direct),
            "{}: no direct path\n{}",
            peer.user,
            peer.logs()
        );
    }
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(10));

    // 1: the mapping vanishes at once (what an expiry does), the chat goes on typing.
    lab.flush_nat(&router).unwrap();
    type_phase(&mut peers, &mut sent, "after a flush");
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(20));

    // 2: no UDP crosses the router for 9 s: the mapping times out (5 s) while messages are
    // typed; the chat must carry them (over the relay, once the direct path is quiet).
    lab.nft(&router.ns, CUT).unwrap();
    let cut = Instant::now();
    type_phase(&mut peers, &mut sent, "during the cut");
    // Deliberately a fixed wait: the router's 5 s UDP timeout must run out while the cut
    // holds (what an expiry in a quiet spell is); nothing the test could await marks it.
    std::thread::sleep(Duration::from_secs(7));
    let stale = lab.conntrack_udp(&router).unwrap();
    let client_ip = lab.client(0).ip().to_string();
    let left: Vec<&String> = stale.iter().filter(|l| l.contains(&client_ip)).collect();
    type_phase(&mut peers, &mut sent, "late in the cut");
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(2));
    // Deliberately a fixed wait: the cut lasts 9 s in all, long enough for the chat to give
    // up on the quiet direct path and carry on over the relay.
    std::thread::sleep(Duration::from_secs(9).saturating_sub(cut.elapsed()));
    let during: Vec<Vec<String>> = peers
        .iter_mut()
        .map(|p| {
            path_events(p.seen())
                .iter()
                .map(|(path, remote, _)| format!("{path} {remote}"))
                .collect()
        })
        .collect();
    lab.nft(&router.ns, "delete table ip chatcut\n").unwrap();

    // 3: UDP is back; the chat goes on. Then the direct path must come back within 20 s
    // (the chat probes the old one and punches again; an attempt that began during the cut
    // runs out first, then the next one is due after its back-off).
    type_phase(&mut peers, &mut sent, "after the cut");
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let came_back: Vec<bool> = peers
        .iter_mut()
        .map(|p| p.wait_for(deadline.saturating_duration_since(Instant::now()), direct))
        .collect();
    type_phase(&mut peers, &mut sent, "at the end");
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    let (outcomes, reports) = end_both(peers, EXIT);
    eprintln!(
        "mapping expiry: conntrack entries of {client_ip} left 7 s into the cut: {left:?}\n\
         paths by the end of the cut: {during:?}\n\
         direct again within 20 s of the delivery after the cut: {came_back:?}\n\
         final paths: {:?} / {:?}",
        outcomes[0].last_path(),
        outcomes[1].last_path()
    );
    assert!(
        left.is_empty(),
        "the mapping should have expired during the cut: {left:#?}"
    );
    let problems = check_delivery(&outcomes, &sent);
    assert!(problems.is_empty(), "{problems:#?}\n{reports}");
    assert_eq!(came_back, [true, true], "not direct again\n{reports}");
    for o in &outcomes {
        assert!(
            o.last_path().is_some_and(|(p, _)| p == "direct"),
            "{reports}"
        );
    }
}

/// A NAT that moves to a new public address in the middle of a chat (a new lease from the
/// ISP, a router that comes back on another address). The old direct path is dead for good:
/// the peer's port-restricted NAT admits nothing from the new address, and nothing reaches the
/// old one. The chat must move to the relay, punch again through a new introduction (a fresh
/// STUN Binding tells the moved side its new address), and end direct to the new address, with
/// every message delivered exactly once and in order.
#[test]
fn a_nat_that_changes_its_public_address_mid_chat_is_punched_again() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let options = RouterOptions::new(NatType::PortRestrictedCone);
    let pair = Pair::new(options, options);
    let lab = &pair.lab;
    let router = lab.router_of(0).unwrap().clone();
    let old_ip = router.wan_ip.to_string();
    lab.flush_all().unwrap();
    let mut peers = [pair.start(0, &[]), pair.start(1, &[])];
    let mut sent: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let direct_to = |ip: String| {
        move |events: &[tests::lab::chat::ChatEvent]| {
            path_events(events).last().is_some_and(|(p, remote, _)| {
                *p == "direct" && remote.starts_with(&format!("{ip}:"))
            })
        }
    };
    type_phase(&mut peers, &mut sent, "start");
    let publics = [old_ip.clone(), public_ip(lab, 1).to_string()];
    for (i, peer) in peers.iter_mut().enumerate() {
        assert!(
            peer.wait_for(SETTLE, direct_to(publics[1 - i].clone())),
            "{}: no direct path\n{}",
            peer.user,
            peer.logs()
        );
    }
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(10));

    let moved = Instant::now();
    let new_ip = lab.renumber(&router).unwrap().to_string();
    type_phase(&mut peers, &mut sent, "after the move");
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    // Bob must end direct to Alice's new address, Alice direct to Bob again (after a
    // relayed stretch in between).
    let back = [
        peers[0].wait_for(Duration::from_secs(40), |events| {
            let after: Vec<_> = path_events(events)
                .into_iter()
                .filter(|(_, _, at)| *at > moved)
                .collect();
            after.iter().any(|(p, _, _)| *p == "relayed")
                && after.last().is_some_and(|(p, remote, _)| {
                    *p == "direct" && remote.starts_with(&format!("{}:", publics[1]))
                })
        }),
        peers[1].wait_for(Duration::from_secs(40), direct_to(new_ip.clone())),
    ];
    let timings: Vec<String> = peers
        .iter_mut()
        .map(|p| {
            path_events(p.seen())
                .iter()
                .filter(|(_, _, at)| *at > moved)
                .map(|(path, remote, at)| format!("+{} ms {path} {remote}", ms(*at - moved)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    type_phase(&mut peers, &mut sent, "after punching again");
    let _ = wait_delivered(&mut peers, &sent, Duration::from_secs(20));
    let (outcomes, reports) = end_both(peers, EXIT);
    eprintln!(
        "renumbered {old_ip} -> {new_ip}; paths after the move: alice [{}], bob [{}]",
        timings[0], timings[1]
    );
    let problems = check_delivery(&outcomes, &sent);
    assert!(problems.is_empty(), "{problems:#?}\n{reports}");
    assert_eq!(
        back,
        [true, true],
        "not direct again after the move\n{reports}"
    );
    for o in &outcomes {
        assert!(
            o.events.iter().any(|e| e.kind() == "punching_again"),
            "{}: no punching_again event\n{reports}",
            o.user
        );
    }
}
