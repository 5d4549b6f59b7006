//! The transaction against the server core, in virtual time.

use std::time::{Duration, Instant};

use super::*;
use crate::stun_server::{Received, ServerConfig, ServerSocket, StunServer, Transport};

fn server() -> StunServer {
    StunServer::new(ServerConfig::default(), 1, Instant::now()).unwrap()
}

fn req(change: Option<ChangeRequest>, expect_from: Option<SocketAddr>) -> BindingRequest {
    BindingRequest {
        server: "127.0.0.1:3478".parse().unwrap(),
        transaction_id: TransactionId::Modern([5; 12]),
        change,
        expect_from,
        fingerprint: true,
    }
}

const CLIENT: &str = "192.0.2.50:6000";

/// Delivers the transaction's request to the core and the core's reply back, `lose` first sends
/// dropped on the way.
fn run(
    mut t: BindingTransaction,
    mut s: StunServer,
    lose: u32,
    start: Instant,
) -> BindingTransaction {
    let config = s.config().clone();
    let mut now = start;
    let mut sent = 0;
    for _ in 0..100 {
        let mut buf = [0u8; 512];
        if let Some(tx) = t.poll_transmit(now, &mut buf) {
            let (len, to) = (tx.size, tx.destination);
            sent += 1;
            let local = ServerSocket::ALL
                .into_iter()
                .find(|s| config.address_of(*s) == Some(to))
                .unwrap();
            if sent > lose {
                let mut out = [0u8; 512];
                let received = Received {
                    local,
                    transport: Transport::Udp,
                    from: CLIENT.parse().unwrap(),
                    data: &buf[..len],
                };
                if let Some(tx) = s.handle_datagram(now, received, &mut out) {
                    let socket = ServerSocket::from_socket_index(tx.socket).unwrap();
                    let from = config.address_of(socket).unwrap();
                    let at = now + Duration::from_millis(1);
                    t.handle_datagram(at, SocketIndex::ENDPOINT, from, &out[..tx.size]);
                }
            }
        }
        if t.outcome().is_some() {
            break;
        }
        now = t.poll_timeout().unwrap();
        t.handle_timeout(now);
    }
    t
}

#[test]
fn plain_binding_reports_mapped_origin_and_other() {
    let now = Instant::now();
    let t = run(
        BindingTransaction::new(req(None, None), RetransmitConfig::default(), now),
        server(),
        0,
        now,
    );
    let r = t.outcome().unwrap().as_ref().unwrap();
    assert_eq!(r.mapped, Some(CLIENT.parse().unwrap()));
    assert_eq!(r.origin, Some("127.0.0.1:3478".parse().unwrap()));
    assert_eq!(r.other, Some("127.0.0.2:3479".parse().unwrap()));
    assert_eq!(r.sends, 1);
}

#[test]
fn retransmits_with_doubling_timeouts_and_succeeds_after_loss() {
    let now = Instant::now();
    let t = run(
        BindingTransaction::new(req(None, None), RetransmitConfig::default(), now),
        server(),
        3,
        now,
    );
    let r = t.outcome().unwrap().as_ref().unwrap();
    assert_eq!(r.sends, 4);
    // 500 + 1000 + 2000 ms of waiting before the fourth send.
    assert_eq!(r.rtt, Duration::from_millis(3501));
}

#[test]
fn gives_up_after_the_rfc_schedule() {
    let now = Instant::now();
    let t = run(
        BindingTransaction::new(req(None, None), RetransmitConfig::default(), now),
        server(),
        100,
        now,
    );
    assert_eq!(t.outcome(), Some(&Err(BindingError::Timeout { sends: 7 })));
}

#[test]
fn schedule_is_rfc8489() {
    let now = Instant::now();
    let mut t = BindingTransaction::new(req(None, None), RetransmitConfig::default(), now);
    let mut buf = [0u8; 128];
    let mut sends = Vec::new();
    let mut at = now;
    while t.outcome().is_none() {
        if t.poll_transmit(at, &mut buf).is_some() {
            sends.push((at - now).as_millis());
        }
        at = t.poll_timeout().unwrap();
        t.handle_timeout(at);
    }
    assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!((at - now).as_millis(), 39500);
}

#[test]
fn a_reply_from_the_wrong_address_is_not_believed() {
    let now = Instant::now();
    // Ask for change-IP-and-port but claim the reply must come from the primary: the server
    // (correctly) answers from 127.0.0.2:3479, which this transaction must refuse.
    let change = Some(ChangeRequest {
        change_ip: true,
        change_port: true,
    });
    let expect = Some("127.0.0.1:3478".parse().unwrap());
    let config = RetransmitConfig {
        max_sends: 2,
        ..Default::default()
    };
    let t = run(
        BindingTransaction::new(req(change, expect), config, now),
        server(),
        0,
        now,
    );
    assert_eq!(t.outcome(), Some(&Err(BindingError::Timeout { sends: 2 })));
    assert_eq!(t.wrong_source(), Some("127.0.0.2:3479".parse().unwrap()));
}

#[test]
fn error_responses_end_the_transaction() {
    let now = Instant::now();
    let single = StunServer::new(
        ServerConfig {
            alternate_ip: None,
            ..Default::default()
        },
        1,
        now,
    )
    .unwrap();
    let change = Some(ChangeRequest {
        change_ip: true,
        change_port: false,
    });
    let t = run(
        BindingTransaction::new(req(change, None), RetransmitConfig::default(), now),
        single,
        0,
        now,
    );
    assert_eq!(
        t.outcome(),
        Some(&Err(BindingError::ErrorResponse { code: 420 }))
    );
}

const CHANGE_IP: ChangeRequest = ChangeRequest {
    change_ip: true,
    change_port: false,
};

#[test]
fn response_port_makes_the_changed_address_answer_to_that_port() {
    let now = Instant::now();
    let mut s = server();
    let config = s.config().clone();
    let mut t =
        BindingTransaction::new(req(Some(CHANGE_IP), None), RetransmitConfig::default(), now)
            .with_response_port(40123);
    let mut buf = [0u8; 512];
    let tx = t.poll_transmit(now, &mut buf).unwrap();
    let received = Received {
        local: ServerSocket::PRIMARY,
        transport: Transport::Udp,
        from: CLIENT.parse().unwrap(),
        data: &buf[..tx.size],
    };
    let mut out = [0u8; 512];
    let reply = s.handle_datagram(now, received, &mut out).unwrap();
    // The server's other IP answers, to the client's IP at the port asked for.
    assert_eq!(reply.destination, "192.0.2.50:40123".parse().unwrap());
    let socket = ServerSocket::from_socket_index(reply.socket).unwrap();
    assert_eq!(socket, ServerSocket::PRIMARY.changed(CHANGE_IP));
    assert_ne!(
        config.address_of(socket).unwrap().ip(),
        config.address_of(ServerSocket::PRIMARY).unwrap().ip()
    );
}
