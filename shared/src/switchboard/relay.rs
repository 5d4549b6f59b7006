//! The switchboard state machine: tickets, connections, sessions.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use bytes::Bytes;

use super::limits::TokenBucket;
use super::wire::{ErrorCode, Frame, VERSION, WireError};
use super::{ConfigError, Output, SbConnId, SwitchboardConfig, SwitchboardStats};
use crate::rendezvous::{SessionId, Ticket, UserName};

/// A hasher for keys nobody outside chooses: connection ids (numbered by the driver) and session
/// ids (16 random bytes from the rendezvous). The DATA path looks both up for every frame, so
/// this skips SipHash. Tickets, which clients present, stay in a SipHash map.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing spreads sequential ids over the high bits the table uses.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// One of the two users of a session.
#[derive(Debug)]
struct Slot {
    user: UserName,
    /// The unredeemed ticket and its expiry: `None` before it is granted or once redeemed.
    ticket: Option<([u8; 16], Instant)>,
    /// The connection, once joined.
    conn: Option<SbConnId>,
}

#[derive(Debug)]
enum Phase {
    /// Tickets granted, nobody joined yet.
    Granted,
    /// One peer joined; DATA from it is buffered for the other.
    Waiting {
        deadline: Instant,
        early: VecDeque<Bytes>,
        early_len: usize,
    },
    /// Both joined; DATA is relayed.
    Relaying { last_activity: Instant },
}

#[derive(Debug)]
struct Session {
    slots: [Slot; 2],
    phase: Phase,
    /// Per sending side.
    buckets: [TokenBucket; 2],
    /// Payload bytes accepted for relaying, both directions.
    relayed: u64,
}

/// How a session ends.
enum End {
    /// Side `side` left. It gets `notice` (if any) and is closed unless it is already gone; the
    /// other side gets `PEER_LEFT` and is closed.
    Left {
        side: usize,
        notice: Option<Frame>,
        gone: bool,
    },
    /// Both sides get this error and are closed.
    Error(ErrorCode, &'static str),
}

/// The switchboard: which tickets are valid, who is connected, which sessions relay.
///
/// See the [module docs](super) for the rules and the order in which a driver calls it.
#[derive(Debug)]
pub struct Switchboard {
    config: SwitchboardConfig,
    /// Unredeemed ticket values and the session each belongs to.
    tickets: HashMap<[u8; 16], SessionId>,
    sessions: IdMap<SessionId, Session>,
    /// Connections that have not sent `JOIN` yet, with their deadline.
    pending: IdMap<SbConnId, Instant>,
    /// Joined connections: their session and side.
    joined: IdMap<SbConnId, (SessionId, usize)>,
    out: VecDeque<Output>,
    /// No deadline is earlier than this. Activity only moves deadlines later, so this is kept
    /// as a lower bound in O(1) and made exact by the scan in `handle_timeout`.
    next_check: Option<Instant>,
    stats: SwitchboardStats,
}

impl Switchboard {
    /// A switchboard with no tickets and no connections.
    pub fn new(config: SwitchboardConfig) -> Result<Switchboard, ConfigError> {
        config.validate()?;
        Ok(Switchboard {
            config,
            tickets: HashMap::new(),
            sessions: IdMap::default(),
            pending: IdMap::default(),
            joined: IdMap::default(),
            out: VecDeque::new(),
            next_check: None,
            stats: SwitchboardStats::default(),
        })
    }

    /// A ticket the rendezvous issued. Tickets already expired are refused at `JOIN` and purged
    /// by [`handle_timeout`](Self::handle_timeout).
    pub fn handle_ticket(&mut self, ticket: Ticket) {
        let Ticket {
            value,
            session,
            user,
            peer,
            expires,
        } = ticket;
        if self.tickets.len() >= self.config.max_tickets
            || self.tickets.contains_key(&value)
            || user == peer
        {
            self.stats.grants_refused += 1;
            return;
        }
        let entry = (value, expires);
        match self.sessions.get_mut(&session) {
            None => {
                let slot = |user, ticket| Slot {
                    user,
                    ticket,
                    conn: None,
                };
                let buckets = self.bucket();
                self.sessions.insert(
                    session,
                    Session {
                        slots: [slot(user, Some(entry)), slot(peer, None)],
                        phase: Phase::Granted,
                        buckets: [buckets.clone(), buckets],
                        relayed: 0,
                    },
                );
            }
            Some(s) => {
                let Some(side) = s.slots.iter().position(|slot| slot.user == user) else {
                    self.stats.grants_refused += 1;
                    return;
                };
                let slot = &s.slots[side];
                if s.slots[1 - side].user != peer || slot.ticket.is_some() || slot.conn.is_some() {
                    self.stats.grants_refused += 1;
                    return;
                }
                s.slots[side].ticket = Some(entry);
            }
        }
        self.tickets.insert(value, session);
        self.stats.tickets_granted += 1;
        self.check_by(expires);
    }

    /// A new TCP connection. It must send `JOIN` within the join timeout.
    pub fn handle_connected(&mut self, now: Instant, conn: SbConnId) {
        if self.joined.contains_key(&conn) {
            return;
        }
        let deadline = now + self.config.join_timeout;
        self.pending.insert(conn, deadline);
        self.stats.connections += 1;
        self.check_by(deadline);
    }

    /// One decoded frame from `conn`. Frames from connections the core has closed are ignored.
    pub fn handle_frame(&mut self, now: Instant, conn: SbConnId, frame: Frame) {
        if let Some(&(session, side)) = self.joined.get(&conn) {
            match frame {
                Frame::Data(payload) => self.on_data(now, session, side, payload),
                _ => self.on_bad_frame(conn, ErrorCode::UNEXPECTED, "unexpected frame"),
            }
        } else if self.pending.contains_key(&conn) {
            match frame {
                Frame::Join {
                    version,
                    session,
                    ticket,
                } => self.on_join(now, conn, version, session, ticket),
                _ => self.on_bad_frame(conn, ErrorCode::UNEXPECTED, "JOIN first"),
            }
        }
    }

    /// Bytes from `conn` that [`wire::decode`](super::wire::decode) refused. The connection is
    /// answered with `ERROR` and closed (and its session, if any, ends).
    pub fn handle_frame_error(&mut self, _now: Instant, conn: SbConnId, error: WireError) {
        match error {
            WireError::TooLarge(_) => self.on_bad_frame(conn, ErrorCode::TOO_LARGE, "too large"),
            _ => self.on_bad_frame(conn, ErrorCode::BAD_FRAME, "malformed frame"),
        }
    }

    /// The TCP connection is gone (also for connections the core has closed: those are
    /// ignored). Its session ends and the other peer gets `PEER_LEFT`.
    pub fn handle_disconnected(&mut self, _now: Instant, conn: SbConnId) {
        if self.pending.remove(&conn).is_some() {
            return;
        }
        if let Some(&(session, side)) = self.joined.get(&conn) {
            let end = End::Left {
                side,
                notice: None,
                gone: true,
            };
            self.end_session(session, end);
        }
    }

    /// Timers: join timeouts, idle sessions, peers that do not come, expired tickets. Cheap to
    /// call early: it does nothing before [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_check.is_none_or(|t| now < t) {
            return;
        }
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));

        let late: Vec<SbConnId> = self
            .pending
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in late {
            self.pending.remove(&conn);
            self.stats.join_timeouts += 1;
            self.send(
                conn,
                Frame::error(ErrorCode::JOIN_TIMEOUT, "no JOIN in time"),
            );
            self.out.push_back(Output::Close(conn));
        }
        self.pending.values().for_each(|d| earliest(*d));

        let mut ended = Vec::new();
        for (id, session) in &mut self.sessions {
            // A ticket that expires unused means its user can never join: the session is over.
            let mut lost = false;
            for slot in &mut session.slots {
                if let Some((value, expires)) = slot.ticket {
                    if now >= expires {
                        slot.ticket = None;
                        self.tickets.remove(&value);
                        self.stats.tickets_expired += 1;
                        lost = true;
                    } else {
                        earliest(expires);
                    }
                }
            }
            let deadline = match &session.phase {
                Phase::Granted if lost => {
                    ended.push((*id, End::Error(ErrorCode::PEER_TIMEOUT, "")));
                    continue;
                }
                Phase::Granted => continue,
                Phase::Waiting { deadline, .. } => {
                    if lost || now >= *deadline {
                        let end = End::Error(ErrorCode::PEER_TIMEOUT, "peer did not join");
                        ended.push((*id, end));
                        continue;
                    }
                    *deadline
                }
                Phase::Relaying { last_activity } => {
                    let deadline = *last_activity + self.config.idle_timeout;
                    if now >= deadline {
                        ended.push((*id, End::Error(ErrorCode::IDLE, "session idle")));
                        continue;
                    }
                    deadline
                }
            };
            earliest(deadline);
        }
        for (id, end) in ended {
            self.end_session(id, end);
        }
        self.next_check = next;
    }

    /// The switchboard is shutting down: every connection gets `ERROR 503` and is closed, and
    /// every ticket is forgotten.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        let pending: Vec<SbConnId> = self.pending.drain().map(|(conn, _)| conn).collect();
        for conn in pending {
            self.send(conn, Frame::error(ErrorCode::SHUTDOWN, "shutting down"));
            self.out.push_back(Output::Close(conn));
        }
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in sessions {
            self.end_session(id, End::Error(ErrorCode::SHUTDOWN, "shutting down"));
        }
        self.tickets.clear();
        self.next_check = None;
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if anything is waiting. May be
    /// earlier than strictly needed (O(1)), never later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }

    /// The counters so far.
    pub fn stats(&self) -> &SwitchboardStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &SwitchboardConfig {
        &self.config
    }

    /// Sessions that have a ticket or a connection.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Connections the core knows (joined or waiting to join).
    pub fn connection_count(&self) -> usize {
        self.pending.len() + self.joined.len()
    }

    /// Unredeemed tickets.
    pub fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    fn bucket(&self) -> TokenBucket {
        TokenBucket::new(self.config.rate, self.config.burst)
    }

    fn check_by(&mut self, deadline: Instant) {
        self.next_check = Some(self.next_check.map_or(deadline, |t| t.min(deadline)));
    }

    fn send(&mut self, conn: SbConnId, frame: Frame) {
        self.out.push_back(Output::Send { conn, frame });
    }

    fn refuse(&mut self, conn: SbConnId, code: ErrorCode, text: &str) {
        self.stats.joins_refused += 1;
        self.send(conn, Frame::error(code, text));
        self.out.push_back(Output::Close(conn));
    }

    fn on_bad_frame(&mut self, conn: SbConnId, code: ErrorCode, text: &'static str) {
        self.stats.bad_frames += 1;
        if self.pending.remove(&conn).is_some() {
            self.send(conn, Frame::error(code, text));
            self.out.push_back(Output::Close(conn));
        } else if let Some(&(session, side)) = self.joined.get(&conn) {
            let end = End::Left {
                side,
                notice: Some(Frame::error(code, text)),
                gone: false,
            };
            self.end_session(session, end);
        }
    }

    fn on_join(
        &mut self,
        now: Instant,
        conn: SbConnId,
        version: u8,
        sid: SessionId,
        ticket: [u8; 16],
    ) {
        self.pending.remove(&conn);
        if version != VERSION {
            self.refuse(conn, ErrorCode::BAD_VERSION, "unsupported version");
            return;
        }
        // Consumed on first presentation, whatever happens next.
        let Some(owner) = self.tickets.remove(&ticket) else {
            self.refuse(conn, ErrorCode::TICKET_REFUSED, "ticket refused");
            return;
        };
        let Some(session) = self.sessions.get_mut(&owner) else {
            self.refuse(conn, ErrorCode::TICKET_REFUSED, "ticket refused");
            return;
        };
        let Some(side) = session
            .slots
            .iter()
            .position(|s| s.ticket.is_some_and(|(v, _)| v == ticket))
        else {
            self.refuse(conn, ErrorCode::TICKET_REFUSED, "ticket refused");
            return;
        };
        let expires = session.slots[side].ticket.take().map(|(_, e)| e);
        if owner != sid || expires.is_none_or(|e| now >= e) {
            self.refuse(conn, ErrorCode::TICKET_REFUSED, "ticket refused");
            // That user can no longer join: the session can never relay.
            self.end_session(
                owner,
                End::Error(ErrorCode::PEER_TIMEOUT, "peer cannot join"),
            );
            return;
        }
        session.slots[side].conn = Some(conn);
        self.joined.insert(conn, (sid, side));
        self.stats.joins += 1;
        match std::mem::replace(&mut session.phase, Phase::Granted) {
            Phase::Granted => {
                let deadline = now + self.config.peer_wait_timeout;
                session.phase = Phase::Waiting {
                    deadline,
                    early: VecDeque::new(),
                    early_len: 0,
                };
                self.send(
                    conn,
                    Frame::Joined {
                        peer_present: false,
                    },
                );
                self.check_by(deadline);
            }
            Phase::Waiting { early, .. } => {
                session.phase = Phase::Relaying { last_activity: now };
                let other = session.slots[1 - side].conn;
                self.stats.sessions_started += 1;
                self.send(conn, Frame::Joined { peer_present: true });
                for payload in early {
                    self.stats.relayed_frames += 1;
                    self.stats.relayed_bytes += payload.len() as u64;
                    self.send(conn, Frame::Data(payload));
                }
                if let Some(other) = other {
                    self.send(other, Frame::PeerJoined);
                }
                self.check_by(now + self.config.idle_timeout);
            }
            Phase::Relaying { .. } => {
                // Unreachable: a session has two slots and each joins with its one ticket.
                self.end_session(sid, End::Error(ErrorCode::UNEXPECTED, "session full"));
            }
        }
    }

    fn on_data(&mut self, now: Instant, sid: SessionId, side: usize, payload: Bytes) {
        let len = payload.len();
        if len > self.config.max_data {
            let conn = self.sessions.get(&sid).and_then(|s| s.slots[side].conn);
            if let Some(conn) = conn {
                self.on_bad_frame(conn, ErrorCode::TOO_LARGE, "too large");
            }
            return;
        }
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if session.relayed + len as u64 > self.config.byte_cap {
            self.end_session(sid, End::Error(ErrorCode::BYTE_CAP, "byte cap reached"));
            return;
        }
        match &mut session.phase {
            Phase::Relaying { last_activity } => {
                if !session.buckets[side].take(len, now) {
                    self.stats.rate_dropped += 1;
                    return;
                }
                *last_activity = now;
                session.relayed += len as u64;
                if let Some(to) = session.slots[1 - side].conn {
                    self.stats.relayed_frames += 1;
                    self.stats.relayed_bytes += len as u64;
                    self.out.push_back(Output::Send {
                        conn: to,
                        frame: Frame::Data(payload),
                    });
                }
            }
            Phase::Waiting {
                early, early_len, ..
            } => {
                if *early_len + len > self.config.early_buffer {
                    self.stats.early_dropped += 1;
                    return;
                }
                if !session.buckets[side].take(len, now) {
                    self.stats.rate_dropped += 1;
                    return;
                }
                *early_len += len;
                session.relayed += len as u64;
                early.push_back(payload);
            }
            Phase::Granted => {}
        }
    }

    /// Ends a session: notifies and closes its connections and forgets its tickets.
    fn end_session(&mut self, sid: SessionId, end: End) {
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        if session.slots.iter().any(|s| s.conn.is_some()) {
            self.stats.sessions_ended += 1;
            match end {
                End::Error(ErrorCode::IDLE, _) => self.stats.idle_timeouts += 1,
                End::Error(ErrorCode::PEER_TIMEOUT, _) => self.stats.peer_timeouts += 1,
                End::Error(ErrorCode::BYTE_CAP, _) => self.stats.byte_cap_reached += 1,
                _ => {}
            }
        }
        for (side, slot) in session.slots.into_iter().enumerate() {
            if let Some((value, _)) = slot.ticket {
                self.tickets.remove(&value);
            }
            let Some(conn) = slot.conn else { continue };
            self.joined.remove(&conn);
            let (notice, close) = match &end {
                End::Left {
                    side: left,
                    notice,
                    gone,
                } if *left == side => (notice.clone(), !*gone),
                End::Left { .. } => (Some(Frame::PeerLeft), true),
                End::Error(code, text) => (Some(Frame::error(*code, text)), true),
            };
            if let Some(frame) = notice {
                self.send(conn, frame);
            }
            if close {
                self.out.push_back(Output::Close(conn));
            }
        }
    }
}
