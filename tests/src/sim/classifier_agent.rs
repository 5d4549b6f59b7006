//! The NAT classifier as a simulator agent, and a server that ignores CHANGE-REQUEST.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use shared::nat_classifier::{Classifier, ClassifierConfig, Report, socket};
use shared::stun_server::{Received, ServerConfig, ServerSocket, StunServer, Transport};

use super::{Agent, Datagram};

/// The classifier on [`socket::COUNT`] sockets of one simulated host.
pub struct ClassifierAgent {
    classifier: Classifier,
    locals: [SocketAddr; socket::COUNT],
    started: Instant,
}

impl ClassifierAgent {
    /// A classifier whose sockets are `ip:base_port`, `ip:base_port+1`, ...
    pub fn new(
        config: ClassifierConfig,
        ip: std::net::IpAddr,
        base_port: u16,
        seed: u64,
        now: Instant,
    ) -> Self {
        let locals = std::array::from_fn(|i| SocketAddr::new(ip, base_port + i as u16));
        Self {
            classifier: Classifier::new(config, locals, seed, now),
            locals,
            started: now,
        }
    }

    /// The report, when done.
    pub fn report(&self) -> Option<&Report> {
        self.classifier.report()
    }

    /// When the classification started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Agent for ClassifierAgent {
    fn owns(&self, addr: SocketAddr) -> bool {
        self.locals.contains(&addr)
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        if let Some(index) = self.locals.iter().position(|l| *l == d.dst) {
            self.classifier.handle_input(now, index, d.src, &d.payload);
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let mut buf = [0u8; 1500];
        let t = self.classifier.poll_transmit(now, &mut buf)?;
        Some(Datagram::new(
            self.locals[t.socket],
            t.to,
            buf[..t.len].to_vec(),
        ))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.classifier.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.classifier.handle_timeout(now);
    }
}

/// A broken server: it advertises an alternate address but always answers from the socket a
/// request arrived on, whatever CHANGE-REQUEST asked, or (with `drop_changes`) silently drops
/// requests it cannot honour this way. What naive classifiers read as a full cone.
pub struct ChangeIgnoringServer {
    core: StunServer,
    drop_changes: bool,
    queue: VecDeque<Datagram>,
}

impl ChangeIgnoringServer {
    /// The broken server with this configuration.
    pub fn new(config: ServerConfig, drop_changes: bool, now: Instant) -> Self {
        let core = StunServer::new(config, 3, now).expect("valid config");
        Self {
            core,
            drop_changes,
            queue: VecDeque::new(),
        }
    }

    fn socket_of(&self, addr: SocketAddr) -> Option<ServerSocket> {
        ServerSocket::ALL
            .into_iter()
            .find(|s| self.core.config().address_of(*s) == Some(addr))
    }
}

impl Agent for ChangeIgnoringServer {
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
        if let Some(t) = self.core.handle_datagram(now, received, &mut out) {
            if t.from != local && self.drop_changes {
                return;
            }
            out.truncate(t.len);
            // The bug: reply from where the request came in, not from `t.from`.
            self.queue.push_back(Datagram::new(d.dst, t.to, out));
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
