//! The NAT model: mapping, filtering, hairpinning, timeouts and port allocation.
//!
//! Modelled on what the Linux kernel does with the lab's nftables rules (docs/DESIGN.md section 5):
//! mappings are refreshed by traffic in either direction (conntrack does), and a mapping that
//! idles past the timeout is gone, port and permissions with it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::SimRng;
use crate::nat_types::{Filtering, Mapping, PortAllocation, RouterOptions};

/// What identifies a binding: the inside endpoint, plus the remote IP and port when the
/// mapping depends on them.
type BindingKey = (SocketAddr, Option<IpAddr>, Option<u16>);

/// One translation: inside endpoint to outside port, with who may send back.
#[derive(Clone, Debug)]
struct Binding {
    key: BindingKey,
    inside: SocketAddr,
    outside_port: u16,
    /// Remote endpoints the inside endpoint has sent to through this binding.
    permissions: Vec<SocketAddr>,
    expires: Instant,
}

/// A NAT box (or a stateful firewall, which is a NAT that keeps the inside address).
#[derive(Debug)]
pub struct Nat {
    options: RouterOptions,
    /// The router's outside address.
    pub outside_ip: IpAddr,
    bindings: Vec<Binding>,
    /// Mapping key -> index in `bindings`.
    by_key: HashMap<BindingKey, usize>,
    next_sequential: u16,
    /// Conntrack entries left by unsolicited inbound packets on a router without an inbound
    /// drop rule: (remote, outside port, expiry). An outbound flow whose reply tuple would
    /// equal one of them must take another port (docs/DESIGN.md section 5, "poisoning").
    poisoned: Vec<(SocketAddr, u16, Instant)>,
    /// Outside ports of mappings [`Nat::expire_all`] dropped: never handed out again, so a new
    /// mapping of the same inside endpoint gets another port (as after an expiry whose port
    /// was reused meanwhile).
    retired: Vec<u16>,
}

/// Ports a NAT allocates from (Linux's default ephemeral range).
const PORT_RANGE: std::ops::RangeInclusive<u16> = 32768..=60999;

impl Nat {
    /// A NAT with these options and outside address.
    pub fn new(options: RouterOptions, outside_ip: IpAddr) -> Self {
        Self {
            options,
            outside_ip,
            bindings: Vec::new(),
            by_key: HashMap::new(),
            next_sequential: 40000,
            poisoned: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &RouterOptions {
        &self.options
    }

    fn expire(&mut self, now: Instant) {
        if self.bindings.iter().all(|b| b.expires > now) {
            return;
        }
        self.bindings.retain(|b| b.expires > now);
        self.by_key.clear();
        for (i, b) in self.bindings.iter().enumerate() {
            self.by_key.insert(b.key, i);
        }
    }

    fn mapping(&self) -> Mapping {
        self.options
            .nat
            .behaviour()
            .map_or(Mapping::EndpointIndependent, |b| b.0)
    }

    fn key_for(mapping: Mapping, inside: SocketAddr, remote: Option<SocketAddr>) -> BindingKey {
        match (mapping, remote) {
            (Mapping::EndpointIndependent, _) | (_, None) => (inside, None, None),
            (Mapping::AddressDependent, Some(r)) => (inside, Some(r.ip()), None),
            (Mapping::AddressAndPortDependent, Some(r)) => (inside, Some(r.ip()), Some(r.port())),
        }
    }

    fn port_in_use(&self, port: u16, remote: SocketAddr) -> bool {
        self.bindings.iter().any(|b| b.outside_port == port)
            || self.is_poisoned(port, remote)
            || self.retired.contains(&port)
    }

    fn is_poisoned(&self, port: u16, remote: SocketAddr) -> bool {
        self.poisoned
            .iter()
            .any(|(r, p, _)| *p == port && *r == remote)
    }

    fn next_sequential_port(&mut self, step: u16) -> u16 {
        let port = self.next_sequential;
        self.next_sequential = port.wrapping_add(step.max(1));
        port
    }

    fn allocate(&mut self, inside: SocketAddr, remote: SocketAddr, rng: &mut SimRng) -> u16 {
        if !self.options.nat.translates() {
            return inside.port();
        }
        let allocation = self
            .options
            .port_allocation
            .or(self.options.nat.behaviour().map(|b| b.2))
            .unwrap_or(PortAllocation::Preserving);
        let span = u64::from(PORT_RANGE.end() - PORT_RANGE.start()) + 1;
        let random = |rng: &mut SimRng| PORT_RANGE.start() + rng.below(span) as u16;
        let mut candidate = match allocation {
            PortAllocation::Preserving => inside.port(),
            PortAllocation::Sequential { step } => self.next_sequential_port(step),
            PortAllocation::Random => random(rng),
        };
        for _ in 0..1000 {
            if !self.port_in_use(candidate, remote) {
                break;
            }
            candidate = match allocation {
                PortAllocation::Sequential { step } => self.next_sequential_port(step),
                _ => random(rng),
            };
        }
        candidate
    }

    /// An inside endpoint sends to `remote`: returns the outside source to use, creating or
    /// refreshing the binding and recording the permission.
    pub fn outbound(
        &mut self,
        now: Instant,
        inside: SocketAddr,
        remote: SocketAddr,
        rng: &mut SimRng,
    ) -> SocketAddr {
        self.expire(now);
        let mut key = Self::key_for(self.mapping(), inside, Some(remote));
        if let Some(&i) = self.by_key.get(&key) {
            let binding = &self.bindings[i];
            if !binding.permissions.contains(&remote)
                && self.is_poisoned(binding.outside_port, remote)
            {
                // The kernel cannot reuse the port towards this remote: the flow gets its own
                // port, which breaks endpoint-independent mapping for this one peer.
                key = (inside, Some(remote.ip()), Some(remote.port()));
            }
        }
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                let outside_port = self.allocate(inside, remote, rng);
                self.bindings.push(Binding {
                    key,
                    inside,
                    outside_port,
                    permissions: Vec::new(),
                    expires: now,
                });
                let i = self.bindings.len() - 1;
                self.by_key.insert(key, i);
                i
            }
        };
        let timeout = self.options.udp_timeout;
        let binding = &mut self.bindings[index];
        binding.expires = now + timeout;
        if !binding.permissions.contains(&remote) {
            binding.permissions.push(remote);
        }
        let ip = if self.options.nat.translates() {
            self.outside_ip
        } else {
            inside.ip()
        };
        SocketAddr::new(ip, binding.outside_port)
    }

    /// A datagram from `remote` arrives for outside port `port`: returns the inside endpoint
    /// to deliver to, or `None` if the filter drops it.
    pub fn inbound(
        &mut self,
        now: Instant,
        port: u16,
        remote: SocketAddr,
        inside_ip: Option<IpAddr>,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let delivered = self.inbound_filtered(now, port, remote, inside_ip);
        if delivered.is_none() && !self.options.drop_unsolicited && self.options.nat.translates() {
            let expires = now + self.options.udp_timeout;
            self.poisoned.retain(|(_, _, t)| *t > now);
            if !self.is_poisoned(port, remote) {
                self.poisoned.push((remote, port, expires));
            }
        }
        delivered
    }

    fn inbound_filtered(
        &mut self,
        now: Instant,
        port: u16,
        remote: SocketAddr,
        inside_ip: Option<IpAddr>,
    ) -> Option<SocketAddr> {
        let filtering = self.options.nat.behaviour()?.1;
        let timeout = self.options.udp_timeout;
        let translates = self.options.nat.translates();
        let binding = self
            .bindings
            .iter_mut()
            .find(|b| b.outside_port == port && (translates || Some(b.inside.ip()) == inside_ip))?;
        let allowed = match filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => {
                binding.permissions.iter().any(|p| p.ip() == remote.ip())
            }
            Filtering::AddressAndPortDependent => binding.permissions.contains(&remote),
        };
        if !allowed {
            return None;
        }
        binding.expires = now + timeout;
        Some(binding.inside)
    }

    /// A hairpinned datagram for outside port `port`: the inside endpoint it goes to. Filtering
    /// does not apply: the packet comes from the inside, as in the lab's rules (and most
    /// routers), where only traffic arriving on the outside interface is filtered.
    pub fn hairpin_target(&mut self, now: Instant, port: u16) -> Option<SocketAddr> {
        self.expire(now);
        let timeout = self.options.udp_timeout;
        let binding = self.bindings.iter_mut().find(|b| b.outside_port == port)?;
        binding.expires = now + timeout;
        Some(binding.inside)
    }

    /// How many live bindings the NAT holds.
    pub fn binding_count(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.bindings.len()
    }

    /// Forgets every binding (the lab's `conntrack -F`).
    pub fn flush(&mut self) {
        self.poisoned.clear();
        self.bindings.clear();
        self.by_key.clear();
    }

    /// Every mapping expires at once and its outside port is not used again: the peer's
    /// packets to the old ports are dropped, and the inside hosts' next packets leave from new
    /// ports (a mapping that expired under a link).
    pub fn expire_all(&mut self) {
        let ports: Vec<u16> = self.bindings.iter().map(|b| b.outside_port).collect();
        self.retired.extend(ports);
        self.flush();
    }

    /// Timeout shorthand for tests.
    pub fn udp_timeout(&self) -> Duration {
        self.options.udp_timeout
    }
}
