//! The conntrack race of docs/DESIGN.md section 5, on real kernel NATs.
//!
//! Two port-restricted-cone peers, each behind its own router, learn their mappings from the
//! probe responder; then B sends to A's mapping *before* A has sent anything to B. Without
//! an input rule on A's router, B's packet is delivered to the router itself and conntrack
//! confirms an entry for it (B's mapping -> A's mapping); A's first packet to B then clashes
//! with that entry and masquerade gives it another external port ("poisoned"). B's router
//! sees A's packet arrive from that other port (its conntrack table shows it), drops it (B's
//! pinhole is for A's mapped port), and the two never connect. (B's application itself
//! cannot see the moved port: the packet never gets past B's port-restricted filter.) With the input rule that
//! real home routers have (`drop_unsolicited`), B's early packet is dropped unconfirmed, A's
//! packet leaves with A's mapped port and gets through.
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise a loud `SKIPPED:` line, or a failure
//! when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tests::lab::probe::{self, Responder};
use tests::lab::{Lab, recv_text, require_lab, serial};
use tests::nat_types::{NatType, RouterOptions};

/// What one run of the race showed.
#[derive(Debug)]
struct RaceOutcome {
    /// A's mapping as the server saw it.
    a_mapped: SocketAddr,
    /// The external port A's router gave A's flow to B (from its conntrack table).
    a_port_towards_b: Option<u16>,
    /// The source port of A's packet as it reached B's router (its conntrack table), if it
    /// left an entry there.
    b_router_saw_a_port: Option<u16>,
    /// Where B saw A's packet come from, if it got through.
    b_saw_a_from: Option<SocketAddr>,
    /// Whether A then got B's answer.
    a_got_reply: bool,
}

/// The reply-direction destination port of the conntrack line for `from` -> `to` (the
/// external port the NAT gave the flow).
fn translated_port(lines: &[String], from: IpAddr, to: IpAddr, sport: u16) -> Option<u16> {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!(" src={from} dst={to} sport={sport} ")))?;
    let last = line.rsplit("dport=").next()?;
    last.split_whitespace().next()?.parse().ok()
}

/// The source port of the first conntrack line whose original tuple is `from` -> `to:dport`.
fn source_port(lines: &[String], from: IpAddr, to: IpAddr, dport: u16) -> Option<u16> {
    lines.iter().find_map(|l| {
        // The original tuple is the first `src=... dst=... sport=... dport=...` of the line.
        let first = &l[l.find(" src=")?..];
        let rest = first.strip_prefix(&format!(" src={from} dst={to} sport="))?;
        let (sport, rest) = rest.split_once(' ')?;
        rest.starts_with(&format!("dport={dport} "))
            .then(|| sport.parse().ok())
            .flatten()
    })
}

fn race(lab: &Lab) -> RaceOutcome {
    let (a, b) = (lab.client(0), lab.client(1));
    let ra = lab.router_of(0).unwrap();
    let sa = lab
        .udp_socket(a, SocketAddr::new(IpAddr::V4(a.ip()), 0))
        .unwrap();
    let sb = lab
        .udp_socket(b, SocketAddr::new(IpAddr::V4(b.ip()), 0))
        .unwrap();
    let responder = Responder::start(lab).unwrap();
    let server = probe::primary();
    let a_mapped = probe::probe(&sa, server, "probe", 1, server)
        .unwrap()
        .unwrap();
    let b_mapped = probe::probe(&sb, server, "probe", 2, server)
        .unwrap()
        .unwrap();
    drop(responder);
    // B's packet reaches A's router before A has sent anything to B.
    sb.send_to(b"early from b", a_mapped).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        sa.send_to(b"from a", b_mapped).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = sa.local_addr().unwrap().port();
    let a_port_towards_b = translated_port(
        &lab.conntrack_udp(ra).unwrap(),
        IpAddr::V4(a.ip()),
        b_mapped.ip(),
        port,
    );
    let rb = lab.router_of(1).unwrap();
    let b_router_saw_a_port = source_port(
        &lab.conntrack_udp(rb).unwrap(),
        a_mapped.ip(),
        b_mapped.ip(),
        b_mapped.port(),
    );
    let b_saw_a_from = recv_text(&sb, Duration::from_millis(500)).map(|(_, from)| from);
    let mut a_got_reply = false;
    if let Some(from) = b_saw_a_from {
        sb.send_to(b"reply from b", from).unwrap();
        a_got_reply = recv_text(&sa, Duration::from_millis(500)).is_some();
    }
    RaceOutcome {
        a_mapped,
        a_port_towards_b,
        b_router_saw_a_port,
        b_saw_a_from,
        a_got_reply,
    }
}

#[test]
fn an_early_packet_poisons_the_port_unless_the_router_drops_unsolicited_traffic() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let options = |drop_unsolicited| RouterOptions {
        drop_unsolicited,
        ..RouterOptions::new(NatType::PortRestrictedCone)
    };

    // Routers without the input rule: poisoned.
    let lab = Lab::two_peers(options(false), options(false)).unwrap();
    lab.flush_all().unwrap();
    let poisoned = race(&lab);
    eprintln!("without input drop: {poisoned:?}");
    assert_eq!(
        poisoned.a_mapped.ip(),
        IpAddr::V4(lab.router_of(0).unwrap().wan_ip)
    );
    let port = poisoned
        .a_port_towards_b
        .expect("A's router has a conntrack entry for A's flow to B");
    assert_ne!(
        port,
        poisoned.a_mapped.port(),
        "A's flow to B should have been moved off A's mapped port: {poisoned:?}"
    );
    assert_eq!(
        poisoned.b_router_saw_a_port,
        Some(port),
        "B's router sees A's packet arrive from the moved port: {poisoned:?}"
    );
    assert_eq!(
        poisoned.b_saw_a_from, None,
        "B's router should drop A's packet from the unexpected port: {poisoned:?}"
    );
    drop(lab);

    // The same race with the input rule home routers have: the port stays.
    let lab = Lab::two_peers(options(true), options(true)).unwrap();
    lab.flush_all().unwrap();
    let clean = race(&lab);
    eprintln!("with input drop:    {clean:?}");
    assert_eq!(clean.a_port_towards_b, Some(clean.a_mapped.port()));
    assert_eq!(
        clean.b_saw_a_from,
        Some(clean.a_mapped),
        "B sees A's packet from A's mapping"
    );
    assert!(clean.a_got_reply, "and A gets B's answer: {clean:?}");
}
