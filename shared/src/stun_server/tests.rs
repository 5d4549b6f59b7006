//! Rule-by-rule tests of the server core, in virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::stun::{
    Attribute, ChangeRequest, Class, Message, MessageWriter, Method, TransactionId, attr,
};

const CLIENT: &str = "198.51.100.7:40000";

fn client() -> SocketAddr {
    CLIENT.parse().unwrap()
}

fn modern_tid() -> TransactionId {
    TransactionId::Modern(*b"0123456789ab")
}

fn classic_tid() -> TransactionId {
    TransactionId::Classic(*b"0123456789abcdef")
}

fn server_with(config: ServerConfig) -> StunServer {
    StunServer::new(config, 42, Instant::now()).unwrap()
}

fn server() -> StunServer {
    server_with(ServerConfig {
        primary_ip: "192.0.2.1".parse().unwrap(),
        alternate_ip: Some("192.0.2.2".parse().unwrap()),
        ..ServerConfig::default()
    })
}

/// A Binding request built by `build`, which adds attributes.
fn request(tid: TransactionId, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, tid).unwrap();
    build(&mut w);
    let len = w.finish();
    buf.truncate(len);
    buf
}

struct Reply {
    transmit: Transmit,
    bytes: Vec<u8>,
}

impl Reply {
    fn message(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("server wrote a valid message")
    }

    fn attr(&self, typ: u16) -> Option<Attribute<'_>> {
        self.message()
            .get(typ)
            .map(|a| a.parse().expect("valid attribute"))
    }

    fn types(&self) -> Vec<u16> {
        self.message().attributes().map(|a| a.typ).collect()
    }
}

fn send(
    server: &mut StunServer,
    local: ServerSocket,
    transport: Transport,
    data: &[u8],
) -> Option<Reply> {
    let mut out = vec![0u8; data.len() + MAX_RESPONSE_OVERHEAD];
    let received = Received {
        local,
        transport,
        from: client(),
        data,
    };
    let transmit = server.handle_datagram(Instant::now(), received, &mut out)?;
    assert!(transmit.size <= data.len() + MAX_RESPONSE_OVERHEAD);
    out.truncate(transmit.size);
    Some(Reply {
        transmit,
        bytes: out,
    })
}

fn send_udp(server: &mut StunServer, local: ServerSocket, data: &[u8]) -> Option<Reply> {
    send(server, local, Transport::Udp, data)
}

#[test]
fn every_socket_reports_its_origin_and_the_other_ip_and_port() {
    let mut s = server();
    let config = s.config().clone();
    for local in ServerSocket::ALL {
        let reply = send_udp(&mut s, local, &request(modern_tid(), |_| {})).unwrap();
        assert_eq!(reply.transmit.socket, local.into());
        assert_eq!(reply.transmit.destination, client());
        let origin = config.address_of(local).unwrap();
        let other = config.address_of(local.other()).unwrap();
        assert_eq!(
            reply.attr(attr::RESPONSE_ORIGIN),
            Some(Attribute::ResponseOrigin(origin))
        );
        assert_eq!(
            reply.attr(attr::OTHER_ADDRESS),
            Some(Attribute::OtherAddress(other))
        );
        assert_ne!(other.ip(), origin.ip());
        assert_ne!(other.port(), origin.port());
        assert_eq!(
            reply.attr(attr::XOR_MAPPED_ADDRESS),
            Some(Attribute::XorMappedAddress(client()))
        );
        assert_eq!(
            reply.attr(attr::MAPPED_ADDRESS),
            Some(Attribute::MappedAddress(client()))
        );
        assert!(matches!(
            reply.attr(attr::SOFTWARE),
            Some(Attribute::Software(_))
        ));
        assert!(
            !reply.message().has_fingerprint(),
            "no FINGERPRINT unless asked for"
        );
        assert_eq!(reply.message().transaction_id(), modern_tid());
        assert_eq!(reply.message().class(), Class::SuccessResponse);
    }
}

#[test]
fn each_change_request_combination_comes_from_the_right_socket() {
    let mut s = server();
    let config = s.config().clone();
    for local in ServerSocket::ALL {
        for (change_ip, change_port) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let change = ChangeRequest {
                change_ip,
                change_port,
            };
            for tid in [modern_tid(), classic_tid()] {
                let data = request(tid, |w| w.add_change_request(change).unwrap());
                let reply = send_udp(&mut s, local, &data).unwrap();
                let expected = local.changed(change);
                assert_eq!(
                    reply.transmit.socket,
                    expected.into(),
                    "{local:?} {change:?}"
                );
                assert_eq!(expected.ip != local.ip, change_ip);
                assert_eq!(expected.port != local.port, change_port);
                let origin = config.address_of(expected).unwrap();
                let origin_attr = if tid.is_classic() {
                    reply.attr(attr::SOURCE_ADDRESS)
                } else {
                    reply.attr(attr::RESPONSE_ORIGIN)
                };
                match origin_attr {
                    Some(Attribute::SourceAddress(a) | Attribute::ResponseOrigin(a)) => {
                        assert_eq!(a, origin)
                    }
                    other => panic!("no origin attribute: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn classic_request_gets_classic_answer_only() {
    let mut s = server();
    let config = s.config().clone();
    let reply = send_udp(
        &mut s,
        ServerSocket::PRIMARY,
        &request(classic_tid(), |_| {}),
    )
    .unwrap();
    assert_eq!(reply.message().transaction_id(), classic_tid());
    assert_eq!(
        reply.types(),
        vec![
            attr::MAPPED_ADDRESS,
            attr::SOURCE_ADDRESS,
            attr::CHANGED_ADDRESS
        ]
    );
    assert_eq!(
        reply.attr(attr::MAPPED_ADDRESS),
        Some(Attribute::MappedAddress(client()))
    );
    let other = config.address_of(ServerSocket::PRIMARY.other()).unwrap();
    assert_eq!(
        reply.attr(attr::CHANGED_ADDRESS),
        Some(Attribute::ChangedAddress(other))
    );
    assert!(!reply.bytes[4..8].eq(&crate::stun::MAGIC_COOKIE.to_be_bytes()));
}

#[test]
fn fingerprint_is_echoed_only_when_requested_and_is_valid() {
    let mut s = server();
    let data = request(modern_tid(), |w| w.add_fingerprint().unwrap());
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    assert!(reply.message().has_fingerprint());
    assert_eq!(reply.types().last(), Some(&attr::FINGERPRINT));
}

#[test]
fn unknown_required_attribute_gets_420_listing_it() {
    let mut s = server();
    for tid in [modern_tid(), classic_tid()] {
        let data = request(tid, |w| {
            w.add_raw(0x7F01, b"abcd").unwrap();
            w.add_raw(0x7F02, b"").unwrap();
            w.add_raw(0x7F01, b"abcd").unwrap();
            w.add_raw(0xC001, b"optional, ignored").unwrap();
        });
        let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
        assert_eq!(reply.message().class(), Class::ErrorResponse);
        assert_eq!(reply.transmit.destination, client());
        match reply.attr(attr::ERROR_CODE) {
            Some(Attribute::ErrorCode(e)) => assert_eq!(e.code, 420),
            other => panic!("{other:?}"),
        }
        let Some(Attribute::UnknownAttributes(list)) = reply.attr(attr::UNKNOWN_ATTRIBUTES) else {
            panic!("no UNKNOWN-ATTRIBUTES")
        };
        let mut listed: Vec<u16> = Attribute::unknown_types(list).collect();
        listed.dedup();
        assert_eq!(listed, vec![0x7F01, 0x7F02]);
    }
    assert_eq!(s.stats().error_responses, 2);
}

#[test]
fn optional_unknown_attributes_are_ignored() {
    let mut s = server();
    let data = request(modern_tid(), |w| w.add_raw(0xC0DE, b"hello").unwrap());
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    assert_eq!(reply.message().class(), Class::SuccessResponse);
}

#[test]
fn response_address_is_never_honoured() {
    let mut s = server();
    let victim: SocketAddr = "203.0.113.9:53".parse().unwrap();
    for tid in [modern_tid(), classic_tid()] {
        let data = request(tid, |w| {
            w.add_address(attr::RESPONSE_ADDRESS, victim).unwrap()
        });
        let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
        assert_eq!(reply.transmit.destination, client());
        assert!(reply.attr(attr::REFLECTED_FROM).is_none());
    }
    assert_eq!(s.stats().response_address_ignored, 2);
}

#[test]
fn single_address_server_never_answers_from_the_wrong_address() {
    let mut s = server_with(ServerConfig {
        primary_ip: "192.0.2.1".parse().unwrap(),
        alternate_ip: None,
        ..ServerConfig::default()
    });
    // Plain requests: no OTHER-ADDRESS, no CHANGED-ADDRESS.
    let reply = send_udp(
        &mut s,
        ServerSocket::PRIMARY,
        &request(modern_tid(), |_| {}),
    )
    .unwrap();
    assert!(reply.attr(attr::OTHER_ADDRESS).is_none());
    let reply = send_udp(
        &mut s,
        ServerSocket::PRIMARY,
        &request(classic_tid(), |_| {}),
    )
    .unwrap();
    assert!(reply.attr(attr::CHANGED_ADDRESS).is_none());

    for change in [
        ChangeRequest {
            change_ip: true,
            change_port: false,
        },
        ChangeRequest {
            change_ip: true,
            change_port: true,
        },
    ] {
        // Modern: 420 naming CHANGE-REQUEST, sent from the socket the request came in on.
        let data = request(modern_tid(), |w| w.add_change_request(change).unwrap());
        let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
        assert_eq!(reply.transmit.socket, ServerSocket::PRIMARY.into());
        assert!(
            matches!(reply.attr(attr::ERROR_CODE), Some(Attribute::ErrorCode(e)) if e.code == 420)
        );
        // Classic: silence.
        let data = request(classic_tid(), |w| w.add_change_request(change).unwrap());
        assert!(send_udp(&mut s, ServerSocket::PRIMARY, &data).is_none());
    }
    assert_eq!(s.stats().change_refused, 2);

    // Change-port alone can be honoured truthfully: both ports exist on the primary address.
    let change = ChangeRequest {
        change_ip: false,
        change_port: true,
    };
    let data = request(classic_tid(), |w| w.add_change_request(change).unwrap());
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    let from = ServerSocket::from_socket_index(reply.transmit.socket).unwrap();
    assert_eq!(from.port, PortSlot::Alternate);
    assert_eq!(from.ip, IpSlot::Primary);
}

#[test]
fn response_port_redirects_to_the_same_ip_only() {
    let mut s = server();
    let data = request(modern_tid(), |w| w.add_response_port(5555).unwrap());
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    assert_eq!(
        reply.transmit.destination,
        SocketAddr::new(client().ip(), 5555)
    );
    assert_eq!(
        reply.attr(attr::XOR_MAPPED_ADDRESS),
        Some(Attribute::XorMappedAddress(client()))
    );
}

#[test]
fn response_port_zero_is_malformed() {
    let mut s = server();
    let data = request(modern_tid(), |w| w.add_response_port(0).unwrap());
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    assert!(matches!(reply.attr(attr::ERROR_CODE), Some(Attribute::ErrorCode(e)) if e.code == 400));
}

#[test]
fn padding_is_echoed_at_the_request_length_and_never_with_response_port() {
    let mut s = server();
    let data = request(modern_tid(), |w| w.add_padding(1400).unwrap());
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    assert!(matches!(reply.attr(attr::PADDING), Some(Attribute::Padding(p)) if p.len() == 1400));
    assert!(reply.bytes.len() <= data.len() + MAX_RESPONSE_OVERHEAD);

    let data = request(modern_tid(), |w| {
        w.add_padding(100).unwrap();
        w.add_response_port(5555).unwrap();
    });
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &data).unwrap();
    assert!(matches!(reply.attr(attr::ERROR_CODE), Some(Attribute::ErrorCode(e)) if e.code == 400));
    assert_eq!(
        reply.transmit.destination,
        client(),
        "errors go to the source, not RESPONSE-PORT"
    );
}

#[test]
fn tcp_cannot_change_address() {
    let mut s = server();
    let change = ChangeRequest {
        change_ip: false,
        change_port: true,
    };
    let plain = request(modern_tid(), |_| {});
    let reply = send(&mut s, ServerSocket::PRIMARY, Transport::Tcp, &plain).unwrap();
    assert_eq!(reply.message().class(), Class::SuccessResponse);
    let data = request(modern_tid(), |w| w.add_change_request(change).unwrap());
    let reply = send(&mut s, ServerSocket::PRIMARY, Transport::Tcp, &data).unwrap();
    assert!(matches!(reply.attr(attr::ERROR_CODE), Some(Attribute::ErrorCode(e)) if e.code == 400));
    let data = request(classic_tid(), |w| w.add_change_request(change).unwrap());
    assert!(send(&mut s, ServerSocket::PRIMARY, Transport::Tcp, &data).is_none());
}

#[test]
fn garbage_responses_and_indications_are_dropped_and_counted() {
    let mut s = server();
    assert!(
        send_udp(
            &mut s,
            ServerSocket::PRIMARY,
            b"hello world, not stun at all"
        )
        .is_none()
    );
    assert!(send_udp(&mut s, ServerSocket::PRIMARY, &[0u8; 19]).is_none());
    let mut buf = [0u8; 64];
    for class in [
        Class::SuccessResponse,
        Class::Indication,
        Class::ErrorResponse,
    ] {
        let w = MessageWriter::new(&mut buf, Method::BINDING, class, modern_tid()).unwrap();
        let len = w.finish();
        assert!(send_udp(&mut s, ServerSocket::PRIMARY, &buf[..len]).is_none());
    }
    assert_eq!(s.stats().malformed, 2);
    assert_eq!(s.stats().not_request, 3);
    // ... and the server still answers.
    assert!(
        send_udp(
            &mut s,
            ServerSocket::PRIMARY,
            &request(modern_tid(), |_| {})
        )
        .is_some()
    );
}

#[test]
fn other_methods_get_400() {
    let mut s = server();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(
        &mut buf,
        Method::SHARED_SECRET,
        Class::Request,
        classic_tid(),
    )
    .unwrap();
    let len = w.finish();
    let reply = send_udp(&mut s, ServerSocket::PRIMARY, &buf[..len]).unwrap();
    assert_eq!(reply.message().method(), Method::SHARED_SECRET);
    assert!(matches!(reply.attr(attr::ERROR_CODE), Some(Attribute::ErrorCode(e)) if e.code == 400));
}

#[test]
fn rate_limit_cuts_a_flood_from_one_source() {
    let mut s = server_with(ServerConfig {
        rate_limit: RateLimitConfig {
            per_second: 10,
            burst: 5,
        },
        ..ServerConfig::default()
    });
    let data = request(modern_tid(), |_| {});
    let mut out = [0u8; 512];
    let start = Instant::now();
    let answered = (0..100)
        .filter(|_| {
            let received = Received {
                local: ServerSocket::PRIMARY,
                transport: Transport::Udp,
                from: client(),
                data: &data,
            };
            s.handle_datagram(start, received, &mut out).is_some()
        })
        .count();
    assert_eq!(answered, 5);
    assert_eq!(s.stats().rate_limited, 95);
    let received = Received {
        local: ServerSocket::PRIMARY,
        transport: Transport::Udp,
        from: client(),
        data: &data,
    };
    assert!(
        s.handle_datagram(start + Duration::from_millis(150), received, &mut out)
            .is_some()
    );
}

#[test]
fn ipv6_server_and_client() {
    let mut s = server_with(ServerConfig {
        primary_ip: "2001:db8::1".parse().unwrap(),
        alternate_ip: Some("2001:db8::2".parse().unwrap()),
        ..ServerConfig::default()
    });
    let from: SocketAddr = "[2001:db8::99]:1234".parse().unwrap();
    let data = request(modern_tid(), |_| {});
    let mut out = [0u8; 512];
    let received = Received {
        local: ServerSocket::PRIMARY,
        transport: Transport::Udp,
        from,
        data: &data,
    };
    let t = s
        .handle_datagram(Instant::now(), received, &mut out)
        .unwrap();
    let m = Message::parse(&out[..t.size]).unwrap();
    let xma = m.get(attr::XOR_MAPPED_ADDRESS).unwrap().parse().unwrap();
    assert_eq!(xma, Attribute::XorMappedAddress(from));
    // The worst case the overhead constant allows for: IPv6 everywhere, maximum SOFTWARE.
    assert!(t.size <= data.len() + MAX_RESPONSE_OVERHEAD);
}

/// An IPv6 server's RFC 5780 attributes on every socket, for a plain and a CHANGE-REQUEST
/// Binding: RESPONSE-ORIGIN is the answering socket, OTHER-ADDRESS the receiving socket's
/// other address and port, and every address attribute is encoded as family 0x02 with a 20-byte value (RFC 8489
/// section 14.1), which is what a client decodes them by.
#[test]
fn ipv6_server_encodes_origin_other_and_mapped_as_ipv6_on_every_socket() {
    let mut s = server_with(ServerConfig {
        primary_ip: "2001:db8::1".parse().unwrap(),
        alternate_ip: Some("2001:db8::2".parse().unwrap()),
        ..ServerConfig::default()
    });
    let config = s.config().clone();
    let from: SocketAddr = "[2001:db8:1:2::2]:40000".parse().unwrap();
    let change = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    for local in ServerSocket::ALL {
        for changed in [false, true] {
            let data = request(modern_tid(), |w| {
                if changed {
                    w.add_change_request(change).unwrap();
                }
            });
            let mut out = [0u8; 512];
            let received = Received {
                local,
                transport: Transport::Udp,
                from,
                data: &data,
            };
            let t = s
                .handle_datagram(Instant::now(), received, &mut out)
                .unwrap();
            let answering = if changed {
                local.changed(change)
            } else {
                local
            };
            assert_eq!(t.socket, answering.into());
            let m = Message::parse(&out[..t.size]).unwrap();
            let get = |typ| m.get(typ).unwrap().parse().unwrap();
            let origin = config.address_of(answering).unwrap();
            // Where a change of both would answer from, seen from the receiving socket.
            let other = config.address_of(local.other()).unwrap();
            assert!(origin.is_ipv6() && other.is_ipv6());
            assert_eq!(
                get(attr::RESPONSE_ORIGIN),
                Attribute::ResponseOrigin(origin)
            );
            assert_eq!(get(attr::OTHER_ADDRESS), Attribute::OtherAddress(other));
            assert_eq!(
                get(attr::XOR_MAPPED_ADDRESS),
                Attribute::XorMappedAddress(from)
            );
            for typ in [
                attr::RESPONSE_ORIGIN,
                attr::OTHER_ADDRESS,
                attr::XOR_MAPPED_ADDRESS,
                attr::MAPPED_ADDRESS,
            ] {
                let raw = m.get(typ).unwrap();
                assert_eq!(raw.value.len(), 20, "{typ:#06x}");
                assert_eq!(raw.value[1], 0x02, "{typ:#06x}");
            }
        }
    }
}

#[test]
fn config_contradictions_are_refused() {
    let same = ServerConfig {
        alternate_ip: Some("127.0.0.1".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(same.validate(), Err(ConfigError::SameAddress(_))));
    let mixed = ServerConfig {
        alternate_ip: Some("::1".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        mixed.validate(),
        Err(ConfigError::MixedFamilies(..))
    ));
    let ports = ServerConfig {
        alternate_port: 3478,
        ..Default::default()
    };
    assert!(matches!(ports.validate(), Err(ConfigError::SamePort(3478))));
    let long = ServerConfig {
        software: Some("x".repeat(65)),
        ..Default::default()
    };
    assert!(matches!(
        long.validate(),
        Err(ConfigError::SoftwareTooLong(65))
    ));
    assert!(ServerConfig::default().validate().is_ok());
}

proptest! {
    /// Whatever arrives: no panic, and any response is bounded and echoes the transaction id.
    #[test]
    fn arbitrary_input_never_panics_and_responses_are_bounded(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        socket in 0usize..4,
        tcp in any::<bool>(),
    ) {
        let mut s = server_with(ServerConfig {
            rate_limit: RateLimitConfig { per_second: 0, burst: 0 },
            software: Some("x".repeat(MAX_SOFTWARE_LEN)),
            ..ServerConfig::default()
        });
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        if let Some(reply) = send(&mut s, ServerSocket::ALL[socket], transport, &data) {
            prop_assert_eq!(&reply.bytes[4..20], &data[4..20]);
        }
    }

    /// Structured requests with random attributes: same bound, and success responses always
    /// carry the client's address.
    #[test]
    fn structured_requests_are_bounded(
        classic in any::<bool>(),
        change_ip in any::<bool>(),
        change_port in any::<bool>(),
        padding in proptest::option::of(0usize..1500),
        response_port in proptest::option::of(1u16..),
        fingerprint in any::<bool>(),
        socket in 0usize..4,
    ) {
        let mut s = server_with(ServerConfig {
            software: Some("x".repeat(MAX_SOFTWARE_LEN)),
            ..ServerConfig::default()
        });
        let tid = if classic { classic_tid() } else { modern_tid() };
        let data = request(tid, |w| {
            w.add_change_request(ChangeRequest { change_ip, change_port }).unwrap();
            if let Some(p) = padding { w.add_padding(p).unwrap(); }
            if let Some(p) = response_port { w.add_response_port(p).unwrap(); }
            if fingerprint && !classic { w.add_fingerprint().unwrap(); }
        });
        let reply = send_udp(&mut s, ServerSocket::ALL[socket], &data).unwrap();
        if reply.message().class() == Class::SuccessResponse {
            let mapped = reply.attr(attr::MAPPED_ADDRESS);
            prop_assert_eq!(mapped, Some(Attribute::MappedAddress(client())));
        }
    }
}

/// The sizes quoted in docs/STUN-SERVER.md's amplification table; if this fails, update the doc.
#[test]
fn documented_response_sizes() {
    let sizes = |server: &mut StunServer, from: SocketAddr, data: &[u8]| {
        let mut out = [0u8; 1024];
        let received = Received {
            local: ServerSocket::PRIMARY,
            transport: Transport::Udp,
            from,
            data,
        };
        (
            data.len(),
            server
                .handle_datagram(Instant::now(), received, &mut out)
                .unwrap()
                .size,
        )
    };
    let v4: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let mut s4 = StunServer::new(ServerConfig::default(), 1, Instant::now()).unwrap();
    let mut s6 = server_with(ServerConfig {
        primary_ip: "2001:db8::1".parse().unwrap(),
        alternate_ip: Some("2001:db8::2".parse().unwrap()),
        ..ServerConfig::default()
    });
    let modern = request(modern_tid(), |_| {});
    let with_fp = request(modern_tid(), |w| w.add_fingerprint().unwrap());
    let classic = request(classic_tid(), |_| {});
    assert_eq!(sizes(&mut s4, v4, &modern), (20, 96));
    assert_eq!(sizes(&mut s4, v4, &with_fp), (28, 104));
    assert_eq!(sizes(&mut s4, v4, &classic), (20, 56));
    assert_eq!(sizes(&mut s6, v6, &modern), (20, 144));
    assert_eq!(sizes(&mut s6, v6, &classic), (20, 92));
    assert_eq!(MAX_RESPONSE_OVERHEAD, 172);
}

#[test]
fn requests_and_responses_are_counted_by_socket_and_kind() {
    let mut s = server();
    let [a1p1, a1p2, a2p1, a2p2] = ServerSocket::ALL;
    let (classic, modern) = (RequestKind::Classic, RequestKind::Modern);
    // Bare requests (the template path) answer from the socket they came in on.
    send_udp(&mut s, a1p1, &request(classic_tid(), |_| {})).unwrap();
    send_udp(&mut s, a1p2, &request(modern_tid(), |_| {})).unwrap();
    // A CHANGE-REQUEST is counted where it arrived and where its answer leaves.
    let both = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let changed = request(modern_tid(), |w| w.add_change_request(both).unwrap());
    assert_eq!(
        send_udp(&mut s, a1p1, &changed).unwrap().transmit.socket,
        a2p2.into()
    );
    // An error answer leaves from the arrival socket; garbage is no request at all.
    let unknown = request(classic_tid(), |w| w.add_raw(0x7F01, b"abcd").unwrap());
    send_udp(&mut s, a2p1, &unknown).unwrap();
    assert!(send_udp(&mut s, a2p1, b"not stun at all, not at all").is_none());

    let stats = *s.stats();
    assert_eq!(stats.requests_by.get(a1p1, classic), 1);
    assert_eq!(stats.requests_by.get(a1p1, modern), 1);
    assert_eq!(stats.requests_by.get(a1p2, modern), 1);
    assert_eq!(stats.requests_by.get(a2p1, classic), 1);
    assert_eq!(stats.requests_by.total(), 4);
    assert_eq!(stats.responses_by.get(a1p1, classic), 1);
    assert_eq!(stats.responses_by.get(a1p2, modern), 1);
    assert_eq!(stats.responses_by.get(a2p2, modern), 1);
    assert_eq!(stats.responses_by.total(), 3);
    assert_eq!(stats.error_responses_by.get(a2p1, classic), 1);
    assert_eq!(stats.error_responses_by.total(), 1);
    assert_eq!(stats.responses, 3);
    assert_eq!(stats.error_responses, 1);
    assert_eq!(stats.received, 5);

    let mut merged = stats;
    merged.merge(&stats);
    assert_eq!(merged.responses_by.get(a2p2, modern), 2);
    assert_eq!(merged.requests_by.total(), 8);
}
