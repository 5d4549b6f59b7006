//! The hole-punching core as a simulator agent, and the rendezvous server's relay of the
//! primed signal between two of them.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use shared::punch::wire::PACKET_LEN;
use shared::punch::{PunchConfig, PunchEvent, PunchStats, Puncher, SocketIndex, is_punch_packet};

use super::{Agent, Datagram};

/// The first byte of the test's chat datagrams (the chat module's transport kind).
pub const CHAT_KIND: u8 = 0x81;

/// The rendezvous server's relay of [`PunchEvent::Primed`]: a reliable (TCP) message that
/// reaches the other peer after a fixed delay. Shared by the two agents of a pair.
#[derive(Debug, Default)]
pub struct SignalRelay {
    /// (delivery time, destination slot).
    pending: Vec<(Instant, usize)>,
    /// Signals relayed so far.
    pub relayed: u64,
}

impl SignalRelay {
    /// A relay to share between two agents.
    pub fn shared() -> Rc<RefCell<SignalRelay>> {
        Rc::default()
    }

    fn next_for(&self, slot: usize) -> Option<Instant> {
        self.pending
            .iter()
            .filter(|(_, s)| *s == slot)
            .map(|(t, _)| *t)
            .min()
    }

    fn take_due(&mut self, slot: usize, now: Instant) -> Vec<Instant> {
        let (due, rest) = self
            .pending
            .iter()
            .partition(|(t, s)| *s == slot && *t <= now);
        self.pending = rest;
        due.into_iter().map(|(t, _)| t).collect()
    }
}

/// One peer's end of a [`SignalRelay`]: its slot (0 or 1; the peer has the other) and how
/// long a signal takes through the server.
#[derive(Clone, Debug)]
pub struct RelayEnd {
    /// The relay both peers share.
    pub relay: Rc<RefCell<SignalRelay>>,
    /// This peer's slot.
    pub slot: usize,
    /// Delay of a signal from this peer to the other.
    pub delay: Duration,
}

/// What happened to one agent, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PunchLog {
    /// When it emitted `Primed`.
    pub primed_at: Option<Instant>,
    /// When and on which path it connected.
    pub connected: Option<(Instant, SocketIndex, SocketAddr)>,
    /// When it reported failure.
    pub failed_at: Option<Instant>,
    /// When it reported the path lost.
    pub path_lost_at: Option<Instant>,
    /// Extra sockets it opened.
    pub sockets_opened: u16,
    /// Datagrams it sent (all kinds).
    pub sent: u64,
    /// Datagrams sent up to the moment it connected.
    pub sent_until_connected: Option<u64>,
    /// Chat datagrams received on the connected path: (socket, from).
    pub chat_received: Vec<(SocketIndex, SocketAddr)>,
}

/// One peer: a [`Puncher`] on a host's endpoint socket `ip:base_port` and its extra sockets
/// `ip:base_port + i`.
pub struct PunchAgent {
    puncher: Puncher,
    ip: IpAddr,
    base_port: u16,
    relay: RelayEnd,
    chat_out: Vec<Datagram>,
    /// What happened.
    pub log: PunchLog,
}

impl PunchAgent {
    /// A peer whose endpoint socket is `endpoint` (extra sockets take the following ports)
    /// and whose puncher starts at `start`; its primed signal goes through `relay`.
    pub fn new(
        config: PunchConfig,
        start: Instant,
        seed: u64,
        endpoint: SocketAddr,
        relay: RelayEnd,
    ) -> Self {
        let puncher = Puncher::new(config, start, seed).expect("valid punch config");
        Self {
            puncher,
            ip: endpoint.ip(),
            base_port: endpoint.port(),
            relay,
            chat_out: Vec::new(),
            log: PunchLog::default(),
        }
    }

    /// The puncher, for its strategy, path and counters.
    pub fn puncher(&self) -> &Puncher {
        &self.puncher
    }

    /// The puncher's counters.
    pub fn stats(&self) -> PunchStats {
        self.puncher.stats()
    }

    /// The local address of a socket.
    pub fn local(&self, socket: SocketIndex) -> SocketAddr {
        SocketAddr::new(self.ip, self.base_port + socket.0)
    }

    /// Sends a chat datagram over the connected path (as the chat layer would); false if not
    /// connected.
    pub fn send_chat(&mut self) -> bool {
        let Some((socket, remote)) = self.puncher.path() else {
            return false;
        };
        let d = Datagram::new(self.local(socket), remote, vec![CHAT_KIND, 1, 2, 3]);
        self.chat_out.push(d);
        true
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.puncher.poll_event() {
            match event {
                PunchEvent::OpenSockets(n) => {
                    // Opening sockets always works here.
                    self.log.sockets_opened = n;
                    self.puncher.handle_sockets_opened(now, n);
                }
                PunchEvent::Primed => {
                    self.log.primed_at = Some(now);
                    let mut relay = self.relay.relay.borrow_mut();
                    relay
                        .pending
                        .push((now + self.relay.delay, 1 - self.relay.slot));
                    relay.relayed += 1;
                }
                PunchEvent::Connected { socket, remote } => {
                    self.log.connected = Some((now, socket, remote));
                    self.log.sent_until_connected = Some(self.log.sent);
                }
                PunchEvent::Failed => self.log.failed_at = Some(now),
                PunchEvent::PathLost => self.log.path_lost_at = Some(now),
                _ => {}
            }
        }
    }
}

impl Agent for PunchAgent {
    fn owns(&self, addr: SocketAddr) -> bool {
        addr.ip() == self.ip
            && addr.port() >= self.base_port
            && addr.port() - self.base_port <= self.log.sockets_opened
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        let socket = SocketIndex(d.dst.port() - self.base_port);
        let punch = self.puncher.handle_datagram(now, socket, d.src, &d.payload);
        if !punch && d.payload.first() == Some(&CHAT_KIND) {
            debug_assert!(!is_punch_packet(&d.payload));
            self.log.chat_received.push((socket, d.src));
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        // Transmits first, then events (docs/DESIGN.md section 8); an event's input (sockets
        // opened) may queue more transmits, which go out before the chat's.
        let mut buf = [0u8; PACKET_LEN];
        let mut next = self.puncher.poll_transmit(now, &mut buf);
        if next.is_none() {
            self.drain_events(now);
            next = self.puncher.poll_transmit(now, &mut buf);
        }
        let d = if let Some(t) = next {
            Datagram {
                ttl: t.ttl.unwrap_or(64),
                ..Datagram::new(self.local(t.socket), t.destination, buf[..t.size].to_vec())
            }
        } else {
            self.chat_out.pop()?
        };
        self.log.sent += 1;
        Some(d)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let signal = self.relay.relay.borrow().next_for(self.relay.slot);
        self.puncher.poll_timeout().into_iter().chain(signal).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due = self.relay.relay.borrow_mut().take_due(self.relay.slot, now);
        if !due.is_empty() {
            self.puncher.handle_peer_primed(now);
        }
        if self.puncher.poll_timeout().is_some_and(|t| t <= now) {
            self.puncher.handle_timeout(now);
        }
    }
}
