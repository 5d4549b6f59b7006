//! Introduced sessions and the `PRM` relay between their two peers (docs/PROTOCOL.md section 8).
//!
//! After `ITR` the server remembers which two users a session id belongs to, so that each peer
//! can tell the other through the server that it has primed its NAT. The hole-punching core
//! waits for that before it sends full probes: a peer's probe that reaches a NAT before that
//! NAT's own host has sent to the peer creates a conntrack entry that takes the port, and the
//! host's later packets then leave from another port (the conntrack race).
//! An introduced session pairs one login session (connection) on each side: `PRM` is taken only
//! from those two and goes only to the other one.
//! Memory is bounded three ways: a session is forgotten after `session_lifetime` (10 minutes), a
//! login session keeps at most `max_sessions_per_user` (16; the oldest goes first), and a login
//! session that ends forgets every introduced session it is in.
//!
//! The same two login sessions may each report the introduction's outcome once (`RPT`,
//! connectivity telemetry). The session keeps the NAT types both offers announced and the
//! reports; the introduction is counted into the aggregates ([`Telemetry`]) when both have
//! reported, or, with the one report it got, when the session is forgotten (expired, evicted,
//! or a peer logged out). Nothing of a report outlives its session but the aggregate counts.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::conn::params;
use super::directory::UserId;
use super::intro::parse_sid;
use super::{
    ALREADY_REPORTED, ConnId, Handled, INVALID_PARAMETER, RendezvousServer, SessionId, USER_OFFLINE,
};
use crate::rendezvous::offer::OfferNat;
use crate::rendezvous::telemetry::{NatPair, Report, Telemetry};
use crate::rendezvous::wire::{Line, TrId};

/// One introduced session.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// The initiator and the responder, each with its login session.
    peers: [(UserId, ConnId); 2],
    /// After this, `PRM` and `RPT` for it are refused.
    expires: Instant,
    /// The NAT types the two offers announced, in the order of `peers`.
    nats: [OfferNat; 2],
    /// Each peer's report, in the order of `peers`.
    reports: [Option<Report>; 2],
    /// Already counted into the aggregates (both reported).
    counted: bool,
}

impl Session {
    /// Counts the introduction into `telemetry` from the reports it has, unless it was.
    fn count(&mut self, telemetry: &mut Telemetry) {
        if self.counted {
            return;
        }
        self.counted = true;
        let reports: Vec<Report> = self.reports.iter().flatten().copied().collect();
        telemetry.record(NatPair::new(self.nats[0], self.nats[1]), &reports);
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReportRefusal {
    /// Not a live introduced session of this login session.
    NoSession,
    /// This side has reported already.
    Twice,
}

/// Introduced sessions and their indexes.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    sessions: HashMap<SessionId, Session>,
    /// Each login session's introduced sessions, oldest first (only those with at least one).
    by_conn: HashMap<ConnId, VecDeque<SessionId>>,
    /// Expiry times in creation order (the lifetime is constant); entries may be stale.
    expiries: VecDeque<(Instant, SessionId)>,
    /// The aggregates of every counted introduction.
    telemetry: Telemetry,
}

impl Sessions {
    /// Remembers `sid` between `peers` until `expires`; each peer's login session keeps at
    /// most `max_per_conn` sessions (the oldest are forgotten).
    fn insert(
        &mut self,
        sid: SessionId,
        peers: [(UserId, ConnId); 2],
        nats: [OfferNat; 2],
        expires: Instant,
        max_per_conn: usize,
    ) {
        if max_per_conn == 0 {
            return;
        }
        self.remove(sid);
        let session = Session {
            peers,
            expires,
            nats,
            reports: [None, None],
            counted: false,
        };
        self.sessions.insert(sid, session);
        self.expiries.push_back((expires, sid));
        for (_, conn) in peers {
            let list = self.by_conn.entry(conn).or_default();
            list.push_back(sid);
            let excess = list.len().saturating_sub(max_per_conn);
            let dropped: Vec<SessionId> = list.drain(..excess).collect();
            for old in dropped {
                self.remove(old);
            }
        }
    }

    /// Forgets `sid` and its index entries, counting its reports if it has any.
    fn remove(&mut self, sid: SessionId) -> Option<Session> {
        let mut session = self.sessions.remove(&sid)?;
        if session.reports.iter().any(Option::is_some) {
            session.count(&mut self.telemetry);
        }
        for (_, conn) in session.peers {
            if let Some(list) = self.by_conn.get_mut(&conn) {
                list.retain(|s| *s != sid);
                if list.is_empty() {
                    self.by_conn.remove(&conn);
                }
            }
        }
        Some(session)
    }

    /// Forgets every session the login session `conn` is in.
    fn forget_conn(&mut self, conn: ConnId) {
        if let Some(list) = self.by_conn.remove(&conn) {
            for sid in list {
                self.remove(sid);
            }
        }
    }

    /// Forgets sessions that expired at or before `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, sid)) = self.expiries.front() {
            if at > now {
                break;
            }
            self.expiries.pop_front();
            if self.sessions.get(&sid).is_some_and(|s| s.expires <= now) {
                self.remove(sid);
            }
        }
        if self.sessions.is_empty() {
            self.expiries.clear();
        }
    }

    /// The other peer of `sid` and its login session, if `conn` is one of its two login
    /// sessions and it has not expired at `now`.
    fn peer_of(&self, sid: SessionId, conn: ConnId, now: Instant) -> Option<(UserId, ConnId)> {
        let session = self.sessions.get(&sid).filter(|s| now < s.expires)?;
        match session.peers {
            [a, b] if a.1 == conn => Some(b),
            [a, b] if b.1 == conn => Some(a),
            _ => None,
        }
    }

    /// The two peers of `sid`, if it has not expired at `now`.
    fn peers(&self, sid: SessionId, now: Instant) -> Option<[(UserId, ConnId); 2]> {
        self.sessions
            .get(&sid)
            .filter(|s| now < s.expires)
            .map(|s| s.peers)
    }

    /// Takes `conn`'s report on `sid`; counts the introduction once both sides reported.
    pub(super) fn report(
        &mut self,
        sid: SessionId,
        conn: ConnId,
        now: Instant,
        report: Report,
    ) -> Result<(), ReportRefusal> {
        let session = self
            .sessions
            .get_mut(&sid)
            .filter(|s| now < s.expires)
            .ok_or(ReportRefusal::NoSession)?;
        let side = session
            .peers
            .iter()
            .position(|(_, c)| *c == conn)
            .ok_or(ReportRefusal::NoSession)?;
        let slot = &mut session.reports[side];
        if slot.is_some() {
            return Err(ReportRefusal::Twice);
        }
        *slot = Some(report);
        if session.reports.iter().all(Option::is_some) {
            session.count(&mut self.telemetry);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.sessions.len()
    }
}

impl RendezvousServer {
    /// Remembers an introduced session for `PRM`.
    /// `nats`: what the two offers announced, in the order of `peers`.
    pub(super) fn remember_session(
        &mut self,
        now: Instant,
        sid: SessionId,
        peers: [(UserId, ConnId); 2],
        nats: [OfferNat; 2],
    ) {
        let expires = now + self.config.session_lifetime;
        let max = self.config.max_sessions_per_user;
        self.sessions.insert(sid, peers, nats, expires, max);
    }

    /// The login session `conn` ended: the introduced sessions it is in are over.
    pub(super) fn forget_sessions_of(&mut self, conn: ConnId) {
        self.sessions.forget_conn(conn);
    }

    /// The peer of introduced session `sid` whose session is on this node, when the other is
    /// on another node.
    pub(super) fn sessions_local_peer(
        &self,
        sid: SessionId,
        now: Instant,
    ) -> Option<(UserId, ConnId)> {
        let peers = self.sessions.peers(sid, now)?;
        let remote = peers
            .iter()
            .filter(|(_, c)| self.is_remote_conn(*c))
            .count();
        (remote == 1)
            .then(|| peers.into_iter().find(|(_, c)| !self.is_remote_conn(*c)))
            .flatten()
    }

    /// Forgets one introduced session (its introduction was withdrawn).
    pub(super) fn forget_session(&mut self, sid: SessionId) {
        self.sessions.remove(sid);
    }

    /// Drops sessions past their lifetime (their memory; `PRM` already refuses them).
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        self.sessions.expire(now);
    }

    /// Forgets every session (shutdown), counting those with a report.
    pub(super) fn clear_sessions(&mut self) {
        let sids: Vec<SessionId> = self.sessions.sessions.keys().copied().collect();
        for sid in sids {
            self.sessions.remove(sid);
        }
        self.sessions.expiries.clear();
    }

    /// `PRM TrID sid`: one peer of an introduced session has primed its NAT. The answer repeats
    /// it; the other peer's introduced login session gets `PRM 0 sid`. Anything but a live
    /// session introduced to this connection, between mutual, unblocked contacts, is `217`,
    /// like every refused introduction.
    pub(super) fn on_prm(
        &mut self,
        now: Instant,
        me: UserId,
        conn: ConnId,
        line: &Line,
    ) -> Handled {
        let [sid] = params(line)?;
        let sid = parse_sid(sid).ok_or(INVALID_PARAMETER)?;
        if self.sessions.peer_of(sid, conn, now).is_none()
            && self.primed_remote(conn, sid, line.trid)
        {
            return Ok(());
        }
        let (_, peer_conn) = self
            .sessions
            .peer_of(sid, conn, now)
            .filter(|&(peer, _)| self.dir.mutual_unblocked(me, peer))
            .ok_or(USER_OFFLINE)?;
        self.send(conn, Line::new("PRM", line.trid, [sid.to_string()]));
        if self.conns.contains_key(&peer_conn) || self.is_remote_conn(peer_conn) {
            self.send(peer_conn, Line::new("PRM", TrId::PUSH, [sid.to_string()]));
        }
        Ok(())
    }

    /// `RPT TrID sid report...`: one peer of an introduced session reports its outcome
    /// (docs/PROTOCOL.md section 8, "RPT"). The answer repeats the sid; nothing is pushed.
    /// A malformed sid or report is `201`; anything but a live session introduced to this
    /// connection is `217`, like `PRM`; a second report from the same side is `220`.
    pub(super) fn on_rpt(&mut self, now: Instant, conn: ConnId, line: &Line) -> Handled {
        let (sid, rest) = line.params.split_first().ok_or(INVALID_PARAMETER)?;
        let sid = parse_sid(sid).ok_or(INVALID_PARAMETER)?;
        let report = Report::parse(rest).map_err(|_| INVALID_PARAMETER)?;
        // A session another node introduced: that node counts it.
        match self.report_remote(conn, sid, rest) {
            Some(true) => {
                self.send(conn, Line::new("RPT", line.trid, [sid.to_string()]));
                return Ok(());
            }
            Some(false) => return Err(ALREADY_REPORTED),
            None => {}
        }
        match self.sessions.report(sid, conn, now, report) {
            Ok(()) => {
                self.send(conn, Line::new("RPT", line.trid, [sid.to_string()]));
                Ok(())
            }
            Err(ReportRefusal::NoSession) => Err(USER_OFFLINE),
            Err(ReportRefusal::Twice) => Err(ALREADY_REPORTED),
        }
    }

    /// The connectivity telemetry: every introduction counted so far.
    pub fn telemetry(&self) -> &Telemetry {
        &self.sessions.telemetry
    }

    /// Introduced sessions remembered for `PRM`.
    pub fn introduced_sessions(&self) -> usize {
        self.sessions.len()
    }
}
