//! Byte vectors built by hand from the RFC 6886 and RFC 6887 packet diagrams, and the
//! mapper's life in virtual time.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::wire::{self, NatPmpBody, NatPmpResponse, PcpMapRequest, PcpResponse, WireError};
use super::*;

const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn gw() -> SocketAddr {
    SocketAddr::from((GW, 5351))
}

#[test]
fn natpmp_map_request_matches_rfc6886_layout() {
    // Section 3.3: version 0, opcode 1 (UDP), reserved 0, internal port, suggested external
    // port, requested lifetime in seconds.
    let mut buf = [0xAAu8; 16];
    let n = wire::natpmp_map_request(&mut buf, 0x9C40, 0x9C41, 7200).unwrap();
    assert_eq!(
        &buf[..n],
        &[0, 1, 0, 0, 0x9C, 0x40, 0x9C, 0x41, 0, 0, 0x1C, 0x20]
    );
    let n = wire::natpmp_external_address_request(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[0, 0]);
    assert!(matches!(
        wire::natpmp_map_request(&mut [0u8; 11], 1, 1, 1),
        Err(WireError::Truncated { need: 12, .. })
    ));
}

#[test]
fn natpmp_responses_parse() {
    // Section 3.2: external address response, opcode 128, result 0, epoch, address.
    let addr = [0, 128, 0, 0, 0, 0, 0x01, 0x00, 198, 51, 100, 7];
    assert_eq!(
        NatPmpResponse::parse(&addr).unwrap(),
        NatPmpResponse {
            opcode: 0,
            result: 0,
            epoch: 256,
            body: NatPmpBody::ExternalAddress(EXT),
        }
    );
    // Section 3.3: UDP mapping response, opcode 129.
    let map = [
        0, 129, 0, 0, 0, 0, 0, 9, 0x9C, 0x40, 0xC3, 0x50, 0, 0, 0, 120,
    ];
    assert_eq!(
        NatPmpResponse::parse(&map).unwrap().body,
        NatPmpBody::Map {
            internal_port: 40000,
            external_port: 50000,
            lifetime: 120
        }
    );
    // Section 3.5: an error may be only the 8-byte header.
    let refused = [0, 129, 0, 2, 0, 0, 0, 9];
    let r = NatPmpResponse::parse(&refused).unwrap();
    assert_eq!((r.result, r.body), (2, NatPmpBody::None));
    assert_eq!(
        NatPmpResponse::parse(&[2, 129, 0, 0, 0, 0, 0, 0]),
        Err(WireError::Version(2))
    );
    assert_eq!(
        NatPmpResponse::parse(&[0, 1, 0, 0, 0, 0, 0, 0]),
        Err(WireError::NotResponse)
    );
    assert!(NatPmpResponse::parse(&map[..15]).is_err());
}

fn pcp_request_vector() -> Vec<u8> {
    // RFC 6887 section 7.1 header, then section 11.1's MAP body.
    let mut v = vec![2, 1, 0, 0, 0, 0, 0, 120];
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 168, 1, 20]);
    v.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    v.extend_from_slice(&[17, 0, 0, 0, 0x9C, 0x40, 0x9C, 0x40]);
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0]);
    v
}

#[test]
fn pcp_map_request_matches_rfc6887_layout() {
    let req = PcpMapRequest {
        lifetime: 120,
        client: ME,
        nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        internal_port: 40000,
        suggested_external: (Ipv4Addr::UNSPECIFIED, 40000),
    };
    let mut buf = [0xAAu8; 64];
    let n = req.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], pcp_request_vector().as_slice());
    assert!(req.encode(&mut [0u8; 59]).is_err());
}

fn pcp_response(result: u8, lifetime: u32, epoch: u32, nonce: [u8; 12], port: u16) -> Vec<u8> {
    let mut v = vec![2, 0x81, 0, result];
    v.extend_from_slice(&lifetime.to_be_bytes());
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&nonce);
    v.extend_from_slice(&[17, 0, 0, 0]);
    v.extend_from_slice(&40000u16.to_be_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&EXT.to_ipv6_mapped().octets());
    v
}

#[test]
fn pcp_response_parses_with_ipv4_mapped_address() {
    let data = pcp_response(0, 120, 77, [9; 12], 50000);
    let r = PcpResponse::parse(&data).unwrap();
    assert_eq!((r.opcode, r.result, r.lifetime, r.epoch), (1, 0, 120, 77));
    let map = r.map.unwrap();
    assert_eq!(map.external, SocketAddr::from((EXT, 50000)));
    assert_eq!(
        (map.nonce, map.protocol, map.internal_port),
        ([9; 12], 17, 40000)
    );
    // A NAT-PMP-only gateway answers a PCP request with version 0 (RFC 6887 section 9).
    assert_eq!(
        PcpResponse::parse(&[0, 129, 0, 1, 0, 0, 0, 5]),
        Err(WireError::Version(0))
    );
    assert!(PcpResponse::parse(&data[..23]).is_err());
}

proptest! {
    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = NatPmpResponse::parse(&data);
        let _ = PcpResponse::parse(&data);
    }

    #[test]
    fn pcp_request_fields_survive_a_round_trip(
        nonce in any::<[u8; 12]>(), port in any::<u16>(), lifetime in any::<u32>()
    ) {
        let req = PcpMapRequest {
            lifetime, client: ME, nonce, internal_port: port,
            suggested_external: (EXT, port),
        };
        let mut buf = [0u8; 60];
        req.encode(&mut buf).unwrap();
        // Turn the request into its response the way a server echoes it.
        buf[1] |= 0x80;
        let r = PcpResponse::parse(&buf).unwrap();
        let map = r.map.unwrap();
        prop_assert_eq!(map.nonce, nonce);
        prop_assert_eq!(map.internal_port, port);
        prop_assert_eq!(map.external, SocketAddr::from((EXT, port)));
        prop_assert_eq!(r.lifetime, lifetime);
    }
}

/// Sends everything due at `now`, returning the payloads.
fn sent(m: &mut PortMapper, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 128];
    while let Some(t) = m.poll_transmit(now, &mut buf) {
        assert_eq!(t.destination, gw());
        out.push(buf[..t.size].to_vec());
    }
    out
}

fn events(m: &mut PortMapper) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn natpmp_map_reply(epoch: u32, port: u16, lifetime: u32) -> Vec<u8> {
    let mut v = vec![0, 129, 0, 0];
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&40000u16.to_be_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&lifetime.to_be_bytes());
    v
}

#[test]
fn natpmp_maps_renews_at_half_lifetime_and_deletes() {
    let t0 = Instant::now();
    let config = MapperConfig::new(Protocol::NatPmp, GW, ME, 40000);
    let mut m = PortMapper::new(config, 1, t0);
    assert_eq!(sent(&mut m, t0), vec![vec![0, 0]]);
    // A reply from another port is not the gateway's.
    let addr = [0, 128, 0, 0, 0, 0, 0, 10, 198, 51, 100, 7];
    assert!(!m.handle_datagram(t0, SocketAddr::from((GW, 5350)), &addr));
    assert!(m.handle_datagram(t0, gw(), &addr));
    let map = sent(&mut m, t0);
    assert_eq!(
        map,
        vec![vec![0, 1, 0, 0, 0x9C, 0x40, 0x9C, 0x40, 0, 0, 0, 120]]
    );
    // A reply for another internal port is ignored.
    let mut other = natpmp_map_reply(10, 50000, 60);
    other[8] = 0x11;
    assert!(!m.handle_datagram(t0, gw(), &other));
    assert!(m.handle_datagram(t0, gw(), &natpmp_map_reply(10, 50000, 60)));
    let mapping = Mapping {
        protocol: Protocol::NatPmp,
        external: SocketAddr::from((EXT, 50000)),
        lifetime: Duration::from_secs(60),
        expires: t0 + Duration::from_secs(60),
    };
    assert_eq!(events(&mut m), vec![Event::Mapped(mapping)]);
    // Renewal is due at half the granted lifetime and asks for the port held.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    let t1 = t0 + Duration::from_secs(30);
    m.handle_timeout(t1);
    assert_eq!(
        sent(&mut m, t1),
        vec![vec![0, 1, 0, 0, 0x9C, 0x40, 0xC3, 0x50, 0, 0, 0, 120]]
    );
    assert!(m.handle_datagram(t1, gw(), &natpmp_map_reply(40, 50000, 60)));
    assert!(matches!(events(&mut m)[..], [Event::Renewed(_)]));
    // Deletion: lifetime 0 and suggested port 0 (RFC 6886 section 3.4).
    m.delete(t1);
    assert_eq!(
        sent(&mut m, t1),
        vec![vec![0, 1, 0, 0, 0x9C, 0x40, 0, 0, 0, 0, 0, 0]]
    );
    assert!(m.handle_datagram(t1, gw(), &natpmp_map_reply(40, 0, 0)));
    assert_eq!(events(&mut m), vec![Event::Deleted]);
    assert!(m.is_done() && m.mapping().is_none() && m.poll_timeout().is_none());
}

#[test]
fn natpmp_retransmits_on_rfc_schedule_and_gives_up_bounded() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(MapperConfig::new(Protocol::NatPmp, GW, ME, 40000), 1, t0);
    let mut now = t0;
    let mut send_times = Vec::new();
    for _ in 0..20 {
        if !sent(&mut m, now).is_empty() {
            send_times.push(now - t0);
        }
        let Some(next) = m.poll_timeout() else { break };
        now = next;
        m.handle_timeout(now);
    }
    // RFC 6886 section 3.1: 250 ms, doubling; bounded at 4 sends.
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(send_times, vec![ms(0), ms(250), ms(750), ms(1750)]);
    assert_eq!(now - t0, ms(3750));
    assert_eq!(
        events(&mut m),
        vec![Event::Failed(MapError::NoAnswer { sends: 4 })]
    );
    assert!(m.is_done());
}

#[test]
fn pcp_maps_with_seeded_nonce_and_checks_it() {
    let t0 = Instant::now();
    let config = MapperConfig::new(Protocol::Pcp, GW, ME, 40000);
    let mut m = PortMapper::new(config, 42, t0);
    let req = sent(&mut m, t0).remove(0);
    assert_eq!(req.len(), 60);
    assert_eq!(&req[8..24], &ME.to_ipv6_mapped().octets());
    let nonce: [u8; 12] = req[24..36].try_into().unwrap();
    // The same seed gives the same nonce; another seed another.
    let again = sent(&mut PortMapper::new(config, 42, t0), t0).remove(0);
    let other = sent(&mut PortMapper::new(config, 43, t0), t0).remove(0);
    assert_eq!(&again[24..36], &nonce);
    assert_ne!(&other[24..36], &nonce);
    assert!(!m.handle_datagram(t0, gw(), &pcp_response(0, 120, 5, [0; 12], 50000)));
    assert!(m.handle_datagram(t0, gw(), &pcp_response(0, 120, 5, nonce, 50000)));
    let ev = events(&mut m);
    assert!(
        matches!(ev[..], [Event::Mapped(Mapping { external, .. })] if external == SocketAddr::from((EXT, 50000)))
    );
    // Deletion repeats the nonce with lifetime 0.
    m.delete(t0);
    let del = sent(&mut m, t0).remove(0);
    assert_eq!(&del[4..8], &[0, 0, 0, 0]);
    assert_eq!(&del[24..36], &nonce);
    assert!(m.handle_datagram(t0, gw(), &pcp_response(0, 0, 5, nonce, 50000)));
    assert_eq!(events(&mut m), vec![Event::Deleted]);
}

#[test]
fn pcp_refusal_and_natpmp_only_gateway_fail() {
    let t0 = Instant::now();
    let config = MapperConfig::new(Protocol::Pcp, GW, ME, 40000);
    let mut m = PortMapper::new(config, 1, t0);
    let nonce: [u8; 12] = sent(&mut m, t0)[0][24..36].try_into().unwrap();
    assert!(m.handle_datagram(t0, gw(), &pcp_response(2, 30, 5, nonce, 0)));
    assert_eq!(
        events(&mut m),
        vec![Event::Failed(MapError::Refused {
            code: 2,
            text: "NOT_AUTHORIZED"
        })]
    );
    let mut m = PortMapper::new(config, 1, t0);
    sent(&mut m, t0);
    assert!(m.handle_datagram(t0, gw(), &[0, 129, 0, 1, 0, 0, 0, 5]));
    assert_eq!(
        events(&mut m),
        vec![Event::Failed(MapError::UnsupportedVersion(0))]
    );
}

#[test]
fn pcp_retransmits_with_jitter_within_ten_percent() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(MapperConfig::new(Protocol::Pcp, GW, ME, 40000), 9, t0);
    sent(&mut m, t0);
    let first = m.poll_timeout().unwrap() - t0;
    assert!(first >= Duration::from_millis(2700) && first <= Duration::from_millis(3300));
    m.handle_timeout(t0 + first);
    assert_eq!(sent(&mut m, t0 + first).len(), 1);
    let second = m.poll_timeout().unwrap() - (t0 + first);
    assert!(second >= Duration::from_millis(5400) && second <= Duration::from_millis(6600));
    m.handle_timeout(t0 + first + second);
    assert_eq!(
        events(&mut m),
        vec![Event::Failed(MapError::NoAnswer { sends: 2 })]
    );
}

#[test]
fn gateway_restart_is_noticed_from_the_epoch() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(MapperConfig::new(Protocol::NatPmp, GW, ME, 40000), 1, t0);
    sent(&mut m, t0);
    m.handle_datagram(t0, gw(), &[0, 128, 0, 0, 0, 0, 3, 232, 198, 51, 100, 7]);
    sent(&mut m, t0);
    m.handle_datagram(t0, gw(), &natpmp_map_reply(1000, 50000, 60));
    events(&mut m);
    let t1 = t0 + Duration::from_secs(30);
    m.handle_timeout(t1);
    sent(&mut m, t1);
    // 30 s later the gateway says its epoch is 3 s: it restarted and lost the mapping; the
    // renewal has made it again.
    m.handle_datagram(t1, gw(), &natpmp_map_reply(3, 50001, 60));
    let ev = events(&mut m);
    assert_eq!(ev[0], Event::GatewayRestarted);
    assert!(matches!(ev[1], Event::Renewed(Mapping { external, .. }) if external.port() == 50001));
}

#[test]
fn failed_renewals_retry_then_expire_and_lost_deletion_is_reported() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(MapperConfig::new(Protocol::NatPmp, GW, ME, 40000), 1, t0);
    sent(&mut m, t0);
    m.handle_datagram(t0, gw(), &[0, 128, 0, 0, 0, 0, 0, 1, 198, 51, 100, 7]);
    sent(&mut m, t0);
    m.handle_datagram(t0, gw(), &natpmp_map_reply(1, 50000, 60));
    events(&mut m);
    let mut now = t0;
    for _ in 0..200 {
        let Some(next) = m.poll_timeout() else { break };
        now = next;
        m.handle_timeout(now);
        sent(&mut m, now);
    }
    assert_eq!(events(&mut m), vec![Event::Expired]);
    assert_eq!(now - t0, Duration::from_secs(60));
    // A deletion nobody answers ends as DeleteFailed, bounded.
    let mut m = PortMapper::new(MapperConfig::new(Protocol::Pcp, GW, ME, 40000), 1, t0);
    sent(&mut m, t0);
    m.delete(t0);
    let mut now = t0;
    for _ in 0..20 {
        sent(&mut m, now);
        let Some(next) = m.poll_timeout() else { break };
        now = next;
        m.handle_timeout(now);
    }
    assert_eq!(events(&mut m), vec![Event::DeleteFailed]);
    // Nothing asked yet: nothing to delete.
    let mut m = PortMapper::new(MapperConfig::new(Protocol::Pcp, GW, ME, 40000), 1, t0);
    m.delete(t0);
    assert_eq!(events(&mut m), vec![Event::Deleted]);
    assert!(sent(&mut m, t0).is_empty());
}
