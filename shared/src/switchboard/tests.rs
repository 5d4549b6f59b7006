// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::rendezvous::{SessionId, Ticket, UserName};

const SID: SessionId = SessionId([0x51; 16]);
const OTHER_SID: SessionId = SessionId([0x52; 16]);
const TA: [u8; 16] = [0xa1; 16];
const TB: [u8; 16] = [0xb1; 16];
const A: SbConnId = SbConnId(1);
const B: SbConnId = SbConnId(2);
const C: SbConnId = SbConnId(3);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn name(n: &str) -> UserName {
    UserName::parse(n).unwrap()
}

fn ticket(value: [u8; 16], session: SessionId, user: &str, peer: &str, expires: Instant) -> Ticket {
    Ticket {
        value,
        session,
        user: name(user),
        peer: name(peer),
        expires,
    }
}

/// A switchboard with fake time and both tickets of `SID` granted (valid for 60 s).
struct Harness {
    sb: Switchboard,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(SwitchboardConfig::default())
    }

    fn with(config: SwitchboardConfig) -> Harness {
        let now = Instant::now();
        let mut sb = Switchboard::new(config).unwrap();
        sb.handle_ticket(ticket(TA, SID, "alice", "bob", now + secs(60)));
        sb.handle_ticket(ticket(TB, SID, "bob", "alice", now + secs(60)));
        Harness { sb, now }
    }

    fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.now += d;
        self.sb.handle_timeout(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.sb.poll_output()).collect()
    }

    fn join(&mut self, conn: SbConnId, session: SessionId, ticket: [u8; 16]) -> Vec<Output> {
        self.sb.handle_connected(self.now, conn);
        let join = Frame::Join {
            version: VERSION,
            session,
            ticket,
        };
        self.sb.handle_frame(self.now, conn, join);
        self.drain()
    }

    fn frame(&mut self, conn: SbConnId, frame: Frame) -> Vec<Output> {
        self.sb.handle_frame(self.now, conn, frame);
        self.drain()
    }

    fn data(&mut self, conn: SbConnId, payload: &[u8]) -> Vec<Output> {
        self.frame(conn, Frame::Data(Bytes::copy_from_slice(payload)))
    }

    /// Both peers joined.
    fn relaying() -> Harness {
        let mut h = Harness::new();
        h.join(A, SID, TA);
        h.join(B, SID, TB);
        h
    }
}

fn send(conn: SbConnId, frame: Frame) -> Output {
    Output::Send { conn, frame }
}

fn data(payload: &[u8]) -> Frame {
    Frame::Data(Bytes::copy_from_slice(payload))
}

fn error_then_close(conn: SbConnId, code: ErrorCode) -> impl Fn(&[Output]) -> bool {
    move |out: &[Output]| {
        matches!(out, [Output::Send { conn: c, frame: Frame::Error { code: got, .. } }, Output::Close(c2)]
                 if *c == conn && *c2 == conn && *got == code)
    }
}

#[test]
fn both_join_then_data_flows_both_ways_byte_exact() {
    let mut h = Harness::new();
    let out = h.join(A, SID, TA);
    assert_eq!(
        out,
        [send(
            A,
            Frame::Joined {
                peer_present: false
            }
        )]
    );
    let out = h.join(B, SID, TB);
    assert_eq!(
        out,
        [
            send(B, Frame::Joined { peer_present: true }),
            send(A, Frame::PeerJoined)
        ]
    );
    let payload: Vec<u8> = (0..=255).collect();
    assert_eq!(h.data(A, &payload), [send(B, data(&payload))]);
    assert_eq!(h.data(B, b""), [send(A, data(b""))]);
    assert_eq!(h.data(B, b"pong"), [send(A, data(b"pong"))]);
    let stats = *h.sb.stats();
    assert_eq!(stats.joins, 2);
    assert_eq!(stats.sessions_started, 1);
    assert_eq!(stats.relayed_frames, 3);
    assert_eq!(stats.relayed_bytes, 260);
    assert_eq!(h.sb.ticket_count(), 0);
}

#[test]
fn data_before_the_peer_joins_is_buffered_up_to_the_bound() {
    let mut h = Harness::with(SwitchboardConfig {
        early_buffer: 10,
        ..SwitchboardConfig::default()
    });
    h.join(A, SID, TA);
    assert!(h.data(A, b"12345").is_empty());
    assert!(h.data(A, b"678901").is_empty(), "over the bound: dropped");
    assert!(h.data(A, b"67890").is_empty());
    assert_eq!(h.sb.stats().early_dropped, 1);
    let out = h.join(B, SID, TB);
    assert_eq!(
        out,
        [
            send(B, Frame::Joined { peer_present: true }),
            send(B, data(b"12345")),
            send(B, data(b"67890")),
            send(A, Frame::PeerJoined),
        ]
    );
}

#[test]
fn unknown_ticket_is_refused() {
    let mut h = Harness::new();
    let out = h.join(A, SID, [0xee; 16]);
    assert!(
        error_then_close(A, ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
    assert_eq!(h.sb.stats().joins_refused, 1);
    assert_eq!(h.sb.connection_count(), 0);
    // Frames after the close are ignored.
    assert!(h.data(A, b"x").is_empty());
}

#[test]
fn a_ticket_for_another_session_is_refused_and_burnt() {
    let mut h = Harness::new();
    let out = h.join(A, OTHER_SID, TA);
    assert!(
        error_then_close(A, ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
    // Burnt: the right session id no longer helps, and the session is gone.
    let out = h.join(C, SID, TA);
    assert!(
        error_then_close(C, ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
    assert_eq!(h.sb.session_count(), 0);
    let out = h.join(B, SID, TB);
    assert!(
        error_then_close(B, ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
}

#[test]
fn a_ticket_cannot_be_reused_after_a_disconnect() {
    let mut h = Harness::relaying();
    h.sb.handle_disconnected(h.now, A);
    assert_eq!(h.drain(), [send(B, Frame::PeerLeft), Output::Close(B)]);
    assert_eq!(h.sb.stats().sessions_ended, 1);
    let out = h.join(SbConnId(10), SID, TA);
    assert!(
        error_then_close(SbConnId(10), ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
    // The closed connection's late reports are ignored.
    h.sb.handle_disconnected(h.now, B);
    assert!(h.drain().is_empty());
}

#[test]
fn a_third_connection_with_a_used_ticket_is_refused_and_the_session_goes_on() {
    let mut h = Harness::relaying();
    let out = h.join(C, SID, TA);
    assert!(
        error_then_close(C, ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
    assert_eq!(h.data(A, b"still here"), [send(B, data(b"still here"))]);
}

#[test]
fn an_expired_ticket_is_refused() {
    let mut h = Harness::new();
    h.now += secs(60);
    let out = h.join(A, SID, TA);
    assert!(
        error_then_close(A, ErrorCode::TICKET_REFUSED)(&out),
        "{out:?}"
    );
}

#[test]
fn expired_tickets_are_purged() {
    let mut h = Harness::new();
    assert_eq!(h.sb.ticket_count(), 2);
    assert!(h.sb.poll_timeout().unwrap() <= h.now + secs(60));
    assert!(h.advance(secs(60)).is_empty());
    assert_eq!(h.sb.ticket_count(), 0);
    assert_eq!(h.sb.session_count(), 0);
    assert_eq!(h.sb.stats().tickets_expired, 2);
    assert_eq!(h.sb.poll_timeout(), None);
}

#[test]
fn no_join_in_time_closes() {
    let mut h = Harness::new();
    h.sb.handle_connected(h.now, C);
    assert!(h.sb.poll_timeout().unwrap() <= h.now + secs(10));
    assert!(h.advance(secs(9)).is_empty());
    let out = h.advance(secs(1));
    assert!(
        error_then_close(C, ErrorCode::JOIN_TIMEOUT)(&out),
        "{out:?}"
    );
    assert_eq!(h.sb.stats().join_timeouts, 1);
}

#[test]
fn only_join_is_allowed_first_and_only_once() {
    let mut h = Harness::new();
    h.sb.handle_connected(h.now, C);
    let out = h.data(C, b"hi");
    assert!(error_then_close(C, ErrorCode::UNEXPECTED)(&out), "{out:?}");
    let mut h = Harness::relaying();
    let again = Frame::Join {
        version: VERSION,
        session: SID,
        ticket: TB,
    };
    let out = h.frame(B, again);
    assert!(
        matches!(
            &out[..],
            [
                Output::Send {
                    conn: B,
                    frame: Frame::Error {
                        code: ErrorCode::UNEXPECTED,
                        ..
                    }
                },
                Output::Close(B),
                Output::Send {
                    conn: A,
                    frame: Frame::PeerLeft
                },
                Output::Close(A)
            ] | [
                Output::Send {
                    conn: A,
                    frame: Frame::PeerLeft
                },
                Output::Close(A),
                Output::Send {
                    conn: B,
                    frame: Frame::Error {
                        code: ErrorCode::UNEXPECTED,
                        ..
                    }
                },
                Output::Close(B)
            ]
        ),
        "{out:?}"
    );
    let mut h = Harness::relaying();
    let out = h.frame(A, Frame::PeerJoined);
    assert!(out.contains(&send(B, Frame::PeerLeft)), "{out:?}");
}

#[test]
fn a_wrong_version_is_refused_without_burning_the_ticket() {
    let mut h = Harness::new();
    h.sb.handle_connected(h.now, C);
    let join = Frame::Join {
        version: 9,
        session: SID,
        ticket: TA,
    };
    let out = h.frame(C, join);
    assert!(error_then_close(C, ErrorCode::BAD_VERSION)(&out), "{out:?}");
    assert_eq!(h.join(A, SID, TA).len(), 1);
}

#[test]
fn frame_errors_close_with_the_matching_code() {
    let mut h = Harness::relaying();
    h.sb.handle_frame_error(h.now, A, WireError::TooLarge(70_000));
    let out = h.drain();
    assert!(out.contains(&send(B, Frame::PeerLeft)), "{out:?}");
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { conn: A, frame: Frame::Error { code, .. } } if *code == ErrorCode::TOO_LARGE)),
        "{out:?}"
    );
    let mut h = Harness::new();
    h.sb.handle_connected(h.now, C);
    h.sb.handle_frame_error(h.now, C, WireError::UnknownType(9));
    let out = h.drain();
    assert!(error_then_close(C, ErrorCode::BAD_FRAME)(&out), "{out:?}");
    assert_eq!(h.sb.stats().bad_frames, 1);
}

#[test]
fn the_rate_limit_drops_excess_frames_and_keeps_the_session() {
    let mut h = Harness::with(SwitchboardConfig {
        rate: 1000,
        burst: 1000,
        max_data: 1000,
        ..SwitchboardConfig::default()
    });
    h.join(A, SID, TA);
    h.join(B, SID, TB);
    let passed = (0..10).filter(|_| !h.data(A, &[7; 500]).is_empty()).count();
    assert_eq!(passed, 2, "the burst");
    assert_eq!(h.sb.stats().rate_dropped, 8);
    // The other direction has its own bucket.
    assert_eq!(h.data(B, &[1; 1000]).len(), 1);
    h.now += Duration::from_millis(500);
    assert_eq!(h.data(A, &[7; 500]).len(), 1, "500 ms refills 500 bytes");
    assert!(h.data(A, &[7; 1]).is_empty());
    assert_eq!(h.sb.session_count(), 1);
}

#[test]
fn the_byte_cap_ends_the_session() {
    let mut h = Harness::with(SwitchboardConfig {
        byte_cap: 1000,
        ..SwitchboardConfig::default()
    });
    h.join(A, SID, TA);
    h.join(B, SID, TB);
    assert_eq!(h.data(A, &[1; 600]).len(), 1);
    assert_eq!(h.data(B, &[2; 400]).len(), 1, "exactly the cap is allowed");
    let out = h.data(A, &[3; 1]);
    assert_eq!(out.len(), 4, "{out:?}");
    for conn in [A, B] {
        assert!(out.contains(&Output::Close(conn)));
        assert!(out.contains(&send(
            conn,
            Frame::error(ErrorCode::BYTE_CAP, "byte cap reached")
        )));
    }
    assert_eq!(h.sb.stats().byte_cap_reached, 1);
    assert_eq!(h.sb.connection_count(), 0);
}

#[test]
fn an_idle_session_ends_and_traffic_keeps_it_alive() {
    let mut h = Harness::relaying();
    assert!(h.advance(secs(100)).is_empty());
    h.data(A, b"keepalive");
    assert!(
        h.advance(secs(100)).is_empty(),
        "200 s in, 100 s after the last DATA"
    );
    let out = h.advance(secs(20));
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(out.contains(&send(A, Frame::error(ErrorCode::IDLE, "session idle"))));
    assert_eq!(h.sb.stats().idle_timeouts, 1);
    assert_eq!(h.sb.poll_timeout(), None);
}

#[test]
fn the_first_peer_waits_only_so_long() {
    let mut h = Harness::with(SwitchboardConfig {
        peer_wait_timeout: secs(30),
        ..SwitchboardConfig::default()
    });
    h.join(A, SID, TA);
    assert!(h.advance(secs(29)).is_empty());
    let out = h.advance(secs(1));
    assert!(
        error_then_close(A, ErrorCode::PEER_TIMEOUT)(&out),
        "{out:?}"
    );
    assert_eq!(h.sb.stats().peer_timeouts, 1);
    assert_eq!(
        h.sb.ticket_count(),
        0,
        "the unused ticket is gone with its session"
    );
}

#[test]
fn the_wait_ends_when_the_peers_ticket_expires() {
    let mut h = Harness::new();
    h.advance(secs(50));
    h.join(A, SID, TA);
    let out = h.advance(secs(10));
    assert!(
        error_then_close(A, ErrorCode::PEER_TIMEOUT)(&out),
        "{out:?}"
    );
}

#[test]
fn grants_that_would_admit_a_third_user_are_refused() {
    let now = Instant::now();
    let mut h = Harness::new();
    let refused = [
        ticket(TA, SID, "alice", "bob", now + secs(60)), // duplicate value
        ticket([1; 16], SID, "alice", "bob", now + secs(60)), // alice already has one
        ticket([2; 16], SID, "carol", "alice", now + secs(60)), // not in the session
        ticket([3; 16], OTHER_SID, "dave", "dave", now + secs(60)), // with oneself
    ];
    for t in refused {
        h.sb.handle_ticket(t);
    }
    assert_eq!(h.sb.stats().grants_refused, 4);
    assert_eq!(h.sb.ticket_count(), 2);
}

#[test]
fn shutdown_tells_everyone() {
    let mut h = Harness::relaying();
    h.sb.handle_connected(h.now, C);
    h.sb.handle_shutdown(h.now);
    let out = h.drain();
    for conn in [A, B, C] {
        assert!(out.contains(&send(
            conn,
            Frame::error(ErrorCode::SHUTDOWN, "shutting down")
        )));
        assert!(out.contains(&Output::Close(conn)));
    }
    assert_eq!(h.sb.connection_count(), 0);
}

#[test]
fn invalid_configs_are_refused() {
    let bad = SwitchboardConfig {
        max_data: MAX_DATA + 1,
        ..SwitchboardConfig::default()
    };
    assert_eq!(
        bad.validate(),
        Err(ConfigError::MaxDataTooLarge(MAX_DATA + 1))
    );
    let bad = SwitchboardConfig {
        burst: 100,
        ..SwitchboardConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(ConfigError::BurstTooSmall { .. })
    ));
    let unlimited = SwitchboardConfig {
        rate: 0,
        burst: 0,
        ..SwitchboardConfig::default()
    };
    assert_eq!(unlimited.validate(), Ok(()));
}

/// One step of a random scenario.
#[derive(Clone, Debug)]
enum Step {
    Connect(u8),
    Join(u8, u8, u8),
    Data(u8, usize),
    Other(u8, u8),
    Bad(u8),
    Disconnect(u8),
    Advance(u16),
    Grant(u8, u8, u8),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..6).prop_map(Step::Connect),
        (0u8..6, 0u8..3, 0u8..6).prop_map(|(c, s, t)| Step::Join(c, s, t)),
        (0u8..6, 0usize..2000).prop_map(|(c, n)| Step::Data(c, n)),
        (0u8..6, 0u8..4).prop_map(|(c, k)| Step::Other(c, k)),
        (0u8..6).prop_map(Step::Bad),
        (0u8..6).prop_map(Step::Disconnect),
        (0u16..30_000).prop_map(Step::Advance),
        (0u8..6, 0u8..3, 0u8..4).prop_map(|(t, s, u)| Step::Grant(t, s, u)),
    ]
}

proptest! {
    /// Whatever the order of events, the core never panics, never sends to a connection it has
    /// not been given or has closed, and relays only between two joined connections.
    #[test]
    fn random_scenarios_keep_the_invariants(steps in proptest::collection::vec(arb_step(), 1..80)) {
        let config = SwitchboardConfig {
            rate: 5000,
            burst: 5000,
            max_data: 1500,
            byte_cap: 20_000,
            early_buffer: 3000,
            ..SwitchboardConfig::default()
        };
        let mut h = Harness::with(config);
        let users = ["alice", "bob", "carol", "dave"];
        let sids = [SID, OTHER_SID, SessionId([0x53; 16])];
        let mut open: HashSet<SbConnId> = HashSet::new();
        let mut ever: HashSet<SbConnId> = HashSet::new();
        let mut next_conn = 100u64;
        let mut conn_of = [SbConnId(0); 6];
        for step in steps {
            match step {
                Step::Connect(i) => {
                    next_conn += 1;
                    let conn = SbConnId(next_conn);
                    conn_of[usize::from(i)] = conn;
                    h.sb.handle_connected(h.now, conn);
                    open.insert(conn);
                    ever.insert(conn);
                }
                Step::Join(i, s, t) => {
                    let ticket = [TA, TB, [1; 16], [2; 16], [3; 16], [4; 16]][usize::from(t)];
                    let join = Frame::Join { version: VERSION, session: sids[usize::from(s)], ticket };
                    h.sb.handle_frame(h.now, conn_of[usize::from(i)], join);
                }
                Step::Data(i, n) => {
                    h.sb.handle_frame(h.now, conn_of[usize::from(i)], Frame::Data(vec![0; n].into()));
                }
                Step::Other(i, k) => {
                    let frame = [Frame::PeerJoined, Frame::PeerLeft, Frame::Joined { peer_present: true },
                                 Frame::error(ErrorCode(1), "x")][usize::from(k)].clone();
                    h.sb.handle_frame(h.now, conn_of[usize::from(i)], frame);
                }
                Step::Bad(i) => h.sb.handle_frame_error(h.now, conn_of[usize::from(i)], WireError::Empty),
                Step::Disconnect(i) => {
                    h.sb.handle_disconnected(h.now, conn_of[usize::from(i)]);
                    open.remove(&conn_of[usize::from(i)]);
                }
                Step::Advance(ms) => {
                    h.now += Duration::from_millis(u64::from(ms) * 10);
                    h.sb.handle_timeout(h.now);
                }
                Step::Grant(t, s, u) => {
                    let value = [TA, TB, [1; 16], [2; 16], [3; 16], [4; 16]][usize::from(t)];
                    let user = users[usize::from(u)];
                    let peer = users[(usize::from(u) + 1) % 4];
                    h.sb.handle_ticket(ticket(value, sids[usize::from(s)], user, peer, h.now + secs(60)));
                }
            }
            for out in h.drain() {
                match out {
                    Output::Send { conn, .. } => prop_assert!(open.contains(&conn), "send to {conn}"),
                    Output::Close(conn) => {
                        prop_assert!(ever.contains(&conn));
                        open.remove(&conn);
                    }
                }
            }
            prop_assert!(h.sb.connection_count() <= open.len());
            if let Some(t) = h.sb.poll_timeout() {
                prop_assert!(h.sb.connection_count() + h.sb.session_count() > 0 || t >= h.now);
            }
        }
    }
}
