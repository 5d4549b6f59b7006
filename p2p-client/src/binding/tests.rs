//! [`StunBinding`] over real loopback sockets: an answer from the STUN server core after a
//! lost request, the give-up when nothing answers, and which datagrams are the transaction's.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use shared::stun::TransactionId;
use shared::stun_client::{BindingRequest, RetransmitConfig};
use shared::stun_server::{
    MAX_RESPONSE_OVERHEAD, Received, ServerConfig, ServerSocket, StunServer, Transport,
};

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Sends at 0, 30 and 90 ms, gives up at 150 ms: short, and still RFC 8489's doubling.
fn quick() -> RetransmitConfig {
    RetransmitConfig {
        rto: Duration::from_millis(30),
        max_sends: 3,
        last_wait_factor: 2,
        backoff: true,
    }
}

fn request(server: SocketAddr, id: u8) -> BindingRequest {
    BindingRequest {
        server,
        transaction_id: TransactionId::Modern([id; 12]),
        change: None,
        expect_from: None,
        fingerprint: true,
    }
}

async fn client() -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(LOOPBACK, 0)).await.unwrap()
}

/// A one-address STUN server core on a loopback socket that ignores the first `drop`
/// requests it receives, so the client has to retransmit.
async fn server_dropping(drop: usize) -> SocketAddr {
    let socket = UdpSocket::bind(SocketAddr::new(LOOPBACK, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let config = ServerConfig {
        primary_ip: LOOPBACK,
        alternate_ip: None,
        primary_port: addr.port(),
        alternate_port: addr.port().checked_add(1).unwrap_or(1),
        ..ServerConfig::default()
    };
    let mut core = StunServer::new(config, 1, Instant::now()).unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 2048 + MAX_RESPONSE_OVERHEAD];
        let mut seen = 0;
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            seen += 1;
            if seen <= drop {
                continue;
            }
            let received = Received {
                local: ServerSocket::PRIMARY,
                transport: Transport::Udp,
                from,
                data: &buf[..n],
            };
            if let Some(t) = core.handle_datagram(Instant::now(), received, &mut out) {
                socket.send_to(&out[..t.size], t.destination).await.unwrap();
            }
        }
    });
    addr
}

#[tokio::test]
async fn learns_the_mapped_address_after_a_lost_request() {
    let server = server_dropping(1).await;
    let mut socket = client().await;
    let local = socket.local_addr().unwrap();
    let binding = StunBinding::new(BindingTransaction::new(
        request(server, 1),
        quick(),
        Instant::now(),
    ));
    let response = binding.run(&mut socket).await.unwrap().unwrap();
    assert_eq!(response.mapped, Some(local), "no NAT on loopback");
    assert_eq!(response.from, server);
    assert_eq!(response.sends, 2, "the first request was dropped");
    assert!(
        response.rtt >= Duration::from_millis(30),
        "{:?}",
        response.rtt
    );
}

#[tokio::test]
async fn gives_up_after_the_last_wait_when_nothing_answers() {
    let silent = std::net::UdpSocket::bind(SocketAddr::new(LOOPBACK, 0)).unwrap();
    silent.set_nonblocking(true).unwrap();
    let mut socket = client().await;
    let started = Instant::now();
    let binding = StunBinding::new(BindingTransaction::new(
        request(silent.local_addr().unwrap(), 2),
        quick(),
        started,
    ));
    let outcome = binding.run(&mut socket).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome, Err(BindingError::Timeout { sends: 3 }));
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let mut buf = [0u8; 512];
    let mut requests = 0;
    while silent.recv_from(&mut buf).is_ok() {
        requests += 1;
    }
    assert_eq!(requests, 3, "every send reached the wire");
}

#[tokio::test]
async fn a_send_failure_ends_the_run_naming_the_destination() {
    // IPv4 socket, IPv6 destination: the kernel refuses the send at once.
    let to: SocketAddr = "[::1]:9".parse().unwrap();
    let mut socket = client().await;
    let binding = StunBinding::new(BindingTransaction::new(
        request(to, 3),
        quick(),
        Instant::now(),
    ));
    let err = binding.run(&mut socket).await.unwrap_err();
    assert!(
        matches!(err, BindingIoError::Send { to: t, .. } if t == to),
        "{err:?}"
    );
}

#[test]
fn takes_only_stun_on_the_endpoint_socket() {
    let now = Instant::now();
    let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
    let mut binding = StunBinding::new(BindingTransaction::new(request(server, 4), quick(), now));
    let sent = binding.poll_transmits(now);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.destination, server);
    assert_eq!(sent[0].0.socket, SocketIndex::ENDPOINT);
    assert_eq!(sent[0].1.len(), sent[0].0.size);
    assert!(
        binding.poll_transmits(now).is_empty(),
        "nothing more is due yet"
    );

    // Chat and punch packets are the caller's; so is STUN on an extra socket.
    assert!(!binding.handle_datagram(now, SocketIndex::ENDPOINT, server, &[0x81, 0, 0]));
    assert!(!binding.handle_datagram(now, SocketIndex::ENDPOINT, server, &[0x84, 0, 0]));
    assert!(!binding.handle_datagram(now, SocketIndex(1), server, &sent[0].1));
    // STUN on the endpoint socket is the transaction's, even one it ignores (our own request
    // echoed back is a request, not an answer).
    assert!(binding.handle_datagram(now, SocketIndex::ENDPOINT, server, &sent[0].1));
    assert!(binding.outcome().is_none());
    assert_eq!(
        binding.poll_timeout(),
        Some(now + Duration::from_millis(30))
    );
}
