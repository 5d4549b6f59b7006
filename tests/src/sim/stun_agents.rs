//! The STUN server core and Binding transactions as simulator agents.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use shared::SocketIndex;
use shared::stun_client::BindingTransaction;
use shared::stun_server::{Received, ServerConfig, ServerSocket, StunServer, Transport};

use super::{Agent, Datagram};

/// How a simulated server treats CHANGE-REQUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerBehaviour {
    /// Correctly: replies leave from the socket the core names.
    Correct,
    /// A broken server that advertises an alternate address but always answers from the
    /// socket a request came in on: what naive classifiers read as a full cone.
    AnswersFromReceivingSocket,
    /// A broken server that silently drops requests it would have to answer from elsewhere:
    /// what naive classifiers read as a strict filter.
    DropsChangeRequests,
}

/// The two-address STUN server core on its four simulated sockets.
pub struct StunServerAgent {
    core: StunServer,
    behaviour: ServerBehaviour,
    queue: VecDeque<Datagram>,
}

impl StunServerAgent {
    /// A correct server with this configuration (its addresses must belong to a simulated
    /// host).
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        Self::with_behaviour(config, ServerBehaviour::Correct, now)
    }

    /// A server that treats CHANGE-REQUEST as `behaviour` says.
    pub fn with_behaviour(config: ServerConfig, behaviour: ServerBehaviour, now: Instant) -> Self {
        let core = StunServer::new(config, 7, now).expect("valid simulated server config");
        Self {
            core,
            behaviour,
            queue: VecDeque::new(),
        }
    }

    /// The core, for its counters.
    pub fn core(&self) -> &StunServer {
        &self.core
    }

    fn socket_of(&self, addr: SocketAddr) -> Option<ServerSocket> {
        ServerSocket::ALL
            .into_iter()
            .find(|s| self.core.config().address_of(*s) == Some(addr))
    }
}

impl Agent for StunServerAgent {
    fn owns(&self, addr: SocketAddr) -> bool {
        self.socket_of(addr).is_some()
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        let Some(local) = self.socket_of(d.dst) else {
            return;
        };
        let mut out = vec![0u8; d.payload.len() + shared::stun_server::MAX_RESPONSE_OVERHEAD];
        let received = Received {
            local,
            transport: Transport::Udp,
            from: d.src,
            data: &d.payload,
        };
        let Some(t) = self.core.handle_datagram(now, received, &mut out) else {
            return;
        };
        let Some(answer_from) = ServerSocket::from_socket_index(t.socket) else {
            return;
        };
        let from = match self.behaviour {
            ServerBehaviour::Correct => answer_from,
            ServerBehaviour::AnswersFromReceivingSocket => local,
            ServerBehaviour::DropsChangeRequests if answer_from != local => return,
            ServerBehaviour::DropsChangeRequests => answer_from,
        };
        if let Some(src) = self.core.config().address_of(from) {
            out.truncate(t.size);
            self.queue.push_back(Datagram::new(src, t.destination, out));
        }
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Datagram> {
        self.queue.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, _now: Instant) {}
}

/// Binding transactions, each on its own client socket: the virtual-time driver of
/// [`BindingTransaction`].
///
/// The client's own driver (`p2p_client::binding::StunBinding`) runs on tokio sockets and the
/// wall clock, so the simulator drives the core itself, in the one order of docs/DESIGN.md
/// section 8: after every input [`Simulation::run_until`](super::Simulation::run_until) takes
/// `poll_transmit` until `None` (the transaction has no events: `outcome()` is its result),
/// then sleeps until the earliest `poll_timeout`, and `handle_timeout` goes to the
/// transactions that are due. Retransmission and the give-up stay the transaction's.
#[derive(Default)]
pub struct BindingClient {
    /// (local socket address, transaction).
    pub transactions: Vec<(SocketAddr, BindingTransaction)>,
}

impl BindingClient {
    /// Whether every transaction has ended.
    pub fn finished(&self) -> bool {
        self.transactions.iter().all(|(_, t)| t.outcome().is_some())
    }
}

impl Agent for BindingClient {
    fn owns(&self, addr: SocketAddr) -> bool {
        self.transactions.iter().any(|(local, _)| *local == addr)
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        for (local, t) in &mut self.transactions {
            if *local == d.dst && t.handle_datagram(now, SocketIndex::ENDPOINT, d.src, &d.payload) {
                return;
            }
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let mut buf = [0u8; 1500];
        for (local, t) in &mut self.transactions {
            if let Some(t) = t.poll_transmit(now, &mut buf) {
                return Some(Datagram::new(*local, t.destination, buf[..t.size].to_vec()));
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .iter()
            .filter_map(|(_, t)| t.poll_timeout())
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        for (_, t) in &mut self.transactions {
            if t.poll_timeout().is_some_and(|due| due <= now) {
                t.handle_timeout(now);
            }
        }
    }
}
