//! The NAT classifier as a simulator agent.

use std::net::SocketAddr;
use std::time::Instant;

use shared::SocketIndex;
use shared::nat_classifier::{Classifier, ClassifierConfig, Report, socket};

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
            let socket = SocketIndex(index as u16);
            self.classifier
                .handle_datagram(now, socket, d.src, &d.payload);
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let mut buf = [0u8; 1500];
        let t = self.classifier.poll_transmit(now, &mut buf)?;
        Some(Datagram::new(
            self.locals[t.socket.index()],
            t.destination,
            buf[..t.size].to_vec(),
        ))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.classifier.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.classifier.handle_timeout(now);
    }
}
