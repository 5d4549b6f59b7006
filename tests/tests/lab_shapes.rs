//! The lab's plumbing and shapes on real kernel NATs: sockets opened inside namespaces,
//! cleanup, a real routing hop (TTL), same-NAT, double NAT, hairpinning, mapping timeout and
//! random loss.
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise a loud `SKIPPED:` line, or a failure
//! when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::lab::probe::{self, Responder};
use tests::lab::{
    Host, Lab, SERVER_IPS, lab_namespaces, recv_text, require_lab, serial, udp_socket_in,
};
use tests::nat_types::{NatType, RouterOptions};

fn socket(lab: &Lab, host: &Host, port: u16) -> UdpSocket {
    lab.udp_socket(host, SocketAddr::new(IpAddr::V4(host.ip()), port))
        .unwrap()
}

/// `host`'s mapping as the probe responder sees it.
fn mapped(socket: &UdpSocket, id: u32) -> SocketAddr {
    let server = probe::primary();
    probe::probe(socket, server, "probe", id, server)
        .unwrap()
        .expect("the responder answers")
}

#[test]
fn sockets_open_inside_namespaces_and_labs_clean_up_after_themselves() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    // A stale namespace of a dead process is removed by the next lab.
    let stale = "p2pl999999999-0-stale";
    let status = Command::new("ip")
        .args(["netns", "add", stale])
        .status()
        .unwrap();
    assert!(status.success());
    let lab = Lab::one_client(RouterOptions::new(NatType::PortRestrictedCone)).unwrap();
    assert!(!lab_namespaces().contains(&stale.to_owned()));

    let client = lab.client(0);
    assert!(udp_socket_in("p2pl-no-such-namespace", "0.0.0.0:0".parse().unwrap()).is_err());
    let s = socket(&lab, client, 0);
    assert_eq!(s.local_addr().unwrap().ip(), IpAddr::V4(client.ip()));
    // The socket is in the client's namespace: its traffic crosses the NAT.
    let _responder = Responder::start(&lab).unwrap();
    let seen = mapped(&s, 1);
    assert_eq!(seen.ip(), IpAddr::V4(lab.router_of(0).unwrap().wan_ip));
    // `exec` runs inside the namespace too.
    let out = lab.exec(client, &["ip", "-4", "-o", "addr"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&client.ip().to_string()));

    let names = lab.namespaces().to_vec();
    assert!(names.iter().all(|n| n.starts_with("p2pl")), "{names:?}");
    drop(_responder);
    drop(lab);
    let left = lab_namespaces();
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "left behind: {left:?}"
    );
}

#[test]
fn the_core_is_a_routing_hop() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::one_client(RouterOptions::new(NatType::PortRestrictedCone)).unwrap();
    let server = socket(&lab, lab.server(), 5000);
    let client = socket(&lab, lab.client(0), 0);
    let to = SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), 5000);
    // Client -> NAT router (TTL - 1) -> core (TTL - 1) -> server.
    client.set_ttl(2).unwrap();
    client.send_to(b"ttl 2", to).unwrap();
    assert_eq!(
        recv_text(&server, Duration::from_millis(300)),
        None,
        "TTL 2 dies at the core"
    );
    client.set_ttl(3).unwrap();
    client.send_to(b"ttl 3", to).unwrap();
    let (text, _) = recv_text(&server, Duration::from_secs(2)).expect("TTL 3 arrives");
    assert_eq!(text, "ttl 3");
}

#[test]
fn two_hosts_behind_one_full_cone_nat_on_the_same_port_keep_separate_mappings() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::same_nat(RouterOptions::new(NatType::FullCone)).unwrap();
    let wan = IpAddr::V4(lab.router_of(0).unwrap().wan_ip);
    assert_eq!(
        lab.router_of(1).unwrap().wan_ip,
        lab.router_of(0).unwrap().wan_ip
    );
    let (a, b) = (
        socket(&lab, lab.client(0), 40000),
        socket(&lab, lab.client(1), 40000),
    );
    let responder = Responder::start(&lab).unwrap();
    let (ma, mb) = (mapped(&a, 1), mapped(&b, 2));
    drop(responder);
    assert_eq!((ma.ip(), mb.ip()), (wan, wan));
    assert_ne!(ma.port(), mb.port(), "one outside port per inside host");
    // Full cone: anyone (here a port the hosts never talked to) reaches each mapping, and
    // each mapping leads to its own host.
    let other = socket(&lab, lab.server(), 5001);
    other.send_to(b"for a", ma).unwrap();
    other.send_to(b"for b", mb).unwrap();
    let (text, from) = recv_text(&a, Duration::from_secs(2)).unwrap();
    assert_eq!(text, "for a");
    assert_eq!(recv_text(&b, Duration::from_secs(2)).unwrap().0, "for b");
    // A answers that inbound-initiated flow; the answer must not re-point A's mapping at the
    // remote (the learning rule only takes packets of the original direction).
    a.send_to(b"answer", from).unwrap();
    assert_eq!(
        recv_text(&other, Duration::from_secs(2)).unwrap().0,
        "answer"
    );
    let third = lab
        .udp_socket(
            lab.server(),
            SocketAddr::new(IpAddr::V4(SERVER_IPS[1]), 5002),
        )
        .unwrap();
    third.send_to(b"third", ma).unwrap();
    assert_eq!(recv_text(&a, Duration::from_secs(2)).unwrap().0, "third");
}

#[test]
fn double_nat_maps_to_the_carrier_address() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::double_nat(
        RouterOptions::new(NatType::FullCone),
        RouterOptions::new(NatType::PortRestrictedCone),
    )
    .unwrap();
    let (carrier, home) = (&lab.routers()[0], &lab.routers()[1]);
    assert_eq!(carrier.lan_net, (Ipv4Addr::new(100, 64, 0, 0), 24));
    assert_eq!(home.wan_ip, Ipv4Addr::new(100, 64, 0, 2));
    let s = socket(&lab, lab.client(0), 0);
    let _responder = Responder::start(&lab).unwrap();
    let seen = mapped(&s, 1);
    assert_eq!(seen.ip(), IpAddr::V4(carrier.wan_ip));
    // The carrier (port-restricted) filters what the home NAT (full cone) would let in.
    let other = socket(&lab, lab.server(), 5001);
    other.send_to(b"unsolicited", seen).unwrap();
    assert_eq!(recv_text(&s, Duration::from_millis(300)), None);
}

/// Whether client 0 reaches client 1 through client 1's mapping, and from where client 1
/// sees it.
fn hairpin_run(hairpin: bool) -> (SocketAddr, Option<SocketAddr>) {
    let lab = Lab::same_nat(RouterOptions {
        hairpin,
        ..RouterOptions::new(NatType::PortRestrictedCone)
    })
    .unwrap();
    let (a, b) = (
        socket(&lab, lab.client(0), 0),
        socket(&lab, lab.client(1), 0),
    );
    let responder = Responder::start(&lab).unwrap();
    let (ma, mb) = (mapped(&a, 1), mapped(&b, 2));
    drop(responder);
    for _ in 0..3 {
        a.send_to(b"hairpin", mb).unwrap();
    }
    (
        ma,
        recv_text(&b, Duration::from_millis(500)).map(|(_, from)| from),
    )
}

#[test]
fn hairpinning_follows_the_option() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let (ma, seen) = hairpin_run(true);
    assert_eq!(
        seen,
        Some(ma),
        "with hairpin, B sees A's packet from A's mapping"
    );
    let (_, seen) = hairpin_run(false);
    assert_eq!(seen, None, "without hairpin, nothing arrives");
}

/// The timeline of [`traffic_in_either_direction_refreshes_a_mapping_until_it_idles_out`],
/// in seconds from the client's first packet, with a 2 s timeout.
const REFRESH_AT: f64 = 1.3;
const THIRD_PARTY_AT: f64 = 2.6;
const AFTER_IDLE_AT: f64 = 5.3;

/// The same timeline in the simulator: whether the third party got in at
/// [`THIRD_PARTY_AT`] and at [`AFTER_IDLE_AT`].
fn simulated_refresh(options: RouterOptions) -> (bool, bool) {
    use tests::sim::{Datagram, LinkConditions, Network};
    fn deliver(net: &mut Network, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
        net.send(Datagram::new(src, dst, b"x".to_vec()));
        while net.next_event().is_some() {
            if let Some(d) = net.step() {
                return Some(d.datagram.src);
            }
        }
        None
    }
    let start = Instant::now();
    let mut net = Network::new(1, start, LinkConditions::default());
    let inet = net.internet();
    net.add_host(inet, &SERVER_IPS.map(IpAddr::V4));
    let (_, inside) = net.add_nat(inet, "203.0.113.1".parse().unwrap(), options);
    let (_, client) = net.add_inside_host(inside);
    let server = SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), 4478);
    let third = SocketAddr::new(IpAddr::V4(SERVER_IPS[1]), 5002);
    let m = deliver(&mut net, SocketAddr::new(client, 5000), server).unwrap();
    net.advance_to(start + Duration::from_secs_f64(REFRESH_AT));
    assert!(deliver(&mut net, server, m).is_some());
    net.advance_to(start + Duration::from_secs_f64(THIRD_PARTY_AT));
    let early = deliver(&mut net, third, m).is_some();
    net.advance_to(start + Duration::from_secs_f64(AFTER_IDLE_AT));
    (early, deliver(&mut net, third, m).is_some())
}

/// The timeline in the lab: like [`simulated_refresh`], or `None` if a step ran more than
/// 0.3 s late (a badly overloaded machine), which would void the check.
fn lab_refresh(options: RouterOptions) -> Option<(bool, bool)> {
    let lab = Lab::one_client(options).unwrap();
    let client = socket(&lab, lab.client(0), 0);
    let server = socket(&lab, lab.server(), 4478);
    let third = lab
        .udp_socket(
            lab.server(),
            SocketAddr::new(IpAddr::V4(SERVER_IPS[1]), 5002),
        )
        .unwrap();
    let start = Instant::now();
    let mut on_time = true;
    let mut at = |secs: f64| {
        let t = start + Duration::from_secs_f64(secs);
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        on_time &= t.elapsed() < Duration::from_millis(300);
    };
    client
        .send_to(b"out", server.local_addr().unwrap())
        .unwrap();
    let (_, m) = recv_text(&server, Duration::from_secs(1)).unwrap();
    at(0.0);
    // Only inbound traffic from here on: the server answers on the client's flow ...
    at(REFRESH_AT);
    server.send_to(b"refresh", m).unwrap();
    assert_eq!(
        recv_text(&client, Duration::from_millis(300)).unwrap().0,
        "refresh"
    );
    // ... which keeps the mapping alive past the 2 s timeout for anyone (full cone) ...
    at(THIRD_PARTY_AT);
    third.send_to(b"third", m).unwrap();
    let early = recv_text(&client, Duration::from_millis(300)).is_some();
    // ... until it idles out for 2.7 s.
    at(AFTER_IDLE_AT);
    third.send_to(b"third again", m).unwrap();
    let late = recv_text(&client, Duration::from_millis(300)).is_some();
    on_time.then_some((early, late))
}

#[test]
fn traffic_in_either_direction_refreshes_a_mapping_until_it_idles_out() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let options = RouterOptions {
        udp_timeout: Duration::from_secs(2),
        ..RouterOptions::new(NatType::FullCone)
    };
    let seen = (0..3)
        .find_map(|_| lab_refresh(options))
        .expect("the timeline ran late three times: machine too loaded for this check");
    assert_eq!(
        seen,
        (true, false),
        "lab: third party in at 2.6 s, not at 5.3 s"
    );
    assert_eq!(simulated_refresh(options), seen, "simulator agrees");
}

#[test]
fn random_loss_drops_about_the_configured_share_each_way() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::one_client(RouterOptions {
        loss_percent: 30,
        ..RouterOptions::new(NatType::FullCone)
    })
    .unwrap();
    let client = socket(&lab, lab.client(0), 0);
    let _responder = Responder::start(&lab).unwrap();
    let n = 300u32;
    for id in 0..n {
        client
            .send_to(format!("probe {id}").as_bytes(), probe::primary())
            .unwrap();
        if id % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut answered = BTreeSet::new();
    while let Some((text, _)) = recv_text(&client, Duration::from_millis(500)) {
        if let Some(id) = text.split_whitespace().next() {
            answered.insert(id.to_owned());
        }
    }
    let share = answered.len() as f64 / f64::from(n);
    eprintln!("round trips through 30 % loss each way: {share:.2} (expect 0.49)");
    assert!((0.35..=0.63).contains(&share), "round-trip share {share}");
}

#[test]
fn exec_timeout_reads_chatty_commands_and_kills_hung_ones() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::one_client(RouterOptions::new(NatType::None)).unwrap();
    let client = lab.client(0);
    // More than a pipe buffer of output: read while the command runs.
    let out = lab
        .exec_timeout(
            client,
            &["head", "-c", "300000", "/dev/zero"],
            Duration::from_secs(10),
        )
        .unwrap()
        .expect("finishes");
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 300_000);
    let start = Instant::now();
    let out = lab
        .exec_timeout(client, &["sleep", "30"], Duration::from_millis(300))
        .unwrap();
    assert!(out.is_none(), "killed");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
