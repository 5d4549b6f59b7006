//! The decision rules on hand-made observations.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::stun_client::BindingResponse;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn answered(from: &str, mapped: &str) -> ProbeResult {
    ProbeResult::Answered(BindingResponse {
        from: addr(from),
        mapped: Some(addr(mapped)),
        origin: Some(addr(from)),
        other: Some(addr("192.0.2.2:3479")),
        rtt: Duration::from_millis(1),
        sends: 1,
    })
}

fn open_host() -> Observations {
    let local = "198.51.100.9:4000";
    Observations {
        server: addr("192.0.2.1:3478"),
        main_local: addr(local),
        control_local: addr("198.51.100.9:4004"),
        allocation_local: addr("198.51.100.9:4005"),
        first: answered("192.0.2.1:3478", local),
        other_ip: answered("192.0.2.2:3478", local),
        other_both: answered("192.0.2.2:3479", local),
        eif: answered("192.0.2.2:3479", "198.51.100.9:4001"),
        adf: answered("192.0.2.1:3479", "198.51.100.9:4002"),
        control_open: answered("192.0.2.2:3479", "198.51.100.9:4004"),
        control_change: answered("192.0.2.2:3479", "198.51.100.9:4004"),
        allocation: answered("192.0.2.1:3478", "198.51.100.9:4005"),
        hairpin: None,
    }
}

#[test]
fn open_host_has_no_filter_to_describe() {
    let r = decide(&open_host(), Duration::ZERO);
    assert_eq!(r.nat_type, NatType::OpenInternet);
    assert_eq!(r.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(
        r.filtering, None,
        "no NAT is not 'endpoint-independent filtering'"
    );
    assert_eq!((r.hairpinning, r.port_allocation), (None, None));
    assert_eq!(r.server.change_request, Some(true));
}

#[test]
fn firewall_and_blocked() {
    let mut obs = open_host();
    obs.eif = ProbeResult::Silent;
    obs.adf = ProbeResult::Silent;
    let r = decide(&obs, Duration::ZERO);
    assert_eq!(r.nat_type, NatType::SymmetricUdpFirewall);
    assert_eq!(r.filtering, Some(Behaviour::AddressAndPortDependent));
    obs.first = ProbeResult::Silent;
    assert_eq!(decide(&obs, Duration::ZERO).nat_type, NatType::UdpBlocked);
}

#[test]
fn a_reply_from_the_unchanged_address_is_never_believed() {
    let mut obs = open_host();
    obs.eif = ProbeResult::WrongSource(addr("192.0.2.1:3478"));
    let r = decide(&obs, Duration::ZERO);
    assert_eq!(r.nat_type, NatType::UnsupportedServer);
    assert!(r.mapping.is_none() && r.filtering.is_none());
    assert_eq!(r.server.change_request, Some(false));
}

#[test]
fn error_to_change_request_and_missing_other_address_are_unsupported() {
    let mut obs = open_host();
    obs.adf = ProbeResult::Error(420);
    assert_eq!(
        decide(&obs, Duration::ZERO).nat_type,
        NatType::UnsupportedServer
    );
    let mut obs = open_host();
    if let ProbeResult::Answered(r) = &mut obs.first {
        r.other = None;
    }
    let r = decide(&obs, Duration::ZERO);
    assert_eq!(r.nat_type, NatType::UnsupportedServer);
    assert!(
        r.unsupported_reason
            .unwrap()
            .contains("no alternate address")
    );
}
