//! When and how to punch again after a direct path died, as a small state machine with no I/O.
//!
//! A direct path can die under a running chat: the NAT forgets its mapping (it expired, the
//! router rebooted) and hands out a new public port or address, or the laptop moves to another
//! network. The chat falls back to the relay at once ([`super::path`]); this machine then gets
//! a new direct path while the same chat session goes on over the relay:
//!
//! 1. *Gather*: learn our current server-reflexive address with a STUN Binding from the
//!    endpoint socket (the old one may be stale), so the offer names the address the peer can
//!    reach now.
//! 2. *Introduce*: ask the rendezvous server for a new introduction to the same peer: `INV`
//!    with the fresh offer, or `ANS` when the peer asked first (its `RNG` arrived). If both
//!    sides invite at once the server pairs the two invitations (docs/PROTOCOL.md section 8),
//!    so both sides may start on their own and still get one introduction.
//! 3. *Punch*: the new `ITR` gives a new session id and a new shared start time; the link core
//!    runs a fresh puncher on it. When it connects, the chat moves back to direct.
//!
//! An attempt starts when the direct path has been down (suspect or lost) and its back-off
//! delay has passed; the delays grow with each failed attempt ([`RepunchConfig::backoff`]) so
//! a pair whose NATs stopped allowing a direct path costs a few packets a minute, not a storm.
//! A ring from the peer starts an attempt at once: the peer has already waited its own delay.
//! A direct path that comes back by itself (or a new one confirmed) resets the count.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rendezvous::SessionId;

/// Timers of re-punching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepunchConfig {
    /// The wait before attempt `n` after the direct path went down (the last entry repeats).
    /// Default: 0 s, 2 s, 5 s, 15 s, 30 s, then every 60 s.
    pub backoff: Vec<Duration>,
    /// How long to wait for the introduction after `INV`/`ANS` (default 10 s; a later one is
    /// still used).
    pub intro_timeout: Duration,
}

impl Default for RepunchConfig {
    fn default() -> Self {
        RepunchConfig {
            backoff: [0, 2, 5, 15, 30, 60]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            intro_timeout: Duration::from_secs(10),
        }
    }
}

/// What the link core should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepunchAction {
    /// Learn our server-reflexive address, then call [`Repunch::handle_gathered`].
    Gather,
    /// Invite the peer with the fresh offer, then call [`Repunch::handle_invited`] (or
    /// [`Repunch::handle_request_failed`]).
    Invite,
    /// Answer the peer's ring `sid` with the fresh offer (or
    /// [`Repunch::handle_request_failed`]).
    Answer(SessionId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing to do: the direct path is fine, or there never was one.
    Idle,
    /// An attempt starts at this time.
    Due(Instant),
    /// Learning our address; `ring` is the peer's invitation to answer afterwards.
    Gathering { ring: Option<SessionId> },
    /// `INV` or `ANS` sent; waiting for the introduction. `ours` is our invitation's sid once
    /// the server named it.
    Introducing {
        ours: Option<SessionId>,
        deadline: Instant,
    },
    /// A new puncher runs.
    Punching,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct Repunch {
    config: RepunchConfig,
    state: State,
    /// Attempts since the direct path was last up.
    attempts: u32,
    actions: VecDeque<RepunchAction>,
}

impl Repunch {
    /// A machine with nothing to do yet.
    pub fn new(config: RepunchConfig) -> Repunch {
        Repunch {
            config,
            state: State::Idle,
            attempts: 0,
            actions: VecDeque::new(),
        }
    }

    /// Attempts started since the direct path was last up.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether an attempt is under way (gathering, introducing or punching).
    pub fn in_progress(&self) -> bool {
        matches!(
            self.state,
            State::Gathering { .. } | State::Introducing { .. } | State::Punching
        )
    }

    /// The direct path is down (suspect or lost). Called as often as the caller likes: only
    /// the first call after the path was last up (or after a failed attempt) schedules one.
    pub fn handle_direct_down(&mut self, now: Instant) {
        if self.state == State::Idle {
            let last = self.config.backoff.len().saturating_sub(1);
            let i = usize::try_from(self.attempts).map_or(last, |a| a.min(last));
            let delay = self.config.backoff.get(i).copied().unwrap_or_default();
            self.state = State::Due(now + delay);
        }
    }

    /// The direct path carries packets again: a scheduled attempt is off and the back-off
    /// starts over. An attempt under way runs to its end (it is cheap and harmless).
    pub fn handle_direct_up(&mut self) {
        if matches!(self.state, State::Idle | State::Due(_)) {
            self.state = State::Idle;
            self.attempts = 0;
        }
    }

    /// The peer rang (`RNG`) to be introduced again. Unless our own invitation is already
    /// out (the server then pairs the two), we answer it, after learning our address.
    pub fn handle_ring(&mut self, sid: SessionId) {
        match self.state {
            State::Introducing { .. } => {}
            State::Gathering { .. } => self.state = State::Gathering { ring: Some(sid) },
            State::Idle | State::Due(_) | State::Punching => self.start(Some(sid)),
        }
    }

    /// The relay must be joined again (the switchboard connection was lost, and the rendezvous
    /// connection is back): an attempt starts at once unless one is under way. The new
    /// introduction brings a fresh ticket.
    pub fn handle_rejoin(&mut self) {
        if matches!(self.state, State::Idle | State::Due(_)) {
            self.start(None);
        }
    }

    /// Advances time: a due attempt starts; an introduction that did not come counts as a
    /// failed attempt.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Due(at) if now >= at => self.start(None),
            State::Introducing { deadline, .. } if now >= deadline => self.state = State::Idle,
            _ => {}
        }
    }

    /// Our address is known (or could not be learnt; the last one is then offered the last one).
    pub fn handle_gathered(&mut self, now: Instant) {
        if let State::Gathering { ring } = self.state {
            self.actions.push_back(match ring {
                Some(sid) => RepunchAction::Answer(sid),
                None => RepunchAction::Invite,
            });
            self.state = State::Introducing {
                ours: None,
                deadline: now + self.config.intro_timeout,
            };
        }
    }

    /// The server accepted our invitation as `sid`.
    pub fn handle_invited(&mut self, sid: SessionId) {
        if let State::Introducing { ours, .. } = &mut self.state {
            *ours = Some(sid);
        }
    }

    /// `INV` or `ANS` was refused (the peer went offline, its ring expired): the attempt
    /// failed.
    pub fn handle_request_failed(&mut self) {
        if matches!(self.state, State::Introducing { .. }) {
            self.state = State::Idle;
        }
    }

    /// The server cancelled invitation `sid` (`CAN`): if it was ours, the attempt failed.
    pub fn handle_cancelled(&mut self, sid: SessionId) {
        if let State::Introducing {
            ours: Some(ours), ..
        } = self.state
            && ours == sid
        {
            self.state = State::Idle;
        }
    }

    /// The server introduced us to the peer again: the link core starts a new puncher.
    pub fn handle_introduced(&mut self) {
        self.state = State::Punching;
    }

    /// The puncher of the attempt ended: with a direct path (`connected`) or without one.
    pub fn handle_punch_ended(&mut self, connected: bool) {
        if connected {
            self.state = State::Idle;
            self.attempts = 0;
        } else if self.state == State::Punching {
            self.state = State::Idle;
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<RepunchAction> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Due(at) => Some(at),
            State::Introducing { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    fn start(&mut self, ring: Option<SessionId>) {
        self.attempts = self.attempts.saturating_add(1);
        self.state = State::Gathering { ring };
        self.actions.push_back(RepunchAction::Gather);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn actions(r: &mut Repunch) -> Vec<RepunchAction> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    #[test]
    fn a_lost_path_is_punched_again_at_once_by_invitation() {
        let t0 = Instant::now();
        let mut r = Repunch::new(RepunchConfig::default());
        assert_eq!(r.poll_timeout(), None);
        r.handle_direct_down(t0);
        assert_eq!(r.poll_timeout(), Some(t0));
        r.handle_timeout(t0);
        assert_eq!(actions(&mut r), [RepunchAction::Gather]);
        assert!(r.in_progress());
        r.handle_gathered(t0);
        assert_eq!(actions(&mut r), [RepunchAction::Invite]);
        r.handle_invited(SessionId([1; 16]));
        r.handle_introduced();
        r.handle_punch_ended(true);
        assert!(!r.in_progress());
        assert_eq!(r.attempts(), 0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn failed_attempts_back_off_and_a_path_that_comes_back_resets_them() {
        let t0 = Instant::now();
        let config = RepunchConfig::default();
        let mut r = Repunch::new(config.clone());
        let mut now = t0;
        for n in 0..8 {
            r.handle_direct_down(now);
            let wait = config.backoff[n.min(config.backoff.len() - 1)];
            assert_eq!(r.poll_timeout(), Some(now + wait), "attempt {n}");
            // Repeated calls while down do not move the attempt.
            r.handle_direct_down(now + secs(1));
            assert_eq!(r.poll_timeout(), Some(now + wait));
            now += wait;
            r.handle_timeout(now);
            assert_eq!(actions(&mut r), [RepunchAction::Gather]);
            r.handle_gathered(now);
            assert_eq!(actions(&mut r), [RepunchAction::Invite]);
            r.handle_introduced();
            r.handle_punch_ended(false);
            assert_eq!(r.attempts(), u32::try_from(n).unwrap() + 1);
        }
        r.handle_direct_down(now);
        assert_eq!(
            r.poll_timeout(),
            Some(now + secs(60)),
            "the last delay repeats"
        );
        r.handle_direct_up();
        assert_eq!(r.poll_timeout(), None, "the scheduled attempt is off");
        assert_eq!(r.attempts(), 0);
        r.handle_direct_down(now);
        assert_eq!(r.poll_timeout(), Some(now), "and the back-off starts over");
    }

    #[test]
    fn the_peers_ring_is_answered_at_once() {
        let t0 = Instant::now();
        let mut r = Repunch::new(RepunchConfig::default());
        let sid = SessionId([7; 16]);
        // Even while our own attempt is only scheduled.
        r.handle_direct_down(t0);
        r.handle_timeout(t0);
        r.handle_gathered(t0);
        r.handle_introduced();
        r.handle_punch_ended(false);
        r.handle_direct_down(t0);
        assert_eq!(r.poll_timeout(), Some(t0 + secs(2)));
        actions(&mut r);
        r.handle_ring(sid);
        assert_eq!(actions(&mut r), [RepunchAction::Gather]);
        r.handle_gathered(t0);
        assert_eq!(actions(&mut r), [RepunchAction::Answer(sid)]);
    }

    #[test]
    fn a_ring_while_gathering_turns_our_invitation_into_an_answer() {
        let t0 = Instant::now();
        let mut r = Repunch::new(RepunchConfig::default());
        r.handle_direct_down(t0);
        r.handle_timeout(t0);
        assert_eq!(actions(&mut r), [RepunchAction::Gather]);
        let sid = SessionId([3; 16]);
        r.handle_ring(sid);
        assert_eq!(actions(&mut r), [], "already gathering");
        r.handle_gathered(t0);
        assert_eq!(actions(&mut r), [RepunchAction::Answer(sid)]);
    }

    #[test]
    fn a_ring_after_our_invitation_is_left_to_the_server_to_pair() {
        let t0 = Instant::now();
        let mut r = Repunch::new(RepunchConfig::default());
        r.handle_direct_down(t0);
        r.handle_timeout(t0);
        r.handle_gathered(t0);
        actions(&mut r);
        r.handle_ring(SessionId([4; 16]));
        assert_eq!(actions(&mut r), []);
        assert!(r.in_progress());
    }

    #[test]
    fn no_introduction_a_cancel_or_a_refusal_ends_the_attempt() {
        let t0 = Instant::now();
        let config = RepunchConfig::default();
        let mut r = Repunch::new(config.clone());
        let start = |r: &mut Repunch, now: Instant| {
            r.handle_direct_down(now);
            let at = r.poll_timeout().unwrap();
            r.handle_timeout(at);
            r.handle_gathered(at);
            actions(r);
            at
        };
        // No introduction in time.
        let at = start(&mut r, t0);
        assert_eq!(r.poll_timeout(), Some(at + config.intro_timeout));
        r.handle_timeout(at + config.intro_timeout);
        assert!(!r.in_progress());
        // Our invitation cancelled; someone else's cancel does not count.
        let at = start(&mut r, at + config.intro_timeout);
        r.handle_invited(SessionId([5; 16]));
        r.handle_cancelled(SessionId([6; 16]));
        assert!(r.in_progress());
        r.handle_cancelled(SessionId([5; 16]));
        assert!(!r.in_progress());
        // Refused.
        start(&mut r, at);
        r.handle_request_failed();
        assert!(!r.in_progress());
        assert_eq!(r.attempts(), 3);
    }

    #[test]
    fn an_introduction_that_comes_late_is_still_punched() {
        let t0 = Instant::now();
        let mut r = Repunch::new(RepunchConfig::default());
        r.handle_direct_down(t0);
        r.handle_timeout(t0);
        r.handle_gathered(t0);
        r.handle_timeout(t0 + secs(11));
        assert!(!r.in_progress());
        r.handle_introduced();
        assert!(r.in_progress());
        r.handle_punch_ended(true);
        assert_eq!(r.attempts(), 0);
    }
}
