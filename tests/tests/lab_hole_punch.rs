//! Naive UDP hole punching between two peers behind every pair of NAT types, in the real
//! kernel lab and in the simulator, which must agree on which pairs connect.
//!
//! Each peer learns its mapping from the probe responder, then both send to each other's
//! mapping three times, then each answers wherever it saw the other come from. A pair
//! "connects" if each peer received something from the other. Routers drop unsolicited
//! traffic to themselves (no conntrack race here; see `lab_conntrack_race.rs`).
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise a loud `SKIPPED:` line, or a failure
//! when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::lab::probe::{self, Responder};
use tests::lab::{Lab, SERVER_IPS, require_lab, serial};
use tests::nat_types::{NatType, RouterOptions};
use tests::sim::{Datagram, LinkConditions, Network};

/// The types paired up (a public host and a blocked site are the trivial cases).
const TYPES: [NatType; 5] = [
    NatType::FullCone,
    NatType::RestrictedCone,
    NatType::PortRestrictedCone,
    NatType::Symmetric,
    NatType::SymmetricUdpFirewall,
];

/// Punching rounds before the answers.
const ROUNDS: u32 = 3;

/// Every datagram waiting on `socket` within `wait`, with its source.
fn drain(socket: &UdpSocket, wait: Duration) -> Vec<SocketAddr> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            seen.push(from);
        }
    }
    seen
}

fn punch_in_lab(a: RouterOptions, b: RouterOptions) -> bool {
    let lab = Lab::two_peers(a, b).unwrap();
    let open = |i: usize| {
        let host = lab.client(i);
        lab.udp_socket(host, SocketAddr::new(IpAddr::V4(host.ip()), 0))
            .unwrap()
    };
    let (sa, sb) = (open(0), open(1));
    let responder = Responder::start(&lab).unwrap();
    let server = probe::primary();
    let ma = probe::probe(&sa, server, "probe", 1, server)
        .unwrap()
        .unwrap();
    let mb = probe::probe(&sb, server, "probe", 2, server)
        .unwrap()
        .unwrap();
    drop(responder);
    let (mut a_saw, mut b_saw) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        sa.send_to(b"a", mb).unwrap();
        sb.send_to(b"b", ma).unwrap();
        b_saw.extend(drain(&sb, Duration::from_millis(30)));
        a_saw.extend(drain(&sa, Duration::from_millis(30)));
    }
    if let Some(&to) = b_saw.first() {
        sb.send_to(b"b answers", to).unwrap();
    }
    if let Some(&to) = a_saw.first() {
        sa.send_to(b"a answers", to).unwrap();
    }
    a_saw.extend(drain(&sa, Duration::from_millis(150)));
    b_saw.extend(drain(&sb, Duration::from_millis(150)));
    !a_saw.is_empty() && !b_saw.is_empty()
}

/// One datagram through the simulated network: its source as the receiver saw it.
fn deliver(net: &mut Network, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
    net.send(Datagram::new(src, dst, b"x".to_vec()));
    while net.next_event().is_some() {
        if let Some(d) = net.step() {
            return Some(d.datagram.src);
        }
    }
    None
}

fn punch_in_simulator(a: RouterOptions, b: RouterOptions) -> bool {
    let mut net = Network::new(1, Instant::now(), LinkConditions::default());
    let inet = net.internet();
    net.add_host(inet, &[IpAddr::V4(SERVER_IPS[0])]);
    let server = SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), 4478);
    let mut peer = |options: RouterOptions, n: u8| {
        let outside = IpAddr::from([203, 0, 113, 8 * n + 2]);
        let (_, inside) = net.add_nat(inet, outside, options);
        let ip = if options.nat.translates() {
            net.add_inside_host(inside).1
        } else {
            let ip = IpAddr::from([192, 0, 2, 16 * n + 2]);
            net.add_host(inside, &[ip]);
            ip
        };
        SocketAddr::new(ip, 40000 + u16::from(n))
    };
    let (pa, pb) = (peer(a, 0), peer(b, 1));
    let ma = deliver(&mut net, pa, server).unwrap();
    let mb = deliver(&mut net, pb, server).unwrap();
    let (mut a_saw, mut b_saw) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        b_saw.extend(deliver(&mut net, pa, mb));
        a_saw.extend(deliver(&mut net, pb, ma));
    }
    if let Some(&to) = b_saw.first() {
        a_saw.extend(deliver(&mut net, pb, to));
    }
    if let Some(&to) = a_saw.first() {
        b_saw.extend(deliver(&mut net, pa, to));
    }
    !a_saw.is_empty() && !b_saw.is_empty()
}

#[test]
fn lab_and_simulator_agree_on_which_nat_pairs_hole_punching_connects() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let mut table = Vec::new();
    let mut disagreements = Vec::new();
    for (i, &x) in TYPES.iter().enumerate() {
        for &y in &TYPES[i..] {
            let (a, b) = (RouterOptions::new(x), RouterOptions::new(y));
            let lab = punch_in_lab(a, b);
            let sim = punch_in_simulator(a, b);
            table.push(format!(
                "{:<24} <-> {:<24} lab {:<5} sim {sim}",
                x.name(),
                y.name(),
                lab
            ));
            if lab != sim {
                disagreements.push(format!(
                    "{} <-> {}: lab {lab}, sim {sim}",
                    x.name(),
                    y.name()
                ));
            }
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // Known answers: endpoint-independent mappings connect; symmetric against
    // port-restricted filtering (or itself) does not.
    let known = [
        (
            NatType::PortRestrictedCone,
            NatType::PortRestrictedCone,
            true,
        ),
        (NatType::FullCone, NatType::Symmetric, true),
        (NatType::PortRestrictedCone, NatType::Symmetric, false),
        (NatType::Symmetric, NatType::Symmetric, false),
    ];
    for (x, y, want) in known {
        let got = punch_in_simulator(RouterOptions::new(x), RouterOptions::new(y));
        assert_eq!(got, want, "{} <-> {}", x.name(), y.name());
    }
}
