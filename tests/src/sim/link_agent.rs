//! The link core ([`shared::link::LinkCore`]) as a simulator agent: one peer's endpoint
//! socket and extra sockets on a simulated host, its relay connection and rendezvous
//! connection through a shared [`LinkWorld`], and a log of what the link reported.
//!
//! The agent is a driver like `p2p_client::link::driver`, without I/O: it drains the core in
//! its order (transmits, commands, events), executes the commands against the network and
//! the world, and feeds their answers back.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use shared::SocketIndex;
use shared::link::{
    Destination, LinkCommand, LinkCore, LinkCoreEvent, LinkEnd, LinkFailure, PathChange, PathKind,
};
use shared::rendezvous::SessionId;
use shared::rendezvous::telemetry::Report;

use super::link_world::{LinkWorld, WorldInput};
use super::{Agent, Datagram};

/// What one peer's link reported, and when.
#[derive(Clone, Debug, Default)]
pub struct LinkLog {
    /// Path changes.
    pub paths: Vec<(Instant, PathChange)>,
    /// Application messages received, in order.
    pub messages: Vec<Vec<u8>>,
    /// Numbers of our messages the peer acknowledged, in order.
    pub delivered: Vec<u64>,
    /// Every other event (not messages, deliveries or paths).
    pub events: Vec<(Instant, LinkCoreEvent)>,
    /// When the session was established.
    pub established: Option<Instant>,
    /// How the link ended and what [`LinkCore::close`] returned.
    pub ended: Option<(Instant, LinkEnd, Result<(), LinkFailure>)>,
    /// UDP datagrams sent.
    pub udp_sent: u64,
    /// Relay frames sent.
    pub relay_sent: u64,
    /// Outcome reports ([`LinkCommand::Report`]), with the introduction they are about.
    pub reports: Vec<(Instant, SessionId, Report)>,
}

impl LinkLog {
    /// The path in use after the last change.
    pub fn path(&self) -> Option<PathKind> {
        self.paths.last().map(|(_, c)| c.kind)
    }

    /// Whether some event matches.
    pub fn saw(&self, f: impl Fn(&LinkCoreEvent) -> bool) -> bool {
        self.events.iter().any(|(_, e)| f(e))
    }
}

/// One peer: a link core on a simulated host, driven like the client's driver does.
pub struct LinkAgent {
    core: LinkCore,
    ip: IpAddr,
    base_port: u16,
    /// Extra sockets opened (`1..=extra`).
    extra: u16,
    /// The extra socket kept after punching (the others are closed).
    kept: Option<SocketIndex>,
    world: Rc<RefCell<LinkWorld>>,
    slot: usize,
    /// What happened.
    pub log: LinkLog,
}

impl LinkAgent {
    /// A peer whose endpoint socket is `endpoint`, in slot `slot` of `world`.
    pub fn new(
        core: LinkCore,
        endpoint: SocketAddr,
        world: Rc<RefCell<LinkWorld>>,
        slot: usize,
    ) -> Self {
        Self {
            core,
            ip: endpoint.ip(),
            base_port: endpoint.port(),
            extra: 0,
            kept: None,
            world,
            slot,
            log: LinkLog::default(),
        }
    }

    /// The core, for its state.
    pub fn core(&self) -> &LinkCore {
        &self.core
    }

    /// The application sends message `number`.
    pub fn send(&mut self, now: Instant, number: u64, bytes: Vec<u8>) {
        self.core.send_message(now, number, bytes);
    }

    /// The application sends nothing more.
    pub fn finish(&mut self, now: Instant) {
        self.core.finish(now);
    }

    /// The rendezvous connection is lost (`false`) or logged in again (`true`).
    pub fn set_rendezvous(&mut self, now: Instant, up: bool) {
        if up {
            self.core.handle_rendezvous_back(now);
        } else {
            self.core.handle_rendezvous_lost(now);
        }
    }

    fn local(&self, socket: SocketIndex) -> SocketAddr {
        SocketAddr::new(self.ip, self.base_port + socket.0)
    }

    fn on_command(&mut self, now: Instant, command: LinkCommand) {
        let mut world = self.world.borrow_mut();
        match command {
            LinkCommand::OpenSockets(n) => {
                drop(world);
                // Opening sockets always works here.
                self.extra = n;
                self.core.handle_sockets_opened(now, n);
            }
            LinkCommand::CloseExtraSockets { keep } => self.kept = Some(keep),
            LinkCommand::SendPrimed(sid) => world.primed(now, self.slot, sid),
            LinkCommand::JoinRelay(sid) => world.join_relay(now, self.slot, sid),
            LinkCommand::Invite { srflx } => world.invite(now, self.slot, srflx),
            LinkCommand::Answer { sid, srflx } => world.answer(now, self.slot, sid, srflx),
            LinkCommand::Report { sid, report } => self.log.reports.push((now, sid, report)),
            other => panic!("a command the simulator does not know: {other:?}"),
        }
    }

    fn on_event(&mut self, now: Instant, event: LinkCoreEvent) {
        match event {
            LinkCoreEvent::Message(bytes) => self.log.messages.push(bytes),
            LinkCoreEvent::Delivered(number) => self.log.delivered.push(number),
            LinkCoreEvent::Path(change) => self.log.paths.push((now, change)),
            LinkCoreEvent::Established => self.log.established = Some(now),
            LinkCoreEvent::Ended(end) => {
                let outcome = self.core.close(now);
                self.log.ended = Some((now, end.clone(), outcome));
                self.log.events.push((now, LinkCoreEvent::Ended(end)));
            }
            other => self.log.events.push((now, other)),
        }
    }

    fn deliver(&mut self, now: Instant, input: WorldInput) {
        let core = &mut self.core;
        match input {
            WorldInput::RelayJoined { peer_present } => core.handle_relay_joined(now, peer_present),
            WorldInput::RelayPeerJoined => core.handle_relay_peer_joined(now),
            WorldInput::RelayData(frame) => core.handle_relay_data(now, &frame),
            WorldInput::RelayClosed => core.handle_relay_closed(now, "simulated loss".into()),
            WorldInput::Primed(sid) => core.handle_rendezvous_primed(now, sid),
            WorldInput::Ring(sid) => core.handle_rendezvous_ring(now, sid),
            WorldInput::InviteResult(sid) => core.handle_invite_result(now, sid),
            WorldInput::AnswerResult(ok) => core.handle_answer_result(now, ok),
            WorldInput::Introduced(intro) => core.handle_rendezvous_introduced(now, &intro),
        }
    }
}

impl Agent for LinkAgent {
    fn owns(&self, addr: SocketAddr) -> bool {
        if addr.ip() != self.ip || addr.port() < self.base_port {
            return false;
        }
        let index = addr.port() - self.base_port;
        match self.kept {
            Some(keep) => index == 0 || index == keep.0,
            None => index <= self.extra,
        }
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        let socket = SocketIndex(d.dst.port() - self.base_port);
        self.core.handle_datagram(now, socket, d.src, &d.payload);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        // The core's order: transmits, then commands, then events.
        loop {
            if let Some(t) = self.core.poll_transmit(now) {
                match t.destination {
                    Destination::Udp {
                        socket,
                        remote,
                        ttl,
                    } => {
                        self.log.udp_sent += 1;
                        return Some(Datagram {
                            ttl: ttl.unwrap_or(64),
                            ..Datagram::new(self.local(socket), remote, t.data)
                        });
                    }
                    Destination::Relay => {
                        self.log.relay_sent += 1;
                        self.world.borrow_mut().relay_send(now, self.slot, t.data);
                        continue;
                    }
                }
            }
            if let Some(command) = self.core.poll_command() {
                self.on_command(now, command);
                continue;
            }
            if let Some(event) = self.core.poll_event() {
                self.on_event(now, event);
                continue;
            }
            return None;
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let world = self.world.borrow().next_for(self.slot);
        self.core.poll_timeout().into_iter().chain(world).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due = self.world.borrow_mut().take_due(self.slot, now);
        for input in due {
            self.deliver(now, input);
        }
        self.core.handle_timeout(now);
    }
}
