//! Unit tests of the puncher, driven by hand or over a lossless, NAT-less link.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::{ACK_KIND, PROBE_KIND, Packet, PacketKind};
use super::*;
use crate::nat_classifier::{NatType, PortAllocation};

const SID: [u8; 16] = *b"sixteen byte sid";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn nat(t: NatType) -> NatInfo {
    let alloc = match t {
        NatType::Symmetric => PortAllocation::Random,
        _ => PortAllocation::Preserving,
    };
    NatInfo::new(t, Some(alloc))
}

fn config(role: Role, local: NatInfo, peer_nat: NatInfo, peer: &str) -> PunchConfig {
    PunchConfig::new(
        SID,
        role,
        local,
        PeerInfo {
            candidates: vec![
                Candidate::host(addr("10.0.0.9:40000")),
                Candidate::srflx(addr(peer)),
            ],
            nat: peer_nat,
        },
    )
}

/// A transmit with its payload copied out of the buffer, for asserting on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    socket: SocketIndex,
    to: SocketAddr,
    ttl: Option<u8>,
    data: Vec<u8>,
}

/// [`Puncher::poll_transmit`] with a fresh buffer.
fn poll(p: &mut Puncher, now: Instant) -> Option<Sent> {
    let mut buf = [0u8; 64];
    let t = p.poll_transmit(now, &mut buf)?;
    Some(Sent {
        socket: t.socket,
        to: t.destination,
        ttl: t.ttl,
        data: buf[..t.size].to_vec(),
    })
}

/// Everything the puncher sends up to `until`, following its own timeouts.
fn run_alone(p: &mut Puncher, mut now: Instant, until: Instant) -> Vec<(Instant, Sent)> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        while let Some(t) = poll(p, now) {
            out.push((now, t));
        }
        match p.poll_timeout() {
            Some(t) if t <= until => {
                now = now.max(t);
                p.handle_timeout(now);
            }
            _ => return out,
        }
    }
    panic!("no progress");
}

fn events(p: &mut Puncher) -> Vec<PunchEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

fn decode(t: &Sent) -> Packet {
    Packet::decode(&t.data).unwrap()
}

fn probe_from_peer(role: Role, nonce: u64) -> Vec<u8> {
    Packet {
        kind: PacketKind::Probe,
        session: SID,
        role,
        nonce,
    }
    .encode()
}

#[test]
fn primes_with_the_ttl_then_waits_for_the_peer_before_full_probes() {
    let t0 = Instant::now();
    let pr = nat(NatType::PortRestrictedCone);
    let c = config(Role::Initiator, pr, pr, "198.51.100.9:40000");
    let mut p = Puncher::new(c, t0, 1).unwrap();
    assert_eq!(p.strategy(), Strategy::Plain);
    assert!(poll(&mut p, t0 - Duration::from_millis(1)).is_none());
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(900));
    // Three priming rounds to both candidates, srflx first, TTL 2; nothing else.
    assert_eq!(sent.len(), 6, "{sent:?}");
    assert!(sent.iter().all(|(_, t)| t.ttl == Some(2)));
    assert_eq!(sent[0].1.to, addr("198.51.100.9:40000"));
    assert_eq!(sent[4].0 - t0, Duration::from_millis(20));
    assert_eq!(events(&mut p), vec![PunchEvent::Primed]);
    // The peer's signal: full probes at once.
    let now = t0 + Duration::from_millis(900);
    p.handle_peer_primed(now);
    let full: Vec<_> = std::iter::from_fn(|| poll(&mut p, now)).collect();
    assert_eq!(full.len(), 2);
    assert!(
        full.iter()
            .all(|t| t.ttl.is_none() && t.data[0] == PROBE_KIND)
    );
}

#[test]
fn without_the_peers_signal_full_probes_start_after_the_timeout() {
    let t0 = Instant::now();
    let pr = nat(NatType::PortRestrictedCone);
    let mut p = Puncher::new(config(Role::Initiator, pr, pr, "198.51.100.9:1"), t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_secs(2));
    let first_full = sent.iter().find(|(_, t)| t.ttl.is_none()).unwrap().0;
    assert_eq!(first_full - t0, Duration::from_millis(1020));
    // Without waiting: right after priming.
    let c = PunchConfig {
        wait_for_peer_primed: false,
        ..config(Role::Initiator, pr, pr, "198.51.100.9:1")
    };
    let mut p = Puncher::new(c, t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_secs(2));
    let first_full = sent.iter().find(|(_, t)| t.ttl.is_none()).unwrap().0;
    assert_eq!(first_full - t0, Duration::from_millis(20));
}

#[test]
fn an_open_host_does_not_prime_but_still_waits() {
    let t0 = Instant::now();
    let open = nat(NatType::OpenInternet);
    let pr = nat(NatType::PortRestrictedCone);
    let mut p = Puncher::new(config(Role::Responder, open, pr, "198.51.100.9:1"), t0, 1).unwrap();
    p.handle_timeout(t0);
    assert!(poll(&mut p, t0).is_none());
    assert_eq!(events(&mut p), vec![PunchEvent::Primed]);
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(500));
    assert!(sent.is_empty(), "{sent:?}");
}

#[test]
fn a_probe_is_acked_and_counts_as_the_peer_being_primed() {
    let t0 = Instant::now();
    let pr = nat(NatType::PortRestrictedCone);
    let mut p = Puncher::new(config(Role::Initiator, pr, pr, "198.51.100.9:1"), t0, 1).unwrap();
    run_alone(&mut p, t0, t0 + Duration::from_millis(100));
    let from = addr("198.51.100.9:2222");
    let now = t0 + Duration::from_millis(100);
    assert!(p.handle_datagram(
        now,
        SocketIndex(0),
        from,
        &probe_from_peer(Role::Responder, 77)
    ));
    let out: Vec<_> = std::iter::from_fn(|| poll(&mut p, now)).collect();
    let ack = &out[0];
    assert_eq!((ack.socket, ack.to, ack.ttl), (SocketIndex(0), from, None));
    let packet = decode(ack);
    assert_eq!(
        (packet.kind, packet.nonce, packet.role),
        (PacketKind::Ack, 77, Role::Initiator)
    );
    // Probing started: both candidates and the peer-reflexive address.
    let probed: Vec<_> = out[1..].iter().map(|t| t.to).collect();
    assert_eq!(probed.len(), 3, "{probed:?}");
    assert!(probed.contains(&from));
}

#[test]
fn foreign_sessions_reflections_and_chat_packets_are_not_answered() {
    let t0 = Instant::now();
    let pr = nat(NatType::PortRestrictedCone);
    let mut p = Puncher::new(config(Role::Initiator, pr, pr, "198.51.100.9:1"), t0, 1).unwrap();
    run_alone(&mut p, t0, t0 + Duration::from_millis(50));
    let now = t0 + Duration::from_millis(50);
    let from = addr("198.51.100.9:1");
    let mut foreign = probe_from_peer(Role::Responder, 1);
    foreign[5] ^= 1;
    assert!(p.handle_datagram(now, SocketIndex(0), from, &foreign));
    assert!(p.handle_datagram(
        now,
        SocketIndex(0),
        from,
        &probe_from_peer(Role::Initiator, 1)
    ));
    assert!(p.handle_datagram(now, SocketIndex(0), from, &[PROBE_KIND, 1, 2]));
    assert!(!p.handle_datagram(now, SocketIndex(0), from, &[0x81, 1, 2, 3]));
    assert!(!p.handle_datagram(now, SocketIndex(0), from, &[0x00, 1, 0, 0]));
    assert!(poll(&mut p, now).is_none());
    assert_eq!(p.stats().received, 0);
}

#[test]
fn only_an_ack_to_our_own_probe_on_the_same_socket_connects() {
    let t0 = Instant::now();
    let pr = nat(NatType::PortRestrictedCone);
    let c = PunchConfig {
        wait_for_peer_primed: false,
        ..config(Role::Responder, pr, pr, "198.51.100.9:1")
    };
    let mut p = Puncher::new(c, t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    let probe = sent.last().unwrap().1.clone();
    let nonce = decode(&probe).nonce;
    let ack = |nonce| {
        Packet {
            kind: PacketKind::Ack,
            session: SID,
            role: Role::Initiator,
            nonce,
        }
        .encode()
    };
    let now = t0 + Duration::from_millis(30);
    let from = addr("198.51.100.9:5555");
    p.handle_datagram(now, SocketIndex(0), from, &ack(nonce ^ 1));
    p.handle_datagram(now, SocketIndex(3), from, &ack(nonce));
    assert_eq!(events(&mut p), vec![PunchEvent::Primed]);
    assert!(p.path().is_none());
    assert!(p.handle_datagram(now, SocketIndex(0), from, &ack(nonce)));
    assert_eq!(
        events(&mut p),
        vec![PunchEvent::Connected {
            socket: SocketIndex(0),
            remote: from
        }]
    );
    assert_eq!(p.path(), Some((SocketIndex(0), from)));
    // Still answers probes, and no more probing rounds.
    p.handle_datagram(
        now,
        SocketIndex(0),
        from,
        &probe_from_peer(Role::Initiator, 9),
    );
    let out: Vec<_> = std::iter::from_fn(|| poll(&mut p, now)).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data[0], ACK_KIND);
}

/// Two punchers on a lossless link without NATs, 10 ms each way; the primed signal takes
/// 40 ms. Returns when each connected.
fn pair(a: PunchConfig, b: PunchConfig, t0: Instant) -> (Option<Instant>, Option<Instant>) {
    let (aa, ba) = (addr("192.0.2.1:40000"), addr("192.0.2.2:40000"));
    let mut ps = [
        Puncher::new(a, t0, 1).unwrap(),
        Puncher::new(b, t0, 2).unwrap(),
    ];
    let me = [aa, ba];
    let mut connected = [None, None];
    let mut wire: Vec<(Instant, usize, SocketAddr, Vec<u8>)> = Vec::new();
    let mut signals: Vec<(Instant, usize)> = Vec::new();
    let mut now = t0;
    for _ in 0..10_000 {
        for i in 0..2 {
            while let Some(e) = ps[i].poll_event() {
                match e {
                    PunchEvent::Primed => signals.push((now + Duration::from_millis(40), 1 - i)),
                    PunchEvent::Connected { .. } => connected[i] = Some(now),
                    _ => {}
                }
            }
            while let Some(t) = poll(&mut ps[i], now) {
                if let Some(j) = me.iter().position(|m| *m == t.to) {
                    wire.push((now + Duration::from_millis(10), j, me[i], t.data));
                }
            }
        }
        if connected.iter().all(Option::is_some) {
            break;
        }
        let next = [
            ps[0].poll_timeout(),
            ps[1].poll_timeout(),
            wire.iter().map(|w| w.0).min(),
            signals.iter().map(|s| s.0).min(),
        ];
        let Some(next) = next.into_iter().flatten().min() else {
            break;
        };
        now = now.max(next);
        if let Some(k) = wire.iter().position(|w| w.0 <= now) {
            let (_, j, from, data) = wire.remove(k);
            ps[j].handle_datagram(now, SocketIndex(0), from, &data);
        } else if let Some(k) = signals.iter().position(|s| s.0 <= now) {
            let (_, j) = signals.remove(k);
            ps[j].handle_peer_primed(now);
        } else {
            for p in &mut ps {
                if p.poll_timeout().is_some_and(|t| t <= now) {
                    p.handle_timeout(now);
                }
            }
        }
    }
    (connected[0], connected[1])
}

#[test]
fn two_open_hosts_connect_within_a_few_round_trips() {
    let t0 = Instant::now();
    let open = nat(NatType::OpenInternet);
    let a = config(Role::Initiator, open, open, "192.0.2.2:40000");
    let b = config(Role::Responder, open, open, "192.0.2.1:40000");
    let (ca, cb) = pair(a, b, t0);
    // Signals at 40 ms, probes at 40 ms, acks back at 60 ms.
    assert_eq!(ca.unwrap() - t0, Duration::from_millis(60));
    assert_eq!(cb.unwrap() - t0, Duration::from_millis(60));
}

#[test]
fn prediction_probes_the_ports_after_the_symmetric_peers_srflx_port() {
    let t0 = Instant::now();
    let seq = NatInfo::new(
        NatType::Symmetric,
        Some(PortAllocation::Sequential { step: 2 }),
    );
    let pr = nat(NatType::PortRestrictedCone);
    let c = PunchConfig {
        predicted_ports: 4,
        ..config(Role::Initiator, pr, seq, "198.51.100.9:40000")
    };
    let mut p = Puncher::new(c, t0, 1).unwrap();
    assert_eq!(p.strategy(), Strategy::Predict { step: 2 });
    let now = t0;
    p.handle_timeout(now);
    let primed: Vec<u16> = std::iter::from_fn(|| poll(&mut p, now))
        .map(|t| t.to.port())
        .collect();
    assert_eq!(primed, [40000, 40000, 40002, 40004, 40006, 40008]);
}

#[test]
fn the_birthday_listener_primes_from_every_extra_socket_and_answers_from_the_hit() {
    let t0 = Instant::now();
    let random = nat(NatType::Symmetric);
    let pr = nat(NatType::PortRestrictedCone);
    let peer = addr("198.51.100.9:40000");
    let mut p = Puncher::new(
        config(Role::Responder, random, pr, &peer.to_string()),
        t0,
        1,
    )
    .unwrap();
    assert_eq!(p.strategy(), Strategy::BirthdayListen);
    assert_eq!(events(&mut p), vec![PunchEvent::OpenSockets(256)]);
    // Nothing until the sockets are there.
    assert!(poll(&mut p, t0).is_none());
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    p.handle_sockets_opened(t0, 256);
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    assert!(sent.iter().all(|(_, t)| t.ttl == Some(2)));
    assert_eq!(events(&mut p), vec![PunchEvent::Primed]);
    let to_srflx: Vec<_> = sent.iter().filter(|(_, t)| t.to == peer).collect();
    assert_eq!(to_srflx.len(), 3 * 257);
    let mut sockets: Vec<u16> = to_srflx.iter().map(|(_, t)| t.socket.0).collect();
    sockets.sort_unstable();
    sockets.dedup();
    assert_eq!(sockets, (0..=256).collect::<Vec<_>>());
    // After the peer's signal, only the host candidate gets full probes.
    let now = t0 + Duration::from_millis(30);
    p.handle_peer_primed(now);
    let full: Vec<_> = std::iter::from_fn(|| poll(&mut p, now)).collect();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].to, addr("10.0.0.9:40000"));
    // A random probe finds socket 42: ack and probe back from it.
    p.handle_datagram(
        now,
        SocketIndex(42),
        peer,
        &probe_from_peer(Role::Initiator, 5),
    );
    let out: Vec<_> = std::iter::from_fn(|| poll(&mut p, now)).collect();
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|t| t.socket == SocketIndex(42) && t.to == peer)
    );
    let nonce = decode(&out[1]).nonce;
    let ack = Packet {
        kind: PacketKind::Ack,
        session: SID,
        role: Role::Initiator,
        nonce,
    };
    p.handle_datagram(now, SocketIndex(42), peer, &ack.encode());
    assert_eq!(
        events(&mut p),
        vec![PunchEvent::Connected {
            socket: SocketIndex(42),
            remote: peer
        }]
    );
}

#[test]
fn the_birthday_prober_sends_distinct_random_ports_at_the_bounded_rate() {
    let t0 = Instant::now();
    let random = nat(NatType::Symmetric);
    let pr = nat(NatType::PortRestrictedCone);
    let c = PunchConfig {
        wait_for_peer_primed: false,
        ..config(Role::Initiator, pr, random, "198.51.100.9:40000")
    };
    let mut p = Puncher::new(c, t0, 3).unwrap();
    assert_eq!(p.strategy(), Strategy::BirthdayProbe);
    let sent = run_alone(&mut p, t0, t0 + Duration::from_secs(30));
    let random: Vec<_> = sent
        .iter()
        .filter(|(_, t)| t.to.ip() == addr("198.51.100.9:1").ip() && t.to.port() != 40000)
        .collect();
    assert_eq!(random.len(), 2048);
    assert_eq!(p.stats().random_probes, 2048);
    let mut ports: Vec<u16> = random.iter().map(|(_, t)| t.to.port()).collect();
    assert!(ports.iter().all(|p| *p >= 1024));
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 2048, "distinct");
    let span = random.last().unwrap().0 - random[0].0;
    assert_eq!(span, Duration::from_millis(2047));
    // Every 1 ms at most one.
    for w in random.windows(2) {
        assert!(w[1].0 - w[0].0 >= Duration::from_millis(1));
    }
    assert_eq!(events(&mut p), vec![PunchEvent::Primed, PunchEvent::Failed]);
}

#[test]
fn both_symmetric_gives_up_after_the_bounded_rounds() {
    let t0 = Instant::now();
    let random = nat(NatType::Symmetric);
    let mut p = Puncher::new(
        config(Role::Initiator, random, random, "198.51.100.9:1"),
        t0,
        1,
    )
    .unwrap();
    assert_eq!(p.strategy(), Strategy::BothSymmetric);
    let sent = run_alone(&mut p, t0, t0 + Duration::from_secs(60));
    let s = p.stats();
    assert_eq!((s.primes, s.probes), (6, 100));
    assert_eq!(sent.len(), 106);
    assert!(p.is_done());
    assert_eq!(p.poll_timeout(), None);
    // Primed at 20 ms, 1 s wait, 49 intervals, 1 s final wait.
    let failed_at = Duration::from_millis(20 + 1000 + 4900 + 1000);
    assert_eq!(events(&mut p), vec![PunchEvent::Primed, PunchEvent::Failed]);
    assert!(sent.last().unwrap().0 - t0 < failed_at);
}

#[test]
fn keepalives_flow_and_silence_means_path_lost() {
    let t0 = Instant::now();
    let open = nat(NatType::OpenInternet);
    let c = PunchConfig {
        wait_for_peer_primed: false,
        ..config(Role::Initiator, open, open, "192.0.2.2:40000")
    };
    let mut p = Puncher::new(c, t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0);
    let nonce = decode(&sent[0].1).nonce;
    let remote = addr("192.0.2.2:40000");
    let ack = Packet {
        kind: PacketKind::Ack,
        session: SID,
        role: Role::Responder,
        nonce,
    };
    p.handle_datagram(t0, SocketIndex(0), remote, &ack.encode());
    assert!(p.path().is_some());
    // Chat packets from the peer keep the path alive; keepalives go every 15 s.
    let mut keepalives = 0;
    let mut now = t0;
    while now < t0 + Duration::from_secs(100) {
        now += Duration::from_secs(5);
        p.handle_datagram(now, SocketIndex(0), remote, &[0x81, 0, 0]);
        p.handle_timeout(now);
        keepalives += std::iter::from_fn(|| poll(&mut p, now)).count();
    }
    assert_eq!(keepalives, 6);
    assert!(p.path().is_some());
    let sent = run_alone(&mut p, now, now + Duration::from_secs(60));
    assert_eq!(sent.len(), 3, "keepalives at +105, +120 and +135 s");
    assert_eq!(
        events(&mut p),
        vec![
            PunchEvent::Primed,
            PunchEvent::Connected {
                socket: SocketIndex(0),
                remote
            },
            PunchEvent::PathLost
        ]
    );
}

#[test]
fn bad_configurations_are_refused() {
    let t0 = Instant::now();
    let none = PunchConfig::default();
    assert_eq!(
        Puncher::new(none, t0, 0).err(),
        Some(PunchError::NoCandidates)
    );
    let pr = nat(NatType::PortRestrictedCone);
    let base = config(Role::Initiator, pr, pr, "198.51.100.9:1");
    for bad in [
        PunchConfig {
            probe_interval: Duration::ZERO,
            ..base.clone()
        },
        PunchConfig {
            prime_ttl: 0,
            ..base.clone()
        },
        PunchConfig {
            birthday_ports: 1000..=1999,
            birthday_probes: 1001,
            ..base.clone()
        },
        PunchConfig {
            keepalive_interval: Some(Duration::ZERO),
            ..base.clone()
        },
    ] {
        assert!(matches!(
            Puncher::new(bad, t0, 0),
            Err(PunchError::Invalid(_))
        ));
    }
}

#[test]
fn a_mapped_candidate_is_probed_first_and_plainly() {
    let t0 = Instant::now();
    let sym = nat(NatType::Symmetric);
    let mut c = config(
        Role::Initiator,
        sym,
        NatInfo::reachable_by_mapping(),
        "198.51.100.9:40000",
    );
    c.peer
        .candidates
        .push(Candidate::mapped(addr("198.51.100.9:45000")));
    let mut p = Puncher::new(c, t0, 1).unwrap();
    // Without the mapping this pair would be BothSymmetric and give up.
    assert_eq!(p.strategy(), Strategy::Plain);
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(100));
    assert_eq!(sent[0].1.to, addr("198.51.100.9:45000"), "{sent:?}");
}

/// A config whose peer offers an IPv6 host address besides its IPv4 ones.
fn dual_stack_config() -> PunchConfig {
    let pr = nat(NatType::PortRestrictedCone);
    let mut c = PunchConfig {
        wait_for_peer_primed: false,
        ..config(Role::Responder, pr, pr, "198.51.100.9:40000")
    };
    c.peer
        .candidates
        .push(Candidate::host(addr("[2001:db8:1:2::2]:40000")));
    c
}

fn ack(nonce: u64) -> Vec<u8> {
    Packet {
        kind: PacketKind::Ack,
        session: SID,
        role: Role::Initiator,
        nonce,
    }
    .encode()
}

/// The nonce of the last datagram sent to `to`.
fn last_nonce_to(sent: &[(Instant, Sent)], to: SocketAddr) -> u64 {
    let (_, s) = sent.iter().rev().find(|(_, s)| s.to == to).unwrap();
    decode(s).nonce
}

#[test]
fn ipv6_candidates_go_first_and_only_with_ipv6_of_our_own() {
    let t0 = Instant::now();
    let v6 = addr("[2001:db8:1:2::2]:40000");
    let mut p = Puncher::new(dual_stack_config(), t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    assert_eq!(sent[0].1.to, v6, "primed first: {sent:?}");
    assert_eq!(sent[0].1.ttl, Some(2), "primed like any target");
    let probes: Vec<SocketAddr> = sent
        .iter()
        .filter(|(_, s)| s.ttl.is_none())
        .map(|(_, s)| s.to)
        .collect();
    assert_eq!(probes[0], v6, "probed first: {probes:?}");
    assert_eq!(probes.len(), 3, "{probes:?}");

    let without = PunchConfig {
        ipv6: false,
        ..dual_stack_config()
    };
    let mut p = Puncher::new(without, t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    assert!(sent.iter().all(|(_, s)| s.to.is_ipv4()), "{sent:?}");
    assert!(!sent.is_empty());

    let mut only_v6 = PunchConfig {
        ipv6: false,
        ..dual_stack_config()
    };
    only_v6.peer.candidates.retain(|c| c.addr.is_ipv6());
    assert_eq!(
        Puncher::new(only_v6, t0, 1).err(),
        Some(PunchError::NoCandidates)
    );
}

#[test]
fn an_ipv4_path_waits_for_ipv6_which_wins_if_it_answers_in_time() {
    let t0 = Instant::now();
    let (v4, v6) = (addr("198.51.100.9:40000"), addr("[2001:db8:1:2::2]:40000"));
    let mut p = Puncher::new(dual_stack_config(), t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    let now = t0 + Duration::from_millis(30);
    events(&mut p);
    p.handle_datagram(now, SocketIndex(0), v4, &ack(last_nonce_to(&sent, v4)));
    assert_eq!(events(&mut p), vec![], "IPv4 held back");
    assert!(p.path().is_none());
    assert!(p.poll_timeout().unwrap() <= now + Duration::from_millis(500));
    let later = now + Duration::from_millis(200);
    p.handle_datagram(later, SocketIndex(0), v6, &ack(last_nonce_to(&sent, v6)));
    assert_eq!(
        events(&mut p),
        vec![PunchEvent::Connected {
            socket: SocketIndex(0),
            remote: v6
        }]
    );
    assert_eq!(p.path(), Some((SocketIndex(0), v6)));
}

#[test]
fn without_an_ipv6_answer_the_ipv4_path_is_taken_after_the_wait() {
    let t0 = Instant::now();
    let v4 = addr("198.51.100.9:40000");
    let mut p = Puncher::new(dual_stack_config(), t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    let now = t0 + Duration::from_millis(30);
    events(&mut p);
    p.handle_datagram(now, SocketIndex(0), v4, &ack(last_nonce_to(&sent, v4)));
    // Probing goes on while it waits; at the end of the wait, IPv4 it is.
    let more = run_alone(&mut p, now, now + Duration::from_millis(499));
    assert!(!more.is_empty(), "probing went on");
    assert!(p.path().is_none());
    assert!(p.poll_timeout().unwrap() <= now + Duration::from_millis(500));
    p.handle_timeout(now + Duration::from_millis(500));
    assert_eq!(
        events(&mut p),
        vec![PunchEvent::Connected {
            socket: SocketIndex(0),
            remote: v4
        }]
    );
    // Without IPv6 candidates an IPv4 ack connects at once, as it always did.
    let mut c = dual_stack_config();
    c.peer.candidates.retain(|c| c.addr.is_ipv4());
    let mut p = Puncher::new(c, t0, 1).unwrap();
    let sent = run_alone(&mut p, t0, t0 + Duration::from_millis(30));
    events(&mut p);
    p.handle_datagram(now, SocketIndex(0), v4, &ack(last_nonce_to(&sent, v4)));
    assert_eq!(events(&mut p).len(), 1);
    assert_eq!(p.path(), Some((SocketIndex(0), v4)));
}
