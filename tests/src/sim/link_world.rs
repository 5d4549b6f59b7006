//! The servers a link needs, simulated for two peers: the switchboard relay (a reliable,
//! in-order pipe with latency that buffers what arrives before the peer joins) and the
//! rendezvous server's part in a running link (the primed signal, rings, invitations,
//! answers and introductions with a shared start time).
//!
//! Both are deliberately simple models of the real servers' observable behaviour, not their
//! code: they exist so the link core's decisions can be driven in virtual time. Deliveries to
//! the two peers (slots 0 and 1) are queued with their time and picked up by the
//! [`super::LinkAgent`]s' timers, in the order they were queued.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shared::link::Introduction;
use shared::punch::{Candidate, NatInfo};
use shared::rendezvous::SessionId;

/// Something the servers deliver to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorldInput {
    /// The relay connection joined its session.
    RelayJoined {
        /// Whether the peer was already there.
        peer_present: bool,
    },
    /// The peer joined our relay session.
    RelayPeerJoined,
    /// A frame from the peer through the relay.
    RelayData(Vec<u8>),
    /// The relay connection closed.
    RelayClosed,
    /// The peer's primed signal.
    Primed(SessionId),
    /// The peer rang to be introduced again.
    Ring(SessionId),
    /// Our invitation was accepted (`Some`) or refused.
    InviteResult(Option<SessionId>),
    /// Our answer was accepted or refused.
    AnswerResult(bool),
    /// An introduction to the peer.
    Introduced(Box<Introduction>),
}

/// What the rendezvous server knows of a peer (from its offers).
#[derive(Clone, Debug)]
pub struct Profile {
    /// The peer's Noise public key.
    pub key: [u8; 32],
    /// Its endpoint socket's local address (host candidate).
    pub host: SocketAddr,
    /// Its server-reflexive address as last offered.
    pub srflx: SocketAddr,
    /// Its NAT as classified.
    pub nat: NatInfo,
}

/// Counters of what the servers did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Relay joins (both peers, all sessions).
    pub relay_joins: u32,
    /// Relay frames forwarded.
    pub relay_frames: u64,
    /// Introductions made (counting one per pair).
    pub introductions: u32,
    /// Invitations received.
    pub invites: u32,
    /// Answers received.
    pub answers: u32,
}

/// The simulated switchboard and rendezvous server of one pair (see the module docs of
/// `link_world.rs`).
#[derive(Debug)]
pub struct LinkWorld {
    queue: Vec<(Instant, u64, usize, WorldInput)>,
    seq: u64,
    /// One-way latency of the relay (and of joining it).
    pub relay_delay: Duration,
    /// One-way latency of a message through the rendezvous server.
    pub signal_delay: Duration,
    /// Punching starts this long after an introduction arrives.
    pub start_offset: Duration,
    /// The switchboard's address (named in introductions).
    pub switchboard: SocketAddr,
    /// The peers as the rendezvous server knows them.
    pub profiles: [Profile; 2],
    /// Whether the rendezvous server answers invitations (off: it refuses them).
    pub introducing: bool,
    joined: [Option<SessionId>; 2],
    /// Frames for a peer that has not joined their session yet: (session, frame).
    held: [Vec<(SessionId, Vec<u8>)>; 2],
    invitation: Option<(usize, SessionId)>,
    next_sid: u8,
    /// What happened.
    pub stats: WorldStats,
}

impl LinkWorld {
    /// A world for two peers with these profiles.
    pub fn shared(profiles: [Profile; 2], switchboard: SocketAddr) -> Rc<RefCell<LinkWorld>> {
        Rc::new(RefCell::new(LinkWorld {
            queue: Vec::new(),
            seq: 0,
            relay_delay: Duration::from_millis(30),
            signal_delay: Duration::from_millis(40),
            start_offset: Duration::from_millis(250),
            switchboard,
            profiles,
            introducing: true,
            joined: [None, None],
            held: [Vec::new(), Vec::new()],
            invitation: None,
            next_sid: 100,
            stats: WorldStats::default(),
        }))
    }

    fn push(&mut self, at: Instant, slot: usize, input: WorldInput) {
        self.seq += 1;
        self.queue.push((at, self.seq, slot, input));
    }

    /// When the next delivery to `slot` is due.
    pub fn next_for(&self, slot: usize) -> Option<Instant> {
        self.queue.iter().filter(|q| q.2 == slot).map(|q| q.0).min()
    }

    /// The deliveries to `slot` due at `now`, in order.
    pub fn take_due(&mut self, slot: usize, now: Instant) -> Vec<WorldInput> {
        let mut due: Vec<_> = Vec::new();
        let mut rest = Vec::new();
        for q in self.queue.drain(..) {
            if q.2 == slot && q.0 <= now {
                due.push(q);
            } else {
                rest.push(q);
            }
        }
        self.queue = rest;
        due.sort_by_key(|q| (q.0, q.1));
        due.into_iter().map(|q| q.3).collect()
    }

    /// The introduction `slot` gets for session `sid`, arriving at `at`.
    pub fn introduction(&self, slot: usize, sid: SessionId, at: Instant) -> Introduction {
        let peer = &self.profiles[1 - slot];
        Introduction {
            sid,
            initiator: slot == 0,
            peer_key: peer.key,
            candidates: vec![Candidate::host(peer.host), Candidate::srflx(peer.srflx)],
            peer_nat: peer.nat,
            start: at + self.start_offset,
            relay: Some(self.switchboard),
        }
    }

    // ----- the switchboard -----

    /// `slot` connects to the switchboard session `sid` (leaving any earlier one).
    pub fn join_relay(&mut self, now: Instant, slot: usize, sid: SessionId) {
        self.stats.relay_joins += 1;
        self.joined[slot] = Some(sid);
        let at = now + self.relay_delay;
        let peer_present = self.joined[1 - slot] == Some(sid);
        self.push(at, slot, WorldInput::RelayJoined { peer_present });
        if peer_present {
            self.push(at, 1 - slot, WorldInput::RelayPeerJoined);
        }
        let held = std::mem::take(&mut self.held[slot]);
        for (s, frame) in held {
            if s == sid {
                self.stats.relay_frames += 1;
                self.push(at, slot, WorldInput::RelayData(frame));
            }
        }
    }

    /// `slot` sends a frame on its relay connection.
    pub fn relay_send(&mut self, now: Instant, slot: usize, frame: Vec<u8>) {
        let Some(sid) = self.joined[slot] else {
            return;
        };
        if self.joined[1 - slot] == Some(sid) {
            self.stats.relay_frames += 1;
            self.push(
                now + self.relay_delay,
                1 - slot,
                WorldInput::RelayData(frame),
            );
        } else {
            self.held[1 - slot].push((sid, frame));
        }
    }

    /// The relay connections of both peers break now (frames in flight are lost).
    pub fn close_relay(&mut self, now: Instant) {
        self.queue
            .retain(|q| !matches!(q.3, WorldInput::RelayData(_) | WorldInput::RelayPeerJoined));
        self.joined = [None, None];
        self.held = [Vec::new(), Vec::new()];
        for slot in 0..2 {
            self.push(now, slot, WorldInput::RelayClosed);
        }
    }

    // ----- the rendezvous server -----

    /// `slot` relays its primed signal for `sid`.
    pub fn primed(&mut self, now: Instant, slot: usize, sid: SessionId) {
        self.push(now + self.signal_delay, 1 - slot, WorldInput::Primed(sid));
    }

    /// `slot` invites the peer again (`INV`), offering `srflx` if it learnt one. An invitation
    /// of the peer's that is still open is paired with it at once.
    pub fn invite(&mut self, now: Instant, slot: usize, srflx: Option<SocketAddr>) {
        self.stats.invites += 1;
        if let Some(addr) = srflx {
            self.profiles[slot].srflx = addr;
        }
        let at = now + self.signal_delay;
        if !self.introducing {
            self.push(at, slot, WorldInput::InviteResult(None));
            return;
        }
        match self.invitation {
            Some((other, sid)) if other != slot => {
                self.push(at, slot, WorldInput::InviteResult(Some(sid)));
                self.introduce(now, sid);
            }
            _ => {
                let sid = SessionId([self.next_sid; 16]);
                self.next_sid = self.next_sid.wrapping_add(1);
                self.invitation = Some((slot, sid));
                self.push(at, slot, WorldInput::InviteResult(Some(sid)));
                self.push(at, 1 - slot, WorldInput::Ring(sid));
            }
        }
    }

    /// `slot` answers ring `sid` (`ANS`).
    pub fn answer(&mut self, now: Instant, slot: usize, sid: SessionId, srflx: Option<SocketAddr>) {
        self.stats.answers += 1;
        if let Some(addr) = srflx {
            self.profiles[slot].srflx = addr;
        }
        let ok = self.introducing && self.invitation == Some((1 - slot, sid));
        self.push(now + self.signal_delay, slot, WorldInput::AnswerResult(ok));
        if ok {
            self.introduce(now, sid);
        }
    }

    fn introduce(&mut self, now: Instant, sid: SessionId) {
        self.stats.introductions += 1;
        self.invitation = None;
        let at = now + self.signal_delay;
        for slot in 0..2 {
            let intro = self.introduction(slot, sid, at);
            self.push(at, slot, WorldInput::Introduced(Box::new(intro)));
        }
    }
}
