//! The template shortcut against the general path: same bytes, same decisions, same counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::super::*;
use super::*;

/// Filled into output buffers first, so a byte either path forgot to write shows up as a
/// difference (the general writer and the template both must write every byte they return).
const JUNK: u8 = 0xA5;

/// A valid configuration: IPv4 or IPv6, with or without the alternate address and SOFTWARE.
fn config_strategy() -> impl Strategy<Value = ServerConfig> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<bool>(),
        1u16..,
        1u16..,
        proptest::option::of("[ -~]{0,64}"),
    )
        .prop_filter_map(
            "distinct addresses and ports",
            |(v6, a, b, two, p1, p2, software)| {
                let ip = |o: [u8; 16]| -> IpAddr {
                    if v6 {
                        Ipv6Addr::from(o).into()
                    } else {
                        Ipv4Addr::new(o[0], o[1], o[2], o[3]).into()
                    }
                };
                let config = ServerConfig {
                    primary_ip: ip(a),
                    alternate_ip: two.then(|| ip(b)),
                    primary_port: p1,
                    alternate_port: p2,
                    software,
                    rate_limit: RateLimitConfig {
                        per_second: 0,
                        burst: 0,
                    },
                };
                config.validate().is_ok().then_some(config)
            },
        )
}

/// A sender: IPv4, IPv6, or IPv4 seen through a dual-stack socket (IPv4-mapped IPv6).
fn sender_strategy() -> impl Strategy<Value = SocketAddr> {
    (0u8..3, any::<[u8; 16]>(), any::<u16>()).prop_map(|(kind, o, port)| {
        let v4 = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
        let ip: IpAddr = match kind {
            0 => v4.into(),
            1 => Ipv6Addr::from(o).into(),
            _ => v4.to_ipv6_mapped().into(),
        };
        SocketAddr::new(ip, port)
    })
}

/// A bare Binding request with this header tail (cookie and id, or a classic id).
fn bare_request(id: [u8; 16]) -> [u8; HEADER_LEN] {
    let mut data = [0u8; HEADER_LEN];
    data[..4].copy_from_slice(&BARE_BINDING);
    data[4..].copy_from_slice(&id);
    data
}

/// What one call of either path produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    transmit: Option<Transmit>,
    bytes: Vec<u8>,
}

fn run(
    server: &mut StunServer,
    general: bool,
    now: Instant,
    received: Received<'_>,
    out_len: usize,
) -> Outcome {
    let mut out = vec![JUNK; out_len];
    let transmit = if general {
        server.handle_general(now, received, &mut out)
    } else {
        server.handle_datagram(now, received, &mut out)
    };
    let bytes = transmit.map_or(Vec::new(), |t| out[..t.size].to_vec());
    Outcome { transmit, bytes }
}

#[test]
fn every_addressed_socket_has_a_template_in_both_forms() {
    let longest = ServerConfig {
        primary_ip: "2001:db8::1".parse().unwrap(),
        alternate_ip: Some("2001:db8::2".parse().unwrap()),
        software: Some("x".repeat(MAX_SOFTWARE_LEN)),
        ..ServerConfig::default()
    };
    let single = ServerConfig {
        alternate_ip: None,
        ..longest.clone()
    };
    let modern = bare_request(TransactionId::Modern([7; 12]).header_tail());
    let classic = bare_request([9; 16]);
    for (config, addressed) in [(longest, 4), (single, 2)] {
        let templates = Templates::new(&config);
        for data in [modern, classic] {
            let found = ServerSocket::ALL
                .iter()
                .filter(|&&s| templates.bare_binding(s, &data).is_some())
                .count();
            assert_eq!(found, addressed, "{config:?}");
        }
    }
}

#[test]
fn only_a_bare_binding_request_takes_the_shortcut() {
    let templates = Templates::new(&ServerConfig::default());
    let id = TransactionId::Modern([3; 12]).header_tail();
    let bare = bare_request(id);
    assert!(
        templates
            .bare_binding(ServerSocket::PRIMARY, &bare)
            .is_some()
    );
    let mut longer = bare.to_vec();
    longer.extend_from_slice(&[0x80, 0x22, 0, 0]);
    longer[3] = 4;
    let mut indication = bare;
    indication[1] = 0x11;
    let mut other_method = bare;
    other_method[1] = 0x02;
    let mut announces_attributes = bare;
    announces_attributes[3] = 4;
    for data in [
        &longer[..],
        &indication[..],
        &other_method[..],
        &announces_attributes[..],
        &bare[..19],
    ] {
        assert!(
            templates
                .bare_binding(ServerSocket::PRIMARY, data)
                .is_none()
        );
    }
}

proptest! {
    /// For every socket and both header forms, the template writes exactly the bytes the
    /// general writer does, and the server's shortcut makes exactly the general path's
    /// decision (socket, destination, length, counters), including on sockets without an
    /// address and over TCP.
    #[test]
    fn template_bytes_equal_the_general_writer(
        config in config_strategy(),
        from in sender_strategy(),
        modern_id in any::<[u8; 12]>(),
        classic_id in any::<[u8; 16]>(),
        tcp in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut fast = StunServer::new(config.clone(), 5, now).unwrap();
        let mut general = StunServer::new(config.clone(), 5, now).unwrap();
        let templates = Templates::new(&config);
        let ids = [TransactionId::Modern(modern_id).header_tail(), classic_id];
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        for local in ServerSocket::ALL {
            for id in ids {
                let data = bare_request(id);
                let received = Received { local, transport, from, data: &data };
                let want = run(&mut general, true, now, received, 1024);
                let got = run(&mut fast, false, now, received, 1024);
                prop_assert_eq!(&got, &want);

                let Some((tail, echoed, classic)) = templates.bare_binding(local, &data) else {
                    prop_assert!(config.address_of(local).is_none());
                    continue;
                };
                let t = want.transmit.expect("a bare request on an addressed socket is answered");
                prop_assert_eq!(echoed, &id);
                prop_assert_eq!(classic, id[..4] != MAGIC_COOKIE.to_be_bytes());
                let mut out = [JUNK; 1024];
                let to = SocketAddr::new(from.ip().to_canonical(), from.port());
                prop_assert_eq!(tail.response_len(&to), t.size);
                prop_assert_eq!(tail.write(echoed, to, &mut out), Some(t.size));
                prop_assert_eq!(&out[..t.size], &want.bytes[..]);
                prop_assert_eq!(tail.write(echoed, to, &mut out[..t.size - 1]), None);
            }
        }
        prop_assert_eq!(fast.stats(), general.stats());
    }

    /// A stream of near-bare headers (other types, lengths, cookies, trailing bytes), from a few
    /// sources under a tight rate limit, into buffers of any size: the server with the shortcut
    /// answers and counts exactly as the general path does.
    #[test]
    fn shortcut_and_general_path_agree_on_any_stream(
        config in config_strategy(),
        requests in proptest::collection::vec(
            (
                // Weighted so that about a fifth of the requests are bare Binding requests.
                prop_oneof![
                    4 => Just(0x0001u16),
                    1 => Just(0x0011),
                    1 => Just(0x0101),
                    1 => Just(0x0002),
                    1 => any::<u16>(),
                ],
                prop_oneof![4 => Just(0u16), 1 => Just(4), 1 => Just(8), 1 => any::<u16>()],
                any::<bool>(),
                any::<[u8; 16]>(),
                prop_oneof![
                    3 => Just(Vec::new()),
                    1 => proptest::collection::vec(any::<u8>(), 1..12),
                ],
                0usize..4,
                0usize..3,
                prop_oneof![Just(1024usize), 0usize..200],
                0u64..40,
            ),
            1..60,
        ),
    ) {
        let config = ServerConfig {
            rate_limit: RateLimitConfig { per_second: 5, burst: 2 },
            ..config
        };
        let start = Instant::now();
        let mut fast = StunServer::new(config.clone(), 9, start).unwrap();
        let mut general = StunServer::new(config, 9, start).unwrap();
        let sources: [SocketAddr; 3] = [
            "198.51.100.7:40000".parse().unwrap(),
            "[2001:db8::7]:40000".parse().unwrap(),
            "[::ffff:198.51.100.7]:40001".parse().unwrap(),
        ];
        let mut now = start;
        for (typ, len, cookie, mut id, extra, socket, source, out_len, step_ms) in requests {
            if cookie {
                id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            let mut data = typ.to_be_bytes().to_vec();
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&id);
            data.extend_from_slice(&extra);
            now += Duration::from_millis(step_ms);
            let received = Received {
                local: ServerSocket::ALL[socket],
                transport: Transport::Udp,
                from: sources[source],
                data: &data,
            };
            let want = run(&mut general, true, now, received, out_len);
            let got = run(&mut fast, false, now, received, out_len);
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(fast.stats(), general.stats());
    }
}
