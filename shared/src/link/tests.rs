//! Two link cores joined by a relay that delivers at once, in virtual time: the relayed path,
//! messages and their acknowledgements, the end rules. The simulator (tests/tests/sim_link.rs)
//! runs them over NATs.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::chat::StaticKeypair;
use crate::rendezvous::SessionId;

use super::*;

fn switchboard() -> SocketAddr {
    "192.0.2.1:1865".parse().unwrap()
}

/// A and B, relay only, their relay joined with the peer present.
fn pair(t0: Instant) -> [LinkCore; 2] {
    let keys = [
        StaticKeypair::from_random_bytes([0x11; 32]).unwrap(),
        StaticKeypair::from_random_bytes([0x22; 32]).unwrap(),
    ];
    let sid = SessionId([9; 16]);
    [0, 1].map(|i| {
        let intro = Introduction {
            sid,
            initiator: i == 0,
            peer_key: keys[1 - i].public.0,
            candidates: Vec::new(),
            peer_nat: Default::default(),
            start: t0,
            relay: Some(switchboard()),
        };
        let mut config = LinkCoreConfig::new(keys[i].secret.clone(), [i as u8; 32]);
        config.punch = false;
        let mut core = LinkCore::new(config, &intro, t0).unwrap();
        assert_eq!(core.poll_command(), Some(LinkCommand::JoinRelay(sid)));
        core.handle_relay_joined(t0, true);
        core
    })
}

/// Moves relay frames between the two (instantly) and collects events, stepping time to the
/// next timer, until `done` or `limit`.
fn run(
    cores: &mut [LinkCore; 2],
    now: &mut Instant,
    limit: Instant,
    events: &mut [Vec<LinkCoreEvent>; 2],
    done: impl Fn(&[Vec<LinkCoreEvent>; 2]) -> bool,
) {
    while *now <= limit && !done(events) {
        let mut moved = false;
        for i in 0..2 {
            while let Some(t) = cores[i].poll_transmit(*now) {
                assert_eq!(t.destination, Destination::Relay, "relay only");
                cores[1 - i].handle_relay_data(*now, &t.data);
                moved = true;
            }
            while let Some(e) = cores[i].poll_event() {
                events[i].push(e);
                moved = true;
            }
        }
        if moved {
            continue;
        }
        let Some(next) = cores.iter().filter_map(LinkCore::poll_timeout).min() else {
            break;
        };
        *now = next.max(*now);
        for core in cores.iter_mut() {
            core.handle_timeout(*now);
        }
    }
}

#[test]
fn relayed_messages_arrive_in_order_and_the_link_ends_cleanly() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut cores = pair(t0);
    let mut events = [Vec::new(), Vec::new()];
    for n in 1..=50u64 {
        cores[0].send_message(now, n, n.to_be_bytes().to_vec());
    }
    cores[0].finish(now);
    let limit = t0 + Duration::from_secs(30);
    run(&mut cores, &mut now, limit, &mut events, |e| {
        e[0].iter().any(|e| matches!(e, LinkCoreEvent::Ended(_)))
    });
    let received: Vec<u64> = events[1]
        .iter()
        .filter_map(|e| match e {
            LinkCoreEvent::Message(b) => Some(u64::from_be_bytes(b[..].try_into().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(received, (1..=50).collect::<Vec<_>>());
    let relayed = LinkCoreEvent::Path(PathChange {
        kind: PathKind::Relayed,
        remote: switchboard(),
    });
    assert_eq!(events[0].first(), Some(&relayed));
    assert!(events[0].contains(&LinkCoreEvent::Delivered(50)));
    assert_eq!(cores[0].end(), Some(&LinkEnd::Done));
    assert!(now >= t0 + cores[0].config.linger, "lingered");
    assert_eq!(cores[0].close(now), Ok(()));
    // The goodbye ends the peer's side too.
    while let Some(t) = cores[0].poll_transmit(now) {
        cores[1].handle_relay_data(now, &t.data);
    }
    assert_eq!(cores[1].end(), Some(&LinkEnd::PeerLeft));
    assert_eq!(
        cores[0].poll_timeout(),
        None,
        "no more timers after the end"
    );
}

#[test]
fn an_abort_reports_what_was_not_acknowledged_and_too_long_is_refused_at_once() {
    let t0 = Instant::now();
    let mut cores = pair(t0);
    cores[0].send_message(t0, 1, vec![0; crate::chat::MAX_MESSAGE_LEN + 1]);
    assert_eq!(
        std::iter::from_fn(|| cores[0].poll_event())
            .find(|e| matches!(e, LinkCoreEvent::Undelivered { .. })),
        Some(LinkCoreEvent::Undelivered {
            number: 1,
            bytes: vec![0; crate::chat::MAX_MESSAGE_LEN + 1],
            reason: UndeliveredReason::TooLong,
        })
    );
    cores[0].send_message(t0, 2, b"never acked".to_vec());
    cores[0].abort(t0);
    assert_eq!(cores[0].end(), Some(&LinkEnd::Interrupted));
    assert_eq!(cores[0].close(t0), Err(LinkFailure::Undelivered(2)));
    let undelivered: Vec<_> = std::iter::from_fn(|| cores[0].poll_event())
        .filter_map(|e| match e {
            LinkCoreEvent::Undelivered { number, reason, .. } => Some((number, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(undelivered, [(2, UndeliveredReason::Interrupted)]);
}

#[test]
fn without_relay_or_punching_there_is_no_path() {
    let t0 = Instant::now();
    let keys = StaticKeypair::from_random_bytes([0x33; 32]).unwrap();
    let intro = Introduction {
        sid: SessionId([1; 16]),
        initiator: true,
        peer_key: keys.public.0,
        candidates: Vec::new(),
        peer_nat: Default::default(),
        start: t0,
        relay: None,
    };
    let mut config = LinkCoreConfig::new(keys.secret.clone(), [0; 32]);
    config.punch = false;
    let core = LinkCore::new(config, &intro, t0).unwrap();
    assert!(matches!(
        core.end(),
        Some(LinkEnd::Failed(LinkFailure::NoPath(_)))
    ));
}
