//! Introduced sessions and the `PRM` relay between their two peers (docs/PROTOCOL.md section 8).
//!
//! After `ITR` the server remembers which two users a session id belongs to, so that each peer
//! can tell the other through the server that it has primed its NAT. The hole-punching core
//! waits for that before it sends full probes: a peer's probe that reaches a NAT before that
//! NAT's own host has sent to the peer creates a conntrack entry that takes the port, and the
//! host's later packets then leave from another port (the conntrack race).
//! Memory is bounded three ways: a session is forgotten after `session_lifetime` (10 minutes), a
//! user keeps at most `max_sessions_per_user` (16; the oldest goes first), and logging out
//! forgets every session of the user.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::conn::params;
use super::directory::UserId;
use super::intro::parse_sid;
use super::{ConnId, Handled, INVALID_PARAMETER, RendezvousServer, SessionId, USER_OFFLINE};
use crate::rendezvous::wire::{Line, TrId};

/// One introduced session.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// The initiator and the responder.
    peers: [UserId; 2],
    /// After this, `PRM` for it is refused.
    expires: Instant,
}

/// Introduced sessions and their indexes.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    sessions: HashMap<SessionId, Session>,
    /// Each user's sessions, oldest first (only users with at least one).
    by_user: HashMap<UserId, VecDeque<SessionId>>,
    /// Expiry times in creation order (the lifetime is constant); entries may be stale.
    expiries: VecDeque<(Instant, SessionId)>,
}

impl Sessions {
    /// Remembers `sid` between `peers` until `expires`; each peer keeps at most `max_per_user`
    /// sessions (the oldest are forgotten).
    fn insert(
        &mut self,
        sid: SessionId,
        peers: [UserId; 2],
        expires: Instant,
        max_per_user: usize,
    ) {
        if max_per_user == 0 {
            return;
        }
        self.remove(sid);
        self.sessions.insert(sid, Session { peers, expires });
        self.expiries.push_back((expires, sid));
        for user in peers {
            let list = self.by_user.entry(user).or_default();
            list.push_back(sid);
            let excess = list.len().saturating_sub(max_per_user);
            let dropped: Vec<SessionId> = list.drain(..excess).collect();
            for old in dropped {
                self.remove(old);
            }
        }
    }

    /// Forgets `sid` and its index entries.
    fn remove(&mut self, sid: SessionId) -> Option<Session> {
        let session = self.sessions.remove(&sid)?;
        for user in session.peers {
            if let Some(list) = self.by_user.get_mut(&user) {
                list.retain(|s| *s != sid);
                if list.is_empty() {
                    self.by_user.remove(&user);
                }
            }
        }
        Some(session)
    }

    /// Forgets every session `user` is in.
    fn forget_user(&mut self, user: UserId) {
        if let Some(list) = self.by_user.remove(&user) {
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

    /// The other peer of `sid` if `me` is one of its peers and it has not expired at `now`.
    fn peer_of(&self, sid: SessionId, me: UserId, now: Instant) -> Option<UserId> {
        let session = self.sessions.get(&sid).filter(|s| now < s.expires)?;
        match session.peers {
            [a, b] if a == me => Some(b),
            [a, b] if b == me => Some(a),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.sessions.len()
    }
}

impl RendezvousServer {
    /// Remembers an introduced session for `PRM`.
    pub(super) fn remember_session(&mut self, now: Instant, sid: SessionId, peers: [UserId; 2]) {
        let expires = now + self.config.session_lifetime;
        let max = self.config.max_sessions_per_user;
        self.sessions.insert(sid, peers, expires, max);
    }

    /// `user` logged out: its sessions are over.
    pub(super) fn forget_sessions_of(&mut self, user: UserId) {
        self.sessions.forget_user(user);
    }

    /// Drops sessions past their lifetime (their memory; `PRM` already refuses them).
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        self.sessions.expire(now);
    }

    /// Forgets every session (shutdown).
    pub(super) fn clear_sessions(&mut self) {
        self.sessions = Sessions::default();
    }

    /// `PRM TrID sid`: one peer of an introduced session has primed its NAT. The answer repeats
    /// it; the other peer gets `PRM 0 sid`. Anything but a live session of ours between mutual,
    /// unblocked contacts is `217`, like every refused introduction.
    pub(super) fn on_prm(
        &mut self,
        now: Instant,
        me: UserId,
        conn: ConnId,
        line: &Line,
    ) -> Handled {
        let [sid] = params(line)?;
        let sid = parse_sid(sid).ok_or(INVALID_PARAMETER)?;
        let peer = self
            .sessions
            .peer_of(sid, me, now)
            .filter(|&peer| self.dir.mutual_unblocked(me, peer))
            .ok_or(USER_OFFLINE)?;
        self.send(conn, Line::new("PRM", line.trid, [sid.to_string()]));
        if let Some(peer_conn) = self.dir.user(peer).conn {
            self.send(peer_conn, Line::new("PRM", TrId::PUSH, [sid.to_string()]));
        }
        Ok(())
    }

    /// Introduced sessions remembered for `PRM`.
    pub fn introduced_sessions(&self) -> usize {
        self.sessions.len()
    }
}
