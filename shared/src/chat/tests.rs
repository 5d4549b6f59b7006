//! Session-level unit tests with a perfect, instant link; whole scenarios with loss,
//! reordering and path switches in virtual time are in `tests/chat_session.rs`.

use std::time::{Duration, Instant};

use super::*;

fn keys() -> (StaticKeypair, StaticKeypair) {
    (
        StaticKeypair::from_random_bytes([0x11; 32]).unwrap(),
        StaticKeypair::from_random_bytes([0x22; 32]).unwrap(),
    )
}

fn pair(now: Instant) -> (ChatSession, ChatSession) {
    let (a, b) = keys();
    let ca = ChatConfig::new(
        Role::Initiator,
        a.secret,
        b.public,
        b"unit".to_vec(),
        [1; 32],
    );
    let cb = ChatConfig::new(
        Role::Responder,
        b.secret,
        a.public,
        b"unit".to_vec(),
        [2; 32],
    );
    (
        ChatSession::new(ca, now).unwrap(),
        ChatSession::new(cb, now).unwrap(),
    )
}

/// Moves packets both ways until neither side has anything to send; returns the packets
/// sent a-to-b and b-to-a.
fn pump(a: &mut ChatSession, b: &mut ChatSession, now: Instant) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut ab, mut ba) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let mut quiet = true;
        while let Some(p) = a.poll_transmit(now) {
            b.handle_datagram(now, &p).unwrap();
            ab.push(p);
            quiet = false;
        }
        while let Some(p) = b.poll_transmit(now) {
            a.handle_datagram(now, &p).unwrap();
            ba.push(p);
            quiet = false;
        }
        if quiet {
            return (ab, ba);
        }
    }
    panic!("pump did not settle");
}

fn events(s: &mut ChatSession) -> Vec<ChatEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn handshake_then_messages_both_ways() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    assert!(!a.is_established() && !b.is_established());
    assert_eq!(a.poll_timeout(), Some(t0));
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    let id = a.send_text(t0, "queued before the handshake").unwrap();
    let (ab, ba) = pump(&mut a, &mut b, t0);
    assert!(a.is_established() && b.is_established());
    assert_eq!(ab[0].len(), 57);
    assert_eq!(ab[0][0], TAG_HANDSHAKE_INIT);
    assert_eq!(ba[0][0], TAG_HANDSHAKE_RESPONSE);
    assert_eq!(
        events(&mut b),
        [
            ChatEvent::Established,
            ChatEvent::Message {
                id,
                bytes: b"queued before the handshake".to_vec()
            }
        ]
    );
    // b's ACK waits for the ack delay, then goes out alone and is not acknowledged itself.
    let t1 = t0 + Duration::from_millis(10);
    assert_eq!(b.poll_timeout(), Some(t1));
    let (ab, ba) = pump(&mut a, &mut b, t1);
    assert_eq!((ab.len(), ba.len()), (0, 1));
    assert_eq!(
        events(&mut a),
        [ChatEvent::Established, ChatEvent::Delivered(id)]
    );
    assert_eq!(a.unacked_count(), 0);
    let reply = b.send_message(t1, &[0, 159, 146, 150]).unwrap();
    assert_eq!(reply, MessageId(0));
    pump(&mut a, &mut b, t1);
    assert_eq!(
        events(&mut a),
        [ChatEvent::Message {
            id: reply,
            bytes: vec![0, 159, 146, 150]
        }]
    );
    assert_eq!(a.last_authenticated_rx(), Some(t1));
    assert_eq!(a.stats().authentication_failures, 0);
}

#[test]
fn large_messages_are_chunked_and_limited() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    pump(&mut a, &mut b, t0);
    let big: Vec<u8> = (0..MAX_MESSAGE_LEN).map(|i| (i % 251) as u8).collect();
    let id = a.send_message(t0, &big).unwrap();
    assert_eq!(
        a.send_message(t0, &[0; MAX_MESSAGE_LEN + 1]),
        Err(ChatError::MessageTooLarge {
            len: MAX_MESSAGE_LEN + 1,
            max: MAX_MESSAGE_LEN
        })
    );
    events(&mut b);
    let (ab, _) = pump(&mut a, &mut b, t0);
    assert!(ab.len() >= MAX_MESSAGE_LEN / 1200, "{} packets", ab.len());
    assert!(ab.iter().all(|p| p.len() <= 1200));
    assert_eq!(events(&mut b), [ChatEvent::Message { id, bytes: big }]);
}

#[test]
fn keepalive_when_idle_and_probe_on_demand() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    pump(&mut a, &mut b, t0);
    let every = ChatTiming::default().keepalive_interval.unwrap();
    let idle = t0 + every;
    assert_eq!(a.poll_timeout(), Some(idle));
    assert_eq!(a.poll_transmit(idle - Duration::from_millis(1)), None);
    let ping = a.poll_transmit(idle).unwrap();
    assert!(ping.len() < 40, "keepalive is small: {}", ping.len());
    b.handle_datagram(idle, &ping).unwrap();
    assert_eq!(b.last_authenticated_rx(), Some(idle));
    // The probe is answered by an immediate ACK (with b's own keepalive, also due), which
    // refreshes a's liveness.
    let t1 = idle + Duration::from_millis(5);
    let ack_and_ping = b.poll_transmit(idle).unwrap();
    assert_eq!(b.poll_transmit(idle), None);
    a.handle_datagram(t1, &ack_and_ping).unwrap();
    assert_eq!(a.last_authenticated_rx(), Some(t1));
    // a acknowledges b's ping with a lone ACK, which b does not acknowledge.
    let ack = a.poll_transmit(t1).unwrap();
    assert_eq!(a.poll_transmit(t1), None);
    b.handle_datagram(t1, &ack).unwrap();
    assert_eq!(b.poll_transmit(t1), None);
    assert_eq!(b.poll_timeout(), Some(idle + every));
    let probe = a.probe_packet(idle).unwrap();
    b.handle_datagram(idle, &probe).unwrap();
    assert!(b.poll_transmit(idle).is_some());
    // No keepalives at all when disabled; no probe before the handshake.
    let (x, y) = keys();
    let timing = ChatTiming {
        keepalive_interval: None,
        ..ChatTiming::default()
    };
    let cfg = ChatConfig::new(Role::Responder, x.secret, y.public, b"k".to_vec(), [0; 32])
        .with_timing(timing);
    let mut lone = ChatSession::new(cfg, t0).unwrap();
    assert_eq!(lone.probe_packet(t0), Err(ChatError::NotEstablished));
}

#[test]
fn handshake_times_out_and_session_dies() {
    let t0 = Instant::now();
    let (mut a, _b) = pair(t0);
    let mut sends = 0;
    let mut now = t0;
    while let Some(deadline) = a.poll_timeout() {
        now = deadline;
        a.handle_timeout(now);
        while a.poll_transmit(now).is_some() {
            sends += 1;
        }
    }
    assert_eq!(now, t0 + Duration::from_secs(30));
    // 0, 0.5, 1.5, 3.5, 7.5, then every 8 s: 15.5, 23.5 (and not at 31.5).
    assert_eq!(sends, 7);
    assert_eq!(a.stats().handshake_retransmissions, 6);
    assert_eq!(events(&mut a), [ChatEvent::HandshakeTimedOut]);
    assert!(a.is_failed());
    assert_eq!(a.send_text(now, "x"), Err(ChatError::Failed));
}

#[test]
fn duplicate_initiation_is_answered_again() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let m1 = a.poll_transmit(t0).unwrap();
    b.handle_datagram(t0, &m1).unwrap();
    let m2 = b.poll_transmit(t0).unwrap();
    // m2 is lost; a resends m1 after the handshake RTO and b answers with the same m2.
    let t1 = t0 + Duration::from_millis(500);
    let m1_again = a.poll_transmit(t1).unwrap();
    assert_eq!(m1_again, m1);
    b.handle_datagram(t1, &m1_again).unwrap();
    assert_eq!(b.poll_transmit(t1), Some(m2.clone()));
    assert_eq!(b.stats().duplicate_handshakes, 1);
    a.handle_datagram(t1, &m2).unwrap();
    assert!(a.is_established());
    // Late copies change nothing; a different initiation is refused.
    a.handle_datagram(t1, &m2).unwrap();
    let mut other = m1.clone();
    other[20] ^= 0x40;
    assert_eq!(
        b.handle_datagram(t1, &other),
        Err(ChatError::UnexpectedHandshake)
    );
    assert_eq!(
        a.handle_datagram(t1, &m1),
        Err(ChatError::UnexpectedHandshake)
    );
    assert_eq!(events(&mut b), [ChatEvent::Established]);
}

#[test]
fn config_is_validated() {
    let (a, b) = keys();
    let base = ChatConfig::new(Role::Initiator, a.secret, b.public, b"c".to_vec(), [0; 32]);
    let now = Instant::now();
    let small = base.clone().with_max_packet_size(MIN_PACKET_SIZE - 1);
    assert!(matches!(
        ChatSession::new(small, now),
        Err(ChatError::InvalidConfig(_))
    ));
    let timing = ChatTiming {
        min_rto: Duration::from_secs(9),
        ..ChatTiming::default()
    };
    assert!(matches!(
        ChatSession::new(base.clone().with_timing(timing), now),
        Err(ChatError::InvalidConfig(_))
    ));
    // The smallest packets still carry a full ACK and some data.
    let mut tiny = ChatSession::new(base.with_max_packet_size(MIN_PACKET_SIZE), now).unwrap();
    assert!(tiny.poll_transmit(now).is_some());
    assert!(format!("{tiny:?}").contains("handshaking"));
}

#[test]
fn a_goodbye_is_reported_once_and_only_from_the_peer() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    pump(&mut a, &mut b, t0);
    events(&mut a);
    events(&mut b);
    assert!(!a.is_closed());
    let bye = a.goodbye_packet(t0).unwrap();
    let again = a.goodbye_packet(t0).unwrap();
    assert!(a.is_closed());
    b.handle_datagram(t0, &bye).unwrap();
    b.handle_datagram(t0, &again).unwrap();
    assert_eq!(events(&mut b), [ChatEvent::PeerClosed]);
    assert!(b.is_peer_closed());
    // A replayed goodbye is refused; a forged one does not authenticate.
    assert_eq!(b.handle_datagram(t0, &bye), Err(ChatError::Replay));
    let mut forged = again.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (mut c, mut d) = pair(t0);
    pump(&mut c, &mut d, t0);
    events(&mut d);
    assert_eq!(
        d.handle_datagram(t0, &forged),
        Err(ChatError::Authentication)
    );
    assert_eq!(events(&mut d), []);
    // No goodbye before the handshake.
    let (mut e, _f) = pair(t0);
    assert_eq!(e.goodbye_packet(t0), Err(ChatError::NotEstablished));
}

#[test]
fn a_silent_peer_is_reported_after_the_idle_timeout() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    pump(&mut a, &mut b, t0);
    events(&mut a);
    let timeout = ChatTiming::default().idle_timeout.unwrap();
    assert!(timeout <= Duration::from_secs(15));
    // b vanishes: a keeps sending keepalives into the void.
    let mut now = t0;
    while now < t0 + timeout {
        now = a.poll_timeout().unwrap();
        while a.poll_transmit(now).is_some() {}
        if now < t0 + timeout {
            assert_eq!(events(&mut a), [], "at {:?}", now - t0);
        }
    }
    assert_eq!(now, t0 + timeout);
    assert_eq!(events(&mut a), [ChatEvent::PeerUnresponsive]);
    // Reported once; hearing the peer again re-arms it.
    let later = now + timeout;
    a.handle_timeout(later);
    assert_eq!(events(&mut a), []);
    let ping = b.probe_packet(later).unwrap();
    a.handle_datagram(later, &ping).unwrap();
    a.handle_timeout(later + timeout);
    assert_eq!(events(&mut a), [ChatEvent::PeerUnresponsive]);
}

#[test]
fn a_path_that_comes_up_gets_every_unacknowledged_chunk_at_once() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    pump(&mut a, &mut b, t0);
    events(&mut b);
    for i in 0..3 {
        a.send_text(t0, &format!("m{i}")).unwrap();
    }
    // Everything is lost on the dead path, twice.
    while a.poll_transmit(t0).is_some() {}
    let t1 = a.poll_timeout().unwrap();
    while a.poll_transmit(t1).is_some() {}
    let next = a.poll_timeout().unwrap();
    assert!(
        next >= t1 + Duration::from_millis(500),
        "backed off: {:?}",
        next - t1
    );
    // A new path: the chunks go now.
    let t2 = t1 + Duration::from_millis(1);
    a.handle_path_up(t2);
    let resent = a.poll_transmit(t2).unwrap();
    b.handle_datagram(t2, &resent).unwrap();
    assert_eq!(
        events(&mut b).len(),
        3,
        "all three messages in the one resent packet"
    );
    pump(&mut a, &mut b, t2 + Duration::from_millis(20));
    assert_eq!(a.unacked_count(), 0);
}
