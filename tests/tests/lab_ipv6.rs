//! The dual-stack lab (IPv6 per site, see `tests::lab`'s address plan): IPv6 crosses a
//! router untranslated through a stateful firewall that drops unsolicited inbound, an IPv4-only
//! site has no IPv6 route at all, and nothing outside the plan is routed. Then STUN over IPv6
//! from our server's second (IPv6) instance.
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise each test prints a loud `SKIPPED:` line,
//! or fails when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use p2p_client::classify::{ClassifyOptions, classify};
use tests::lab::{Lab, LabServer, SERVER_IPS6, recv_text, require_lab, serial, udp_socket_in};
use tests::nat_types::{NatType, RouterOptions};

const PORT: u16 = 3478;
const ALT_PORT: u16 = 3479;

fn dual_stack(nat: NatType) -> RouterOptions {
    RouterOptions {
        ipv6: true,
        ..RouterOptions::new(nat)
    }
}

fn v6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip), port)
}

/// How long a datagram that should not arrive is waited for.
const SILENCE: Duration = Duration::from_millis(400);

#[test]
fn ipv6_crosses_the_router_untranslated_and_only_as_replies() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::two_peers(
        dual_stack(NatType::PortRestrictedCone),
        RouterOptions::new(NatType::Symmetric),
    )
    .unwrap();
    let (c0, c1) = (lab.client(0), lab.client(1));
    let ip6 = c0
        .ip6()
        .expect("a dual-stack site's host has a global IPv6 address");
    assert_eq!(ip6.segments()[..3], [0x2001, 0xdb8, 1], "{ip6}");
    assert!(c1.ips6.is_empty(), "an IPv4-only site has no IPv6");

    let srv = &lab.server().ns;
    let echo = udp_socket_in(srv, v6(SERVER_IPS6[0], 5000)).unwrap();
    let stranger = udp_socket_in(srv, v6(SERVER_IPS6[0], 5001)).unwrap();
    let other_ip = udp_socket_in(srv, v6(SERVER_IPS6[1], 5000)).unwrap();
    let client = udp_socket_in(&c0.ns, v6(ip6, 0)).unwrap();
    let local = client.local_addr().unwrap();

    // Out and back: the server sees the host's own address (no NAT66) and the reply gets in.
    client
        .send_to(b"hello", echo.local_addr().unwrap())
        .unwrap();
    let (text, from) = recv_text(&echo, Duration::from_secs(2)).expect("reached the server");
    assert_eq!((text.as_str(), from), ("hello", local));
    echo.send_to(b"reply", from).unwrap();
    let (text, _) = recv_text(&client, Duration::from_secs(2)).expect("the reply got in");
    assert_eq!(text, "reply");

    // Unsolicited: another port or another address of the same server is dropped, as is
    // anything to a port the host never sent from.
    stranger.send_to(b"other port", local).unwrap();
    other_ip.send_to(b"other ip", local).unwrap();
    assert_eq!(recv_text(&client, SILENCE), None, "the firewall let it in");
    let closed = udp_socket_in(&c0.ns, v6(ip6, 0)).unwrap();
    echo.send_to(b"cold", closed.local_addr().unwrap()).unwrap();
    assert_eq!(recv_text(&closed, SILENCE), None, "the firewall let it in");

    // An IPv4-only site cannot send IPv6 anywhere.
    let v4only = udp_socket_in(&c1.ns, "[::]:0".parse().unwrap()).unwrap();
    let err = v4only
        .send_to(b"x", echo.local_addr().unwrap())
        .expect_err("an IPv4-only host has no IPv6 route");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");

    // The core routes only the plan's prefixes: it has no IPv6 default route.
    let out = lab
        .command(lab.core_ns(), &["ip", "-6", "route", "show", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Our STUN server's IPv6 instance answers on all four sockets, and the classifier run over
/// IPv6 from behind a dual-stack router of each kind sees no translation and the firewall's
/// filtering (a public dual-stack host: nothing at all).
#[test]
fn classifier_over_ipv6_sees_no_nat_and_the_stateful_firewall() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    for nat in [NatType::None, NatType::FullCone, NatType::Symmetric] {
        let lab = Lab::one_client(dual_stack(nat)).unwrap();
        let _stun = LabServer::start_ours6(&lab, PORT, ALT_PORT).unwrap();
        let addrs = [
            v6(SERVER_IPS6[0], PORT),
            v6(SERVER_IPS6[0], ALT_PORT),
            v6(SERVER_IPS6[1], PORT),
            v6(SERVER_IPS6[1], ALT_PORT),
        ];
        lab.wait_for_stun(&addrs, Duration::from_secs(10)).unwrap();
        let report = tests::lab::in_namespace(&lab.client(0).ns, || {
            Ok(classify(addrs[0], ClassifyOptions::default()))
        })
        .unwrap()
        .unwrap();
        let ip6 = lab.client(0).ip6().unwrap();
        assert_eq!(
            report.mapped_address.map(|a| a.ip()),
            Some(IpAddr::V6(ip6)),
            "{}: {report:#?}",
            nat.name()
        );
        // Over IPv6 a router is a stateful firewall whatever its IPv4 type; a public host
        // has nothing in the way.
        let expected = if nat == NatType::None {
            NatType::None
        } else {
            NatType::SymmetricUdpFirewall
        }
        .expected_classification();
        assert_eq!(
            (report.nat_type, report.mapping, report.filtering),
            expected,
            "{}: {report:#?}",
            nat.name()
        );
        assert_eq!(
            report.server.other_address,
            Some(v6(SERVER_IPS6[1], ALT_PORT))
        );
    }
}
