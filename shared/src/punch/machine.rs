//! The hole-punching state machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::rng::SplitMix64;
use crate::transmit::Transmit;

use super::wire::{Packet, PacketKind, is_punch_packet};
use super::{CandidateKind, PunchConfig, PunchError, SocketIndex, Strategy};

/// Most probe nonces remembered for matching acks (oldest forgotten first).
const MAX_NONCES: usize = 16_384;
/// Most targets: candidates, predictions and extra sockets, plus peer-reflexive addresses
/// learned from probes up to this bound (probes from further addresses are still acked).
const MAX_TARGETS: usize = 2_048;

/// A datagram queued for [`Puncher::poll_transmit`]: its header and its payload.
#[derive(Clone, Debug)]
struct Queued {
    transmit: Transmit,
    data: Vec<u8>,
}

/// Something the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PunchEvent {
    /// Open this many extra UDP sockets (any local port, same interface as the endpoint
    /// socket), number them 1..=n in order, and report with
    /// [`Puncher::handle_sockets_opened`] how many were opened. Comes right after
    /// [`Puncher::new`] and only for [`Strategy::BirthdayListen`].
    OpenSockets(u16),
    /// Our NAT is primed: relay this to the peer through the rendezvous server, which hands
    /// it to the peer's [`Puncher::handle_peer_primed`].
    Primed,
    /// A path works in both directions: an ack to our probe came back. Use `socket` (close
    /// any other extra sockets) and send to `remote` (the address the ack came from). The
    /// puncher keeps answering probes on it and sends keepalives.
    Connected {
        /// The socket that received the ack.
        socket: SocketIndex,
        /// The peer's address as seen from that socket.
        remote: SocketAddr,
    },
    /// No path was confirmed within the bounded rounds: use the relay. Final.
    Failed,
    /// The connected path went silent for `path_timeout`: fall back to the relay, and punch
    /// again with a new puncher if wanted. Final.
    PathLost,
}

/// Counters of what a puncher sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// TTL-limited priming probes.
    pub primes: u64,
    /// Full probes to candidates, predicted ports and peer-reflexive addresses.
    pub probes: u64,
    /// Birthday probes to random ports.
    pub random_probes: u64,
    /// Keepalive probes after connecting.
    pub keepalives: u64,
    /// Acks sent.
    pub acks: u64,
    /// Valid punch packets received (right session, the peer's role).
    pub received: u64,
}

impl PunchStats {
    /// Every datagram sent.
    pub fn sent(&self) -> u64 {
        self.primes + self.probes + self.random_probes + self.keepalives + self.acks
    }
}

/// One address we prime and probe, from one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    socket: SocketIndex,
    addr: SocketAddr,
    /// Gets TTL-limited priming probes.
    prime: bool,
    /// Gets full probes in every round.
    full: bool,
}

/// The confirmed path.
#[derive(Clone, Copy, Debug)]
struct Path {
    socket: SocketIndex,
    remote: SocketAddr,
    last_rx: Instant,
    next_keepalive: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Before the start, waiting for extra sockets, or sending priming rounds from `base`.
    Priming { base: Option<Instant>, round: u8 },
    /// Primed; waiting for the peer's primed signal since `since`.
    AwaitPeer { since: Instant },
    /// Full probes.
    Probing,
    /// A path is confirmed.
    Connected(Path),
    /// Failed or path lost.
    Done,
}

/// A path confirmed over IPv4, held back for a while in case one over IPv6 answers too
/// ([`super::PunchConfig::ipv6_wait`]).
#[derive(Clone, Copy, Debug)]
struct Held {
    socket: SocketIndex,
    remote: SocketAddr,
    until: Instant,
}

/// Progress of the probing phase.
#[derive(Clone, Debug, Default)]
struct Probing {
    started: Option<Instant>,
    rounds_sent: u32,
    next_round: Option<Instant>,
    last_round: Option<Instant>,
    random_sent: u32,
    random_used: HashSet<u16>,
    /// An IPv4 path waiting for an IPv6 one.
    held: Option<Held>,
}

/// UDP hole punching for one introduction: a sans-IO state machine (see the module docs for
/// how to drive it).
#[derive(Debug)]
pub struct Puncher {
    config: PunchConfig,
    strategy: Strategy,
    start: Instant,
    rng: SplitMix64,
    targets: Vec<Target>,
    phase: Phase,
    /// Extra sockets the driver confirmed (`None` until it answers `OpenSockets`).
    extra_sockets: Option<u16>,
    peer_primed: bool,
    probing: Probing,
    nonces: HashMap<u64, SocketIndex>,
    nonce_order: VecDeque<u64>,
    transmits: VecDeque<Queued>,
    events: VecDeque<PunchEvent>,
    stats: PunchStats,
}

impl Puncher {
    /// A puncher for this introduction that starts probing at `start` (the receipt of `ITR`
    /// plus its `start=` delay). `seed` drives nonces and random ports; it need not be secret.
    pub fn new(config: PunchConfig, start: Instant, seed: u64) -> Result<Self, PunchError> {
        config.validate()?;
        let strategy = Strategy::choose(&config.local, &config.peer.nat);
        let mut puncher = Self {
            strategy,
            start,
            rng: SplitMix64::new(seed),
            targets: Vec::new(),
            phase: Phase::Priming {
                base: None,
                round: 0,
            },
            extra_sockets: None,
            peer_primed: false,
            probing: Probing::default(),
            nonces: HashMap::new(),
            nonce_order: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: PunchStats::default(),
            config,
        };
        puncher.initial_targets();
        if strategy == Strategy::BirthdayListen && puncher.config.birthday_sockets > 0 {
            let n = puncher.config.birthday_sockets;
            puncher.events.push_back(PunchEvent::OpenSockets(n));
        } else {
            puncher.extra_sockets = Some(0);
        }
        Ok(puncher)
    }

    fn initial_targets(&mut self) {
        let mut candidates: Vec<_> = self.config.usable_candidates().copied().collect();
        // IPv6 first (preferred, RFC 8421; its packets cross no NAT of ours, so they change
        // nothing below). Then a port mapping (it lets anyone in), then server-reflexive:
        // behind a sequential symmetric NAT, our first new mapping then goes towards the
        // peer's public address, the port the peer predicts first.
        candidates.sort_by_key(|c| (c.addr.is_ipv4(), c.kind.priority()));
        let listen = self.strategy == Strategy::BirthdayListen;
        for c in &candidates {
            let srflx = c.kind == CandidateKind::ServerReflexive;
            self.add_target(SocketIndex::ENDPOINT, c.addr, true, !(listen && srflx));
        }
        if let Strategy::Predict { step } = self.strategy {
            for c in candidates
                .iter()
                .filter(|c| c.kind == CandidateKind::ServerReflexive)
            {
                for k in 1..=i64::from(self.config.predicted_ports) {
                    let port = i64::from(c.addr.port()) + k * i64::from(step);
                    if let Ok(port @ 1..) = u16::try_from(port) {
                        let addr = SocketAddr::new(c.addr.ip(), port);
                        self.add_target(SocketIndex::ENDPOINT, addr, true, true);
                    }
                }
            }
        }
    }

    fn add_target(&mut self, socket: SocketIndex, addr: SocketAddr, prime: bool, full: bool) {
        if let Some(t) = self
            .targets
            .iter_mut()
            .find(|t| t.socket == socket && t.addr == addr)
        {
            t.prime |= prime;
            t.full |= full;
        } else if self.targets.len() < MAX_TARGETS {
            self.targets.push(Target {
                socket,
                addr,
                prime,
                full,
            });
        }
    }

    /// The strategy chosen from the two NAT classifications.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// What was sent and received so far.
    pub fn stats(&self) -> PunchStats {
        self.stats
    }

    /// The confirmed path (socket, peer address), while connected.
    pub fn path(&self) -> Option<(SocketIndex, SocketAddr)> {
        match self.phase {
            Phase::Connected(p) => Some((p.socket, p.remote)),
            _ => None,
        }
    }

    /// Whether the puncher has ended ([`PunchEvent::Failed`] or [`PunchEvent::PathLost`]).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The driver opened `count` of the extra sockets [`PunchEvent::OpenSockets`] asked for
    /// (fewer if it hit a limit; 0 if none). They are numbered `1..=count`.
    pub fn handle_sockets_opened(&mut self, now: Instant, count: u16) {
        if self.extra_sockets.is_some() {
            return;
        }
        let count = count.min(self.config.birthday_sockets);
        self.extra_sockets = Some(count);
        let public: Vec<SocketAddr> = self
            .config
            .peer
            .candidates
            .iter()
            .filter(|c| c.kind == CandidateKind::ServerReflexive)
            .map(|c| c.addr)
            .collect();
        for i in 1..=count {
            for &addr in &public {
                self.add_target(SocketIndex(i), addr, true, false);
            }
        }
        self.advance(now);
    }

    /// The rendezvous server relayed the peer's [`PunchEvent::Primed`].
    pub fn handle_peer_primed(&mut self, now: Instant) {
        self.peer_primed = true;
        self.advance(now);
    }

    /// A datagram arrived on `socket` from `from`. Returns whether it was a punch packet
    /// (probe or ack, by [`is_punch_packet`]); other packets belong to the chat layer, but
    /// those from the connected peer still count as signs of life for the path.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketIndex,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        if !is_punch_packet(data) {
            if let Phase::Connected(p) = &mut self.phase
                && p.socket == socket
                && p.remote == from
            {
                p.last_rx = now;
            }
            return false;
        }
        let Ok(packet) = Packet::decode(data) else {
            return true;
        };
        // The session id authenticates the packet against off-path senders; our own role
        // means it is one of our own probes reflected back (a hairpin, a loop).
        if packet.session != self.config.session || packet.role == self.config.role {
            return true;
        }
        if matches!(self.phase, Phase::Done) {
            return true;
        }
        self.stats.received += 1;
        if let Phase::Connected(p) = &mut self.phase
            && p.socket == socket
        {
            p.last_rx = now;
        }
        match packet.kind {
            PacketKind::Probe => self.on_probe(socket, from, packet.nonce),
            PacketKind::Ack => self.on_ack(now, socket, from, packet.nonce),
        }
        self.advance(now);
        true
    }

    fn on_probe(&mut self, socket: SocketIndex, from: SocketAddr, nonce: u64) {
        // The ack goes back to where the probe came from: it passed our NAT, so the answer
        // leaves through the same mapping.
        let data = self.packet(PacketKind::Ack, nonce);
        self.queue(socket, from, None, data);
        self.stats.acks += 1;
        // A peer sends full probes only after priming its own NAT.
        self.peer_primed = true;
        let known = self
            .targets
            .iter()
            .any(|t| t.socket == socket && t.addr == from && t.full);
        if !known {
            // A peer-reflexive address: probe it too (at once if probing already).
            self.add_target(socket, from, false, true);
            if matches!(self.phase, Phase::Probing) {
                self.send_probe(socket, from);
                self.stats.probes += 1;
            }
        }
    }

    fn on_ack(&mut self, now: Instant, socket: SocketIndex, from: SocketAddr, nonce: u64) {
        if self.nonces.get(&nonce) != Some(&socket) {
            return;
        }
        if matches!(self.phase, Phase::Connected(_) | Phase::Done) {
            return;
        }
        if from.is_ipv4() && self.probes_ipv6() {
            // IPv6 is preferred: give it a moment to answer as well.
            if self.probing.held.is_none() {
                self.probing.held = Some(Held {
                    socket,
                    remote: from,
                    until: now + self.config.ipv6_wait,
                });
            }
            return;
        }
        self.connect(now, socket, from);
    }

    /// Whether an IPv4 path should wait for an IPv6 one: we probe IPv6 targets and wait at
    /// all.
    fn probes_ipv6(&self) -> bool {
        !self.config.ipv6_wait.is_zero() && self.targets.iter().any(|t| t.full && t.addr.is_ipv6())
    }

    /// The path from `socket` to `from` is the one: connected.
    fn connect(&mut self, now: Instant, socket: SocketIndex, from: SocketAddr) {
        self.probing.held = None;
        let next_keepalive = self.config.keepalive_interval.map(|k| now + k);
        self.phase = Phase::Connected(Path {
            socket,
            remote: from,
            last_rx: now,
            next_keepalive,
        });
        self.events.push_back(PunchEvent::Connected {
            socket,
            remote: from,
        });
    }

    /// Time has reached (at least) [`Puncher::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next datagram to send, if any, written into `buf` (which must hold
    /// [`PACKET_LEN`](super::wire::PACKET_LEN) bytes; a datagram that does not fit is dropped).
    /// Drain it after every `handle_*` call, before [`Puncher::poll_event`]. Only the
    /// `handle_*` calls queue datagrams (a scheduled send waits for
    /// [`Puncher::handle_timeout`]); `now` is taken for symmetry with the other cores.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let _ = now;
        while let Some(Queued { transmit, data }) = self.transmits.pop_front() {
            if let Some(out) = buf.get_mut(..data.len()) {
                out.copy_from_slice(&data);
                return Some(transmit);
            }
        }
        None
    }

    /// The next event, if any. Drain it after every `handle_*` call, after the transmits.
    pub fn poll_event(&mut self) -> Option<PunchEvent> {
        self.events.pop_front()
    }

    /// When [`Puncher::handle_timeout`] is next due; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = self.phase_timeout();
        match (phase, self.held_until()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn phase_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Priming { base, round } => Some(match (base, self.extra_sockets) {
                (Some(base), _) => base + self.config.prime_spacing * u32::from(round),
                (None, None) => self.start + self.config.peer_primed_timeout,
                (None, Some(_)) => self.start,
            }),
            Phase::AwaitPeer { since } => Some(since + self.config.peer_primed_timeout),
            Phase::Probing => {
                let c = &self.config;
                let p = &self.probing;
                let round = (p.rounds_sent < c.probe_rounds)
                    .then_some(p.next_round)
                    .flatten();
                let random = (!self.random_exhausted())
                    .then(|| p.started.map(|s| s + self.random_offset(p.random_sent)))
                    .flatten();
                round.into_iter().chain(random).min().or(self.fail_at())
            }
            Phase::Connected(p) => {
                let lost = p.last_rx + self.config.path_timeout;
                Some(p.next_keepalive.map_or(lost, |k| k.min(lost)))
            }
            Phase::Done => None,
        }
    }

    /// When an IPv4 path held back for IPv6 stops waiting.
    fn held_until(&self) -> Option<Instant> {
        self.probing.held.map(|h| h.until)
    }

    /// When the `n`th birthday probe is due, from the start of probing.
    fn random_offset(&self, n: u32) -> Duration {
        Duration::from_secs(u64::from(n)) / self.config.birthday_rate
    }

    fn random_exhausted(&self) -> bool {
        self.strategy != Strategy::BirthdayProbe
            || self.probing.random_sent >= self.config.birthday_probes
            || self.peer_public_ip().is_none()
    }

    /// When probing is over and we report failure.
    fn fail_at(&self) -> Option<Instant> {
        let p = &self.probing;
        if p.rounds_sent < self.config.probe_rounds || !self.random_exhausted() {
            return None;
        }
        let last_random = (self.strategy == Strategy::BirthdayProbe)
            .then(|| p.started.map(|s| s + self.random_offset(p.random_sent)))
            .flatten();
        let last = p.last_round.into_iter().chain(last_random).max()?;
        Some(last + self.config.final_wait)
    }

    fn peer_public_ip(&self) -> Option<std::net::IpAddr> {
        let c = &self.config.peer.candidates;
        c.iter()
            .find(|c| c.kind == CandidateKind::ServerReflexive)
            .or_else(|| c.iter().find(|c| c.addr.is_ipv4()))
            .or(c.first())
            .map(|c| c.addr.ip())
    }

    /// Runs every transition and send that is due at `now`.
    fn advance(&mut self, now: Instant) {
        if let Some(held) = self.probing.held
            && now >= held.until
            && !matches!(self.phase, Phase::Connected(_) | Phase::Done)
        {
            // No IPv6 path in time: the IPv4 one it is.
            self.connect(now, held.socket, held.remote);
        }
        loop {
            let before = std::mem::discriminant(&self.phase);
            match self.phase {
                Phase::Priming { base, round } => self.advance_priming(now, base, round),
                Phase::AwaitPeer { since } => {
                    let waited = now >= since + self.config.peer_primed_timeout;
                    if self.peer_primed || !self.config.wait_for_peer_primed || waited {
                        self.begin_probing(now);
                    }
                }
                Phase::Probing => self.advance_probing(now),
                Phase::Connected(_) => self.advance_connected(now),
                Phase::Done => {}
            }
            if std::mem::discriminant(&self.phase) == before {
                return;
            }
        }
    }

    fn advance_priming(&mut self, now: Instant, base: Option<Instant>, mut round: u8) {
        if now < self.start {
            return;
        }
        let base = match base {
            Some(b) => b,
            None => {
                // The birthday listener primes from every extra socket: wait (boundedly) for
                // the driver to open them.
                let timeout = self.start + self.config.peer_primed_timeout;
                if self.extra_sockets.is_none() && now < timeout {
                    return;
                }
                now
            }
        };
        let prime = self.config.prime && !self.config.local.is_open();
        let rounds = if prime { self.config.prime_count } else { 0 };
        while round < rounds && now >= base + self.config.prime_spacing * u32::from(round) {
            let targets: Vec<Target> = self.targets.iter().copied().filter(|t| t.prime).collect();
            for t in targets {
                let nonce = self.nonce(t.socket);
                let data = self.packet(PacketKind::Probe, nonce);
                self.queue(t.socket, t.addr, Some(self.config.prime_ttl), data);
                self.stats.primes += 1;
            }
            round += 1;
        }
        if round >= rounds {
            self.events.push_back(PunchEvent::Primed);
            self.phase = Phase::AwaitPeer { since: now };
        } else {
            self.phase = Phase::Priming {
                base: Some(base),
                round,
            };
        }
    }

    fn begin_probing(&mut self, now: Instant) {
        self.phase = Phase::Probing;
        self.probing.started = Some(now);
        self.probing.next_round = Some(now);
        // Random probes skip the ports the rounds probe anyway.
        if let Some(ip) = self.peer_public_ip() {
            let known = self.targets.iter().filter(|t| t.addr.ip() == ip);
            self.probing
                .random_used
                .extend(known.map(|t| t.addr.port()));
        }
    }

    fn advance_probing(&mut self, now: Instant) {
        let interval = self.config.probe_interval;
        if self.probing.rounds_sent < self.config.probe_rounds
            && let Some(due) = self.probing.next_round
            && now >= due
        {
            let targets: Vec<Target> = self.targets.iter().copied().filter(|t| t.full).collect();
            for t in targets {
                self.send_probe(t.socket, t.addr);
                self.stats.probes += 1;
            }
            self.probing.rounds_sent += 1;
            self.probing.last_round = Some(now);
            // A late wake-up sends one round, not a burst of missed ones.
            let next = due + interval;
            self.probing.next_round = Some(if next <= now { now + interval } else { next });
        }
        if let (Strategy::BirthdayProbe, Some(started), Some(ip)) =
            (self.strategy, self.probing.started, self.peer_public_ip())
        {
            let range = self.config.birthday_ports.clone();
            let span = u64::from(*range.end() - *range.start()) + 1;
            while self.probing.random_sent < self.config.birthday_probes
                && now >= started + self.random_offset(self.probing.random_sent)
            {
                if self.probing.random_used.len() as u64 >= span {
                    // Every port of the range is taken (only with a tiny configured range).
                    self.probing.random_sent = self.config.birthday_probes;
                    break;
                }
                let port = loop {
                    let draw = (u128::from(self.rng.next_u64()) * u128::from(span)) >> 64;
                    let port = *range.start() + draw as u16;
                    if self.probing.random_used.insert(port) {
                        break port;
                    }
                };
                self.send_probe(SocketIndex::ENDPOINT, SocketAddr::new(ip, port));
                self.probing.random_sent += 1;
                self.stats.random_probes += 1;
            }
        }
        if self.fail_at().is_some_and(|at| now >= at) {
            match self.probing.held {
                // Probing is over: no IPv6 path is coming.
                Some(held) => self.connect(now, held.socket, held.remote),
                None => {
                    self.phase = Phase::Done;
                    self.events.push_back(PunchEvent::Failed);
                }
            }
        }
    }

    fn advance_connected(&mut self, now: Instant) {
        let Phase::Connected(mut path) = self.phase else {
            return;
        };
        if now >= path.last_rx + self.config.path_timeout {
            self.phase = Phase::Done;
            self.events.push_back(PunchEvent::PathLost);
            return;
        }
        if let (Some(due), Some(every)) = (path.next_keepalive, self.config.keepalive_interval)
            && now >= due
        {
            self.send_probe(path.socket, path.remote);
            self.stats.keepalives += 1;
            path.next_keepalive = Some(now + every);
            self.phase = Phase::Connected(path);
        }
    }

    fn send_probe(&mut self, socket: SocketIndex, to: SocketAddr) {
        let nonce = self.nonce(socket);
        let data = self.packet(PacketKind::Probe, nonce);
        self.queue(socket, to, None, data);
    }

    /// A fresh nonce, remembered as sent from `socket`.
    fn nonce(&mut self, socket: SocketIndex) -> u64 {
        let nonce = self.rng.next_u64();
        self.nonces.insert(nonce, socket);
        self.nonce_order.push_back(nonce);
        if self.nonce_order.len() > MAX_NONCES
            && let Some(old) = self.nonce_order.pop_front()
        {
            self.nonces.remove(&old);
        }
        nonce
    }

    fn packet(&self, kind: PacketKind, nonce: u64) -> Vec<u8> {
        Packet {
            kind,
            session: self.config.session,
            role: self.config.role,
            nonce,
        }
        .encode()
    }

    fn queue(
        &mut self,
        socket: SocketIndex,
        destination: SocketAddr,
        ttl: Option<u8>,
        data: Vec<u8>,
    ) {
        let transmit = Transmit {
            destination,
            socket,
            ttl,
            size: data.len(),
        };
        self.transmits.push_back(Queued { transmit, data });
    }
}
