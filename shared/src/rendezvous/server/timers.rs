//! Timers: keepalive pings, the idle timeout, abandoned login steps and invitation timeouts
//! (docs/PROTOCOL.md sections 5, 6 and 8).
//!
//! Connections are swept at a coarse interval (at most a second, O(connections) per sweep);
//! invitations sit in a deadline-ordered queue. [`RendezvousServer::poll_timeout`] is O(1).

use std::time::{Duration, Instant};

use super::conn::ConnState;
use super::{ConnId, Line, RendezvousServer, TrId};

/// The coarsest sweep interval.
const MAX_SWEEP: Duration = Duration::from_secs(1);
/// The finest sweep interval (for tests and tiny configured timeouts).
const MIN_SWEEP: Duration = Duration::from_millis(10);

impl RendezvousServer {
    /// Runs the timers that are due: invitation timeouts (`CAN 0 sid timeout`), forgetting
    /// introduced sessions past their lifetime, and, at the
    /// sweep interval, `PNG 0` after `ping_interval` of silence, `OUT 0 TMO` and close after
    /// `idle_timeout`, and expiry of abandoned login steps.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_intros(now);
        self.expire_sessions(now);
        if self.next_sweep.is_some_and(|at| now >= at) {
            self.sweep(now);
            self.next_sweep = (!self.conns.is_empty()).then(|| now + self.sweep_interval());
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (`None`: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_sweep, self.intros.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A quarter of the shortest connection timer, between 10 ms and 1 s.
    fn sweep_interval(&self) -> Duration {
        let c = &self.config;
        (c.ping_interval
            .min(c.idle_timeout)
            .min(c.login_step_timeout)
            / 4)
        .clamp(MIN_SWEEP, MAX_SWEEP)
    }

    /// Makes sure a sweep is scheduled (a connection exists).
    pub(super) fn schedule_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.sweep_interval());
        }
    }

    fn sweep(&mut self, now: Instant) {
        let limits = self.throttle_limits();
        self.throttle.sweep(now, limits);
        let (ping, idle) = (self.config.ping_interval, self.config.idle_timeout);
        let mut to_ping: Vec<ConnId> = Vec::new();
        let mut to_close: Vec<ConnId> = Vec::new();
        for (&id, c) in &mut self.conns {
            let silence = now.saturating_duration_since(c.last_rx);
            if silence >= idle {
                to_close.push(id);
                continue;
            }
            if silence >= ping && !c.pinged && !matches!(c.state, ConnState::AwaitVersion) {
                c.pinged = true;
                to_ping.push(id);
            }
            if matches!(&c.state, ConnState::LoginStep(p) if now >= p.deadline) {
                c.state = ConnState::Anonymous;
            }
        }
        to_ping.sort_unstable();
        to_close.sort_unstable();
        for conn in to_ping {
            self.send(conn, Line::new("PNG", TrId::PUSH, []));
        }
        for conn in to_close {
            self.close(conn, Some("TMO"));
        }
    }
}
