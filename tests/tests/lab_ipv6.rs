//! The dual-stack lab (IPv6 per site, see `tests::lab`'s address plan): IPv6 crosses a
//! router untranslated through a stateful firewall that drops unsolicited inbound, an IPv4-only
//! site has no IPv6 route at all, and nothing outside the plan is routed. Then `p2p-client
//! nat-type` against our server's IPv4 and IPv6 instances: the IPv6 section behind every kind of
//! router, and on an IPv4-only site.
//!
//! Needs root, `ip`, `nft` and `conntrack`; otherwise each test prints a loud `SKIPPED:` line,
//! or fails when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::nat_classifier::Behaviour;
use tests::lab::nat_type::nat_type_json;
use tests::lab::{
    Lab, LabServer, SERVER_IPS, SERVER_IPS6, recv_text, require_lab, serial, server_addrs,
    udp_socket_in,
};
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

/// `p2p-client nat-type --json` in client 0's namespace against our server's IPv4 and IPv6
/// instances (`--server6`); exit status 2 is the IPv4 `udp-blocked` verdict.
fn nat_type(lab: &Lab) -> Value {
    let server = format!("{}:{PORT}", SERVER_IPS[0]);
    let server6 = format!("[{}]:{PORT}", SERVER_IPS6[0]);
    let args = [
        "--server",
        &server,
        "--server6",
        &server6,
        "--no-port-mapping",
    ];
    nat_type_json(lab, &args, &[0, 2])
}

/// Our server's IPv4 and IPv6 instances on the lab's server host, answering on all eight
/// sockets.
fn start_servers(lab: &Lab) -> [LabServer; 2] {
    let v4 = LabServer::start_ours(lab, true, PORT, ALT_PORT).unwrap();
    let v6s = LabServer::start_ours6(lab, PORT, ALT_PORT).unwrap();
    let mut addrs: Vec<SocketAddr> = server_addrs(PORT, ALT_PORT).to_vec();
    for ip in SERVER_IPS6 {
        addrs.extend([v6(ip, PORT), v6(ip, ALT_PORT)]);
    }
    lab.wait_for_stun(&addrs, Duration::from_secs(10)).unwrap();
    [v4, v6s]
}

fn behaviour(b: Option<Behaviour>) -> Value {
    b.map_or(Value::Null, |b| Value::from(b.as_str()))
}

/// `nat-type` on a dual-stack site behind every kind of router: the IPv6 section says
/// reachable, not translated, filtering address-and-port dependent (the router's stateful
/// firewall, whatever its IPv4 type), and the IPv4 part is the type's usual classification. A
/// public host has open IPv6 (no router); a `udp-blocked` router blocks IPv6 UDP as well.
#[test]
fn nat_type_reports_ipv6_behind_every_router_and_ipv4_unchanged() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let mut failures = Vec::new();
    for nat in NatType::ALL {
        let started = Instant::now();
        let lab = Lab::one_client(dual_stack(nat)).unwrap();
        let _servers = start_servers(&lab);
        let json = nat_type(&lab);
        let ip6 = lab.client(0).ip6().unwrap();
        let (verdict, mapping, filtering) = nat.expected_classification();
        let v4 = [
            json["nat_type"].clone(),
            json["mapping"].clone(),
            json["filtering"].clone(),
        ];
        let v4_expected = [
            Value::from(verdict.as_str()),
            behaviour(mapping),
            behaviour(filtering),
        ];
        let ipv6 = &json["ipv6"];
        let seen6 = (
            ipv6["status"].clone(),
            ipv6["translated"].clone(),
            ipv6["filtering"].clone(),
        );
        let expected6 = match nat {
            NatType::None => (
                Value::from("reachable"),
                Value::from(false),
                Value::Null, // open internet: no filtering to speak of
            ),
            NatType::UdpBlocked => (Value::from("unreachable"), Value::Null, Value::Null),
            _ => (
                Value::from("reachable"),
                Value::from(false),
                Value::from("address-and-port-dependent"),
            ),
        };
        let mapped_ok = nat == NatType::UdpBlocked
            || ipv6["mapped_address"]
                .as_str()
                .is_some_and(|a| a.parse::<SocketAddr>().unwrap().ip() == IpAddr::V6(ip6));
        eprintln!(
            "{:<24} v4 {} v6 {} {} {} ({} ms)",
            nat.name(),
            v4[0],
            seen6.0,
            seen6.1,
            seen6.2,
            started.elapsed().as_millis()
        );
        if v4 != v4_expected || seen6 != expected6 || !mapped_ok {
            failures.push(format!("{}: {json:#}", nat.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// On an IPv4-only site the IPv6 section says there is no IPv6 address, and the IPv4 part is
/// unaffected.
#[test]
fn nat_type_on_an_ipv4_only_site_says_no_ipv6_address() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let nat = NatType::PortRestrictedCone;
    let lab = Lab::one_client(RouterOptions::new(nat)).unwrap();
    let _servers = start_servers(&lab);
    let json = nat_type(&lab);
    assert_eq!(json["nat_type"], nat.expected_classification().0.as_str());
    assert_eq!(json["ipv6"]["status"], "no-address", "{json:#}");
    assert_eq!(json["ipv6"]["reachable"], Value::Null);
    assert!(
        json["ipv6"]["meaning"]
            .as_str()
            .unwrap()
            .contains("no global IPv6 address"),
        "{json:#}"
    );
}
