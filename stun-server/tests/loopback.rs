//! The server over real sockets on 127.0.0.1 + 127.0.0.2 (both exist on Linux loopback), each
//! test on its own free ports so tests run in parallel.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use p2p_servers::{ServerHandle, ServerOptions};
use shared::stun::{
    Attribute, ChangeRequest, Class, Message, MessageWriter, Method, TransactionId, attr,
};
use shared::stun_server::{RateLimitConfig, ServerSocket};

fn options() -> ServerOptions {
    ServerOptions {
        port: 0,
        alt_port: 0,
        workers: 1,
        ..ServerOptions::default()
    }
}

fn start(options: ServerOptions) -> ServerHandle {
    ServerHandle::start(options).expect("server starts on loopback")
}

fn tid(n: u8, classic: bool) -> TransactionId {
    if classic {
        TransactionId::Classic([n; 16])
    } else {
        TransactionId::Modern([n; 12])
    }
}

fn request(tid: TransactionId, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, tid).unwrap();
    build(&mut w);
    let len = w.finish();
    buf.truncate(len);
    buf
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Sends `data` to `to` and returns the reply and the address it really came from.
fn exchange(socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    socket.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 4096];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => {
            buf.truncate(n);
            Some((buf, from))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn get(bytes: &[u8], typ: u16) -> Option<Attribute<'_>> {
    Message::parse(bytes)
        .unwrap()
        .get(typ)
        .map(|a| a.parse().unwrap())
}

fn address(a: Option<Attribute<'_>>) -> SocketAddr {
    match a {
        Some(
            Attribute::MappedAddress(x)
            | Attribute::XorMappedAddress(x)
            | Attribute::ResponseOrigin(x)
            | Attribute::OtherAddress(x)
            | Attribute::SourceAddress(x)
            | Attribute::ChangedAddress(x),
        ) => x,
        other => panic!("not an address attribute: {other:?}"),
    }
}

#[test]
fn each_socket_reports_its_origin_and_other_address() {
    let server = start(options());
    let c = client();
    for socket in ServerSocket::ALL {
        let to = server.udp_addr(socket).unwrap();
        let (reply, from) = exchange(&c, to, &request(tid(1, false), |_| {})).unwrap();
        assert_eq!(from, to, "reply comes from the socket asked");
        assert_eq!(address(get(&reply, attr::RESPONSE_ORIGIN)), to);
        assert_eq!(
            address(get(&reply, attr::OTHER_ADDRESS)),
            server.udp_addr(socket.other()).unwrap()
        );
        assert_eq!(
            address(get(&reply, attr::XOR_MAPPED_ADDRESS)),
            c.local_addr().unwrap()
        );
        assert_eq!(
            address(get(&reply, attr::MAPPED_ADDRESS)),
            c.local_addr().unwrap()
        );
    }
}

#[test]
fn every_change_request_combination_comes_from_the_right_source() {
    let server = start(options());
    let c = client();
    for socket in ServerSocket::ALL {
        for (change_ip, change_port) in [(false, false), (true, false), (false, true), (true, true)]
        {
            for classic in [false, true] {
                let change = ChangeRequest {
                    change_ip,
                    change_port,
                };
                let data = request(tid(2, classic), |w| w.add_change_request(change).unwrap());
                let to = server.udp_addr(socket).unwrap();
                let (reply, from) = exchange(&c, to, &data).expect("answered");
                let expected = server.udp_addr(socket.changed(change)).unwrap();
                assert_eq!(from, expected, "{socket:?} {change:?} classic={classic}");
                let origin = if classic {
                    attr::SOURCE_ADDRESS
                } else {
                    attr::RESPONSE_ORIGIN
                };
                assert_eq!(address(get(&reply, origin)), expected);
            }
        }
    }
}

#[test]
fn classic_requests_get_no_modern_attributes() {
    let server = start(options());
    let c = client();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    let (reply, _) = exchange(&c, to, &request(tid(3, true), |_| {})).unwrap();
    let msg = Message::parse(&reply).unwrap();
    assert!(msg.is_classic());
    let types: Vec<u16> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(
        types,
        [
            attr::MAPPED_ADDRESS,
            attr::SOURCE_ADDRESS,
            attr::CHANGED_ADDRESS
        ]
    );
    assert!(
        !types.contains(&attr::XOR_MAPPED_ADDRESS),
        "no 0x0020 for classic clients"
    );
    assert_eq!(
        address(get(&reply, attr::CHANGED_ADDRESS)),
        server.udp_addr(ServerSocket::PRIMARY.other()).unwrap()
    );
}

#[test]
fn unknown_required_attribute_gets_420() {
    let server = start(options());
    let c = client();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    let data = request(tid(4, false), |w| w.add_raw(0x7ABC, b"what").unwrap());
    let (reply, _) = exchange(&c, to, &data).unwrap();
    match get(&reply, attr::ERROR_CODE) {
        Some(Attribute::ErrorCode(e)) => assert_eq!(e.code, 420),
        other => panic!("{other:?}"),
    }
    let Some(Attribute::UnknownAttributes(list)) = get(&reply, attr::UNKNOWN_ATTRIBUTES) else {
        panic!()
    };
    assert_eq!(Attribute::unknown_types(list).collect::<Vec<_>>(), [0x7ABC]);
}

#[test]
fn response_address_is_ignored_and_nothing_reaches_the_named_victim() {
    let server = start(options());
    let c = client();
    let victim = client();
    victim
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    for classic in [true, false] {
        let data = request(tid(5, classic), |w| {
            w.add_address(attr::RESPONSE_ADDRESS, victim.local_addr().unwrap())
                .unwrap()
        });
        let (reply, _) = exchange(&c, to, &data).expect("answered to the sender");
        assert!(get(&reply, attr::REFLECTED_FROM).is_none());
    }
    let mut buf = [0u8; 512];
    assert!(
        victim.recv_from(&mut buf).is_err(),
        "the victim got a datagram"
    );
    // Workers publish their counters periodically (every 250 ms): wait for the count to
    // arrive, with a deadline, instead of sleeping for one period and hoping.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ignored = server.stats().core.response_address_ignored;
    while ignored < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        ignored = server.stats().core.response_address_ignored;
    }
    assert_eq!(ignored, 2);
}

#[test]
fn response_port_sends_to_another_port_of_the_same_host() {
    let server = start(options());
    let c = client();
    let other = client();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    let port = other.local_addr().unwrap().port();
    c.send_to(
        &request(tid(6, false), |w| w.add_response_port(port).unwrap()),
        to,
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = other
        .recv_from(&mut buf)
        .expect("reply arrives at RESPONSE-PORT");
    assert_eq!(
        address(get(&buf[..n], attr::XOR_MAPPED_ADDRESS)),
        c.local_addr().unwrap()
    );
}

#[test]
fn garbage_is_dropped_and_counted_and_the_server_still_answers() {
    let server = start(options());
    let c = client();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    let mut junk = vec![0u8; 5000]; // bigger than a receive slot, too
    junk[0] = 0xFF;
    for data in [&b"GET / HTTP/1.0\r\n\r\n"[..], &[0u8; 3], &junk, &[0u8; 24]] {
        assert!(exchange(&c, to, data).is_none(), "garbage got a reply");
    }
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(exchange(&c, to, &request(tid(7, false), |_| {})).is_some());
    let stats = server.shutdown();
    assert_eq!(stats.core.malformed, 3);
    assert_eq!(stats.truncated, 1);
    assert_eq!(stats.core.responses, 1);
}

#[test]
fn single_address_server_refuses_change_ip_and_sends_no_other_address() {
    let server = start(ServerOptions {
        alternate: None,
        ..options()
    });
    assert_eq!(server.udp_addrs().len(), 2);
    let c = client();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    let (reply, _) = exchange(&c, to, &request(tid(8, false), |_| {})).unwrap();
    assert!(get(&reply, attr::OTHER_ADDRESS).is_none());
    let change = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let (reply, from) = exchange(
        &c,
        to,
        &request(tid(9, false), |w| w.add_change_request(change).unwrap()),
    )
    .unwrap();
    assert_eq!(from, to, "the refusal comes from where the request went");
    assert!(
        matches!(get(&reply, attr::ERROR_CODE), Some(Attribute::ErrorCode(e)) if e.code == 420)
    );
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let classic = request(tid(10, true), |w| w.add_change_request(change).unwrap());
    assert!(
        exchange(&c, to, &classic).is_none(),
        "a classic client must get silence"
    );
}

#[test]
fn stun_over_tcp_on_the_primary_address() {
    let server = start(options());
    let addr = server.tcp_addr().expect("TCP on by default");
    assert_eq!(addr, server.udp_addr(ServerSocket::PRIMARY).unwrap());
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Two requests back to back in one write: framing must split them.
    let mut both = request(tid(11, false), |_| {});
    both.extend(request(tid(12, false), |w| w.add_fingerprint().unwrap()));
    stream.write_all(&both).unwrap();
    for expected in [tid(11, false), tid(12, false)] {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).unwrap();
        let len = shared::stun::message_length(&header).unwrap();
        let mut msg = header.to_vec();
        msg.resize(len, 0);
        stream.read_exact(&mut msg[20..]).unwrap();
        let m = Message::parse(&msg).unwrap();
        assert_eq!(m.transaction_id(), expected);
        assert_eq!(
            address(get(&msg, attr::XOR_MAPPED_ADDRESS)),
            stream.local_addr().unwrap()
        );
    }
    // Garbage closes the connection (a stream cannot resynchronise).
    stream.write_all(b"\xFFnot stun at all....").unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn several_workers_share_the_ports_and_answer_every_client() {
    let server = start(ServerOptions {
        workers: 2,
        ..options()
    });
    assert_eq!(server.workers(), 2);
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    for i in 0..40u8 {
        let c = client();
        let (reply, from) =
            exchange(&c, to, &request(tid(i, i % 2 == 0), |_| {})).expect("answered");
        assert_eq!(from, to);
        assert_eq!(
            address(get(&reply, attr::MAPPED_ADDRESS)),
            c.local_addr().unwrap()
        );
    }
}

#[test]
fn rate_limit_applies_per_source() {
    let server = start(ServerOptions {
        rate_limit: RateLimitConfig {
            per_second: 1,
            burst: 3,
        },
        ..options()
    });
    let c = client();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    for i in 0..10u8 {
        c.send_to(&request(tid(i, false), |_| {}), to).unwrap();
    }
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 512];
    let answered = (0..10)
        .take_while(|_| c.recv_from(&mut buf).is_ok())
        .count();
    assert_eq!(answered, 3);
    assert_eq!(server.shutdown().core.rate_limited, 7);
}

#[test]
fn advertised_addresses_replace_the_bound_ones_in_attributes() {
    let server = start(ServerOptions {
        advertise_primary: Some("203.0.113.10".parse().unwrap()),
        advertise_alternate: Some("203.0.113.11".parse().unwrap()),
        ..options()
    });
    let c = client();
    let to = server.udp_addr(ServerSocket::PRIMARY).unwrap();
    let (reply, from) = exchange(&c, to, &request(tid(13, false), |_| {})).unwrap();
    assert_eq!(from, to);
    assert_eq!(
        address(get(&reply, attr::RESPONSE_ORIGIN)),
        SocketAddr::new("203.0.113.10".parse().unwrap(), to.port())
    );
    let other = address(get(&reply, attr::OTHER_ADDRESS));
    assert_eq!(
        other.ip(),
        "203.0.113.11".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let first = start(options());
    let taken = first.udp_addr(ServerSocket::PRIMARY).unwrap();
    let err = ServerHandle::start(ServerOptions {
        port: taken.port(),
        alt_port: first.udp_addr(ServerSocket::ALL[1]).unwrap().port(),
        ..options()
    })
    .err()
    .expect("second server on the same ports must fail");
    let text = err.to_string();
    assert!(
        text.contains("already in use") && text.contains(&taken.to_string()),
        "{text}"
    );
}
